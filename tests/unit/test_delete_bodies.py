"""A DELETE's body must be labelled JSON (pure): MLflow's auth app reads an unlabelled one's parameters
from the query, its handlers from the body."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.core.refusals import Reason
from hokusai_registry.policy.delete_bodies import labelled_json, unlabelled_delete_body

BODY = [(b"content-length", b"24")]


@pytest.mark.parametrize(
    "headers",
    [
        [*BODY, (b"content-type", b"text/plain")],
        BODY,  # no label: MLflow's handlers still parse it as JSON
        [*BODY, (b"content-type", b"application/x-www-form-urlencoded")],
        [*BODY, (b"content-type", b"text/plain"), (b"content-type", b"application/json")],
        [*BODY, (b"content-type", b"application/json"), (b"content-type", b"application/json")],
        [(b"transfer-encoding", b"chunked"), (b"content-type", b"text/json")],
    ],
)
def test_a_delete_with_an_unlabelled_body_is_refused(headers: list[tuple[bytes, bytes]]) -> None:
    refusal = unlabelled_delete_body("DELETE", headers)
    assert refusal is not None and refusal.reason is Reason.BODY_NOT_JSON
    assert "Content-Type: application/json" in str(refusal)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("DELETE", []),  # MLflow's artifact deletes send no body
        ("DELETE", [(b"content-length", b"0"), (b"content-type", b"text/plain")]),
        ("DELETE", [*BODY, (b"content-type", b"application/json")]),
        ("DELETE", [*BODY, (b"content-type", b"Application/JSON; charset=utf-8")]),
        ("POST", [*BODY, (b"content-type", b"text/plain")]),  # MLflow refuses those itself
        ("PATCH", BODY),
    ],
)
def test_other_requests_pass(method: str, headers: list[tuple[bytes, bytes]]) -> None:
    assert unlabelled_delete_body(method, headers) is None


SUBTYPES = st.sampled_from(
    ["json", "JSON", "json; charset=utf-8", "json ;x=1", "json\t", "jsonx", "vnd+json"]
)


@given(
    st.sampled_from(["application", "text", "Application", "x"]), st.one_of(SUBTYPES, st.text(max_size=20))
)
def test_what_passes_as_json_is_json_to_werkzeug(kind: str, rest: str) -> None:
    """Never looser than the parser MLflow's auth app asks (Werkzeug's `is_json`)."""
    werkzeug = pytest.importorskip("werkzeug.wrappers")
    value = f"{kind}/{rest}"
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        return
    if labelled_json([(b"content-type", encoded)]):
        assert werkzeug.Request.from_values(headers={"Content-Type": value}).is_json
