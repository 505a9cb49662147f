"""Path normalization and mounts (pure): decode once, reject anything ambiguous."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy.paths import Redirect, Target, decode_path, resolve, upstream_path
from hokusai_registry.policy.request import KEPT_PATH_BYTES, parse
from hokusai_registry.policy.routes import Family


@pytest.mark.parametrize(
    ("raw", "mount", "path", "family"),
    [
        (b"/mlflow/api/2.0/mlflow/runs/get", "/mlflow", "/api/2.0/mlflow/runs/get", Family.REST),
        (b"/api/mlflow/api/2.0/mlflow/runs/get", "/api/mlflow", "/api/2.0/mlflow/runs/get", Family.REST),
        (b"/api/2.0/mlflow/runs/get", "", "/api/2.0/mlflow/runs/get", Family.REST),
        (
            b"/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/a%20b",
            "/mlflow",
            "/api/2.0/mlflow-artifacts/artifacts/1/r/a b",
            Family.TRANSFER,
        ),
        (b"/mlflow/", "/mlflow", "/", Family.UI),
        (b"/", "", "/", Family.UI),
        (b"/mlflow/mlflow/api/2.0/mlflow/runs/get", "/mlflow", "/mlflow/api/2.0/mlflow/runs/get", None),
    ],
)
def test_mounts(raw: bytes, mount: str, path: str, family: Family | None) -> None:
    resolved = resolve(raw)
    if family is None:
        assert resolved is None
    else:
        assert resolved == Target(mount, path, family)


@pytest.mark.parametrize("raw", [b"/mlflow", b"/api/mlflow"])
def test_mount_without_slash_redirects(raw: bytes) -> None:
    assert resolve(raw) == Redirect(raw.decode() + "/")


@pytest.mark.parametrize(
    "raw",
    [
        b"relative",
        b"/a/../b",
        b"/a/./b",
        b"/..",
        b"/a/..",
        b"/a/%2e%2e/b",
        b"/a/%2E./b",
        b"/a/.%2e",
        b"/a%2fb",
        b"/a%2Fb",
        b"/a%5cb",
        b"/a\\b",
        b"/a%00b",
        b"/a%1fb",
        b"/a%7fb",
        b"/a%252e%252e/b",
        b"/a%25",
        b"/a%zz",
        b"/a%2",
        b"/a%",
        b"/a//b",
        b"//a",
        b"/a%c0%ae%c0%ae/b",
        b"/a%ff",
        b"/a\x00b",
        b"/a b",
        b"/a\tb",
    ],
)
def test_ambiguous_paths_are_rejected(raw: bytes) -> None:
    with pytest.raises(Refusal) as raised:
        decode_path(raw)
    assert raised.value.code == "INVALID_PARAMETER_VALUE"
    assert raised.value.http_status == 400


segment = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\%"),
    min_size=1,
    max_size=12,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(segment, min_size=1, max_size=6))
def test_decoded_once_and_re_encoded_canonically(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    encoded = quote(path, safe="/")
    assert decode_path(encoded.encode()) == path
    # What goes upstream decodes to exactly the path that was authorized.
    forwarded = upstream_path(path, "api")
    assert decode_path(forwarded.encode()) == path


@given(st.text(max_size=40))
def test_a_path_is_sent_as_quote_would_send_it(text: str) -> None:
    """upstream_path skips `quote` for paths it would leave alone: the result is quote's, always."""
    path = "/" + text
    assert upstream_path(path, "api") == quote(path, safe="/:@!$&'()*+,;=")


@given(st.binary(max_size=60))
def test_no_input_yields_a_dot_segment(raw: bytes) -> None:
    try:
        path = decode_path(b"/" + raw)
    except Refusal:
        return
    assert ".." not in path.split("/") and "." not in path.split("/")
    assert "\\" not in path and "\x00" not in path and "//" not in path


def test_translation_to_ajax_api_only_when_configured() -> None:
    assert upstream_path("/api/2.0/mlflow/runs/get", "api") == "/api/2.0/mlflow/runs/get"
    assert upstream_path("/api/2.0/mlflow/runs/get", "ajax-api") == "/ajax-api/2.0/mlflow/runs/get"
    assert upstream_path("/api/2.0/mlflow-artifacts/artifacts/x", "ajax-api") == (
        "/ajax-api/2.0/mlflow-artifacts/artifacts/x"
    )
    assert upstream_path("/ajax-api/2.0/mlflow/runs/get", "ajax-api") == "/ajax-api/2.0/mlflow/runs/get"
    assert upstream_path("/graphql", "ajax-api") == "/graphql"


def _scope(raw: bytes) -> dict[str, object]:
    return {
        "method": "GET",
        "path": raw.decode("latin-1"),
        "raw_path": raw,
        "query_string": b"",
        "headers": [],
    }


@given(
    st.sampled_from([b"/mlflow/api/2.0/mlflow/runs/get", b"/mlflow/a/../b", b"/mlflow/%2e%2e/x", b"/nowhere"])
)
def test_a_kept_route_answers_as_a_fresh_lookup_and_each_refusal_is_its_own(raw: bytes) -> None:
    """Routes of recent paths are kept (policy/request.py): asked twice, a path resolves as `resolve` does,
    and a refused path gets a new Refusal each time (refusals are amended per request)."""
    first, second = parse(_scope(raw)), parse(_scope(raw))
    try:
        expected: object = resolve(raw)
    except Refusal as refusal:
        expected = refusal
    for parsed in (first, second):
        if isinstance(expected, Refusal):
            assert isinstance(parsed.target, Refusal) and parsed.target.message == expected.message
        elif expected is None:
            assert isinstance(parsed.target, Refusal)  # not an MLflow path
        else:
            assert parsed.target == expected
    if isinstance(first.target, Refusal):
        assert first.target is not second.target
    # A path longer than what is kept is looked up every time, with the same answer.
    long = b"/mlflow/api/2.0/mlflow-artifacts/artifacts/" + b"a" * KEPT_PATH_BYTES
    assert parse(_scope(long)).target == resolve(long)
