"""Header rules between the client and MLflow, in both directions (pure, on ASGI byte pairs)."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from hokusai_registry.core.asgi import Headers
from hokusai_registry.policy.keys import looks_like_key

# RFC 9110 section 7.6.1, plus the names still seen in the wild.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
# Client credentials never travel upstream.
CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"cookie"})
# Set by the gateway only; any client-sent copy is dropped first.
GATEWAY_OWNED = frozenset(
    {
        b"host",
        b"forwarded",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
        b"origin",
        b"expect",
        b"x-request-id",  # replaced by the id the gateway validated or made
        # MLflow's workspace selector: the gateway's to set once it configures workspaces.
        b"x-mlflow-workspace",
        # Ways to make a server act on another method or path than the one authorized.
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"x-original-url",
        b"x-rewrite-url",
    }
)
# Framing is the gateway's to decide: a `Connection` header naming these does not remove them.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Enough headers for any MLflow client; their size is bounded while they are read (run/protocol.py).
MAX_HEADER_COUNT = 128
GATEWAY_PREFIX = b"x-hokusai-"
# Methods that change nothing, so a browser may send them from any site.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOP_MARK = b"x-hokusai-gateway"
KEY_ID_HEADER = b"x-hokusai-key-id"
_DROP_UPSTREAM = HOP_BY_HOP | CREDENTIALS | GATEWAY_OWNED
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def request_id(offered: bytes | None) -> bytes:
    """The client's X-Request-ID if it is well-formed (1-128 of A-Z a-z 0-9 . _ : -) and cannot carry
    a key (it is logged, echoed and sent to MLflow), else a new one."""
    if offered is not None and _REQUEST_ID.fullmatch(offered) and not looks_like_key(offered):
        return offered
    # Ids only need to be unique, not unguessable: this avoids a getrandom() system call per request.
    return b"%032x" % random.getrandbits(128)  # nosec B311


def _without_listed(headers: Headers, connection_values: list[bytes]) -> Headers:
    """`headers` without those that `Connection` headers with these values name (hop-by-hop; framing
    headers are the gateway's to decide and stay)."""
    if not connection_values:
        return headers
    tokens = {token.strip().lower() for value in connection_values for token in value.split(b",")}
    listed = tokens - _FRAMING
    return [(name, value) for name, value in headers if name not in listed]


def header_value(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def upstream_request_headers(
    headers: Headers, *, client_ip: str, scheme: str, key_id: str, mark: str, request_id: bytes
) -> Headers:
    """Client headers as sent to MLflow: credentials, hop-by-hop and gateway-owned headers removed,
    `X-Forwarded-*` and identity overwritten. `Host` becomes the upstream's own authority (set by the
    forwarder), which is what MLflow's allowed-hosts check expects."""
    forwarded_host = b""
    connection: list[bytes] = []
    out: Headers = []
    # One pass (ASGI names are lower-case); what a `Connection` header lists is removed after it.
    for name, value in headers:
        if name == b"host":
            forwarded_host = value
        elif name == b"connection":
            connection.append(value)
        # MLflow's WSGI bridge reads `_` as `-` (X_Hokusai_Assertion is x-hokusai-assertion to Flask).
        dashed = name.replace(b"_", b"-")
        if dashed in _DROP_UPSTREAM or dashed.startswith(GATEWAY_PREFIX):
            continue
        out.append((name, value))
    out = _without_listed(out, connection)
    out.append((b"x-forwarded-for", client_ip.encode("latin-1")))
    out.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    if forwarded_host:
        out.append((b"x-forwarded-host", forwarded_host))
    out.append((LOOP_MARK, mark.encode("latin-1")))
    out.append((KEY_ID_HEADER, key_id.encode("latin-1")))
    out.append((b"x-request-id", request_id))
    return out


def client_response_headers(raw: Iterable[tuple[bytes, bytes]], *, upstream_base: str, mount: str) -> Headers:
    """MLflow's response headers as sent to the client: hop-by-hop removed, names lower-cased, and
    a `Location` that points into MLflow rewritten into the gateway's mount."""
    connection: list[bytes] = []
    out: Headers = []
    for name, value in raw:
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == b"connection":
                connection.append(value)
            continue
        if lower == b"location":
            value = rewrite_location(value, upstream_base, mount)
        out.append((lower, value))
    return _without_listed(out, connection)


def rewrite_location(value: bytes, upstream_base: str, mount: str) -> bytes:
    text = value.decode("latin-1")
    base = urlsplit(upstream_base)
    if text.startswith(upstream_base + "/"):
        text = text[len(upstream_base) :]
    elif base.path and text.startswith(base.path + "/"):
        text = text[len(base.path) :]
    elif not text.startswith("/") or text.startswith("//"):
        return value  # somewhere else entirely: leave it alone
    return (mount + text).encode("latin-1")


def is_cross_origin_write(
    method: str,
    origin: bytes | None,
    referer: bytes | None,
    host: bytes | None,
    public_url: str | None,
    *,
    origin_required: bool = False,
) -> bool:
    """True for a browser write whose `Origin` is neither this host nor the public URL. Same-origin
    writes pass, with `Origin` removed so MLflow's own cross-origin block does not fire.

    With `origin_required` (the request is authorized by a session cookie, which a browser attaches on
    its own) the write must prove where it came from: `Origin`, or `Referer` when a browser left `Origin`
    out; with neither it is refused."""
    if method in SAFE_METHODS:
        return False
    if origin is None:
        if not origin_required:
            return False
        origin = referer
        if origin is None:
            return True
    try:
        origin_netloc = urlsplit(origin.decode("latin-1")).netloc.lower()
    except ValueError:  # not a URL at all (e.g. "http://["): not this site
        return True
    if not origin_netloc:  # "null" (sandboxed or privacy-sensitive contexts) or a relative Referer
        return True
    if origin_netloc == (host or b"").decode("latin-1").lower():
        return False
    return not (public_url and origin_netloc == urlsplit(public_url).netloc.lower())
