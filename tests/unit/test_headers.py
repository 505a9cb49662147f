"""Header rules between client and MLflow (pure)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.policy.headers import (
    HOP_BY_HOP,
    client_response_headers,
    is_cross_origin_write,
    rewrite_location,
    upstream_request_headers,
)

BASE = "http://mlflow.internal:5000"


def upstream(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return upstream_request_headers(
        headers, client_ip="10.1.2.3", scheme="https", key_id="KEYID0000000", mark="m1", request_id=b"rid-1"
    )


def names(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [name for name, _ in headers]


def test_credentials_hop_by_hop_and_owned_headers_are_dropped() -> None:
    sent = upstream(
        [
            (b"host", b"registry.example"),
            (b"authorization", b"Bearer hk_live_x"),
            (b"x-api-key", b"hk_live_x"),
            (b"cookie", b"a=b"),
            (b"connection", b"keep-alive, x-listed"),
            (b"x-listed", b"1"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"websocket"),
            (b"x-forwarded-for", b"6.6.6.6"),
            (b"forwarded", b"for=6.6.6.6"),
            (b"x-hokusai-key-id", b"forged"),
            (b"x-hokusai-anything", b"forged"),
            (b"origin", b"https://registry.example"),
            (b"expect", b"100-continue"),
            (b"content-type", b"application/json"),
            (b"content-length", b"12"),
            (b"x-mlflow-workspace", b"team-a"),  # the gateway's, like the identity headers
            (b"x-request-id", b"from-the-client"),
        ]
    )
    assert sent == [
        (b"content-type", b"application/json"),
        (b"content-length", b"12"),
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"registry.example"),
        (b"x-hokusai-gateway", b"m1"),
        (b"x-hokusai-key-id", b"KEYID0000000"),
        (b"x-request-id", b"rid-1"),
    ]


@given(
    st.lists(
        st.sampled_from([*sorted(HOP_BY_HOP), b"authorization", b"x-forwarded-for", b"x-hokusai-key-id"])
    )
)
def test_identity_is_set_exactly_once_whatever_the_client_sends(extra: list[bytes]) -> None:
    sent = upstream([(name, b"client value") for name in extra])
    lowered = names(sent)
    for owned in (b"x-forwarded-for", b"x-forwarded-proto", b"x-hokusai-key-id", b"x-hokusai-gateway"):
        assert lowered.count(owned) == 1
    assert b"client value" not in {value for _, value in sent}
    assert not set(lowered) & (HOP_BY_HOP | {b"authorization"})


def test_response_headers_drop_hop_by_hop_and_keep_encoding_with_length() -> None:
    out = client_response_headers(
        [
            (b"Content-Type", b"application/json"),
            (b"Content-Encoding", b"gzip"),
            (b"Content-Length", b"45"),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Keep-Alive", b"timeout=5"),
        ],
        upstream_base=BASE,
        mount="/mlflow",
    )
    assert out == [
        (b"content-type", b"application/json"),
        (b"content-encoding", b"gzip"),
        (b"content-length", b"45"),
    ]


def test_location_is_rewritten_into_the_mount() -> None:
    assert (
        rewrite_location(b"http://mlflow.internal:5000/static-files/x", BASE, "/mlflow")
        == b"/mlflow/static-files/x"
    )
    assert rewrite_location(b"/#/experiments", BASE, "/api/mlflow") == b"/api/mlflow/#/experiments"
    assert rewrite_location(b"https://elsewhere.example/x", BASE, "/mlflow") == b"https://elsewhere.example/x"
    assert rewrite_location(b"//elsewhere.example/x", BASE, "/mlflow") == b"//elsewhere.example/x"
    assert rewrite_location(b"/prefix/ajax-api/x", BASE + "/prefix", "/mlflow") == b"/mlflow/ajax-api/x"


def test_cross_origin_writes() -> None:
    def check(method: str, origin: bytes | None, public: str | None = None) -> bool:
        return is_cross_origin_write(method, origin, None, b"127.0.0.1:8000", public)

    assert not check("POST", None)  # the Python client sends no Origin
    assert not check("POST", b"http://127.0.0.1:8000")
    assert not check("GET", b"https://evil.example")
    assert check("POST", b"https://evil.example")
    assert check("DELETE", b"null")
    assert not check("PUT", b"https://registry.example", public="https://registry.example")
    assert check("PUT", b"https://registry.example.evil", public="https://registry.example")


HOST = b"127.0.0.1:8000"


def session_write(
    method: str,
    *,
    origin: bytes | None = None,
    referer: bytes | None = None,
    public: str | None = None,
    required: bool = True,
) -> bool:
    return is_cross_origin_write(method, origin, referer, HOST, public, origin_required=required)


@given(
    st.sampled_from(["GET", "HEAD", "OPTIONS"]),
    st.one_of(st.none(), st.sampled_from([b"null", b"https://evil.example", b"http://["])),
    st.one_of(st.none(), st.sampled_from([b"https://evil.example/x", b"null"])),
)
def test_reads_are_never_refused_even_from_a_session(
    method: str, origin: bytes | None, referer: bytes | None
) -> None:
    assert not session_write(method, origin=origin, referer=referer)


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_session_write_without_origin_or_referer_is_refused(method: str) -> None:
    assert session_write(method)


def test_session_write_from_this_host_passes() -> None:
    assert not session_write("POST", origin=b"http://127.0.0.1:8000")
    assert not session_write("POST", origin=b"HTTP://127.0.0.1:8000")


@pytest.mark.parametrize(
    "origin",
    [b"null", b"", b"https://evil.example", b"http://127.0.0.1:8001", b"http://127.0.0.1", b"http://["],
)
def test_session_write_from_elsewhere_is_refused(origin: bytes) -> None:
    assert session_write("POST", origin=origin)


def test_session_write_origin_wins_over_referer() -> None:
    assert session_write("POST", origin=b"https://evil.example", referer=b"http://127.0.0.1:8000/admin/keys")
    assert session_write("POST", origin=b"null", referer=b"http://127.0.0.1:8000/admin/keys")


def test_session_write_falls_back_to_the_referer() -> None:
    assert not session_write("POST", referer=b"http://127.0.0.1:8000/admin/keys?x=1")
    assert session_write("POST", referer=b"https://evil.example/admin/keys")
    assert session_write("POST", referer=b"https://127.0.0.1:8000.evil.example/")
    assert session_write("POST", referer=b"http://127.0.0.1:8000@evil.example/")
    assert session_write("POST", referer=b"/admin/keys")  # relative: no host to check
    assert session_write("POST", referer=b"")


def test_session_write_from_the_public_url_passes() -> None:
    public = "https://registry.example/base"
    assert not session_write("POST", origin=b"https://registry.example", public=public)
    assert not session_write("POST", referer=b"https://registry.example/login", public=public)
    assert session_write("POST", origin=b"https://registry.example.evil", public=public)
    assert session_write("POST", referer=b"https://evil.example/registry.example", public=public)
    assert session_write("POST", public=public)


def test_without_origin_required_a_missing_origin_still_passes() -> None:
    assert not session_write("POST", required=False)
    assert not session_write("DELETE", referer=b"https://evil.example/", required=False)
    assert session_write("POST", origin=b"https://evil.example", required=False)
    assert session_write("POST", origin=b"null", required=False)


url_like = st.one_of(
    st.binary(max_size=60),
    st.builds(
        lambda scheme, host, tail: scheme + host + tail,
        st.sampled_from([b"http://", b"https://", b"//", b"", b"HTTP://"]),
        st.sampled_from(
            [HOST, b"127.0.0.1:8000.evil", b"evil@127.0.0.1:8000", b"127.0.0.1", b"null", b"[::1]"]
        ),
        st.sampled_from([b"", b"/", b"/admin/keys", b"@evil.example/", b"?x=1", b"\\evil"]),
    ),
)


@given(url_like, url_like, st.booleans())
def test_session_writes_pass_only_from_this_host(origin: bytes, referer: bytes, send_origin: bool) -> None:
    sent_origin = origin if send_origin else None
    refused = is_cross_origin_write("POST", sent_origin, referer, HOST, None, origin_required=True)
    claimed = origin if send_origin else referer
    if not refused:
        assert urlsplit(claimed.decode("latin-1")).netloc.lower() == HOST.decode()


@pytest.mark.parametrize(
    "name", [b"x_hokusai_assertion", b"x-hokusai_key_id", b"x_forwarded_for", b"x_mlflow_workspace"]
)
def test_underscore_spellings_of_owned_headers_are_dropped(name: bytes) -> None:
    """MLflow's WSGI bridge turns `_` into `-`: the spelling would join the gateway's own header."""
    sent = upstream([(name, b"client value"), (b"x_custom", b"kept")])
    assert b"client value" not in {value for _, value in sent}
    assert (b"x_custom", b"kept") in sent
