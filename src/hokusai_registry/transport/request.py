"""One request to the upstream as a value, and the one place its HTTP/1.1 head is written.

Every caller of the pool — the forwarder (users' requests and health probes), the remote key source
and the wait for MLflow at start-up — describes its request with `UpstreamRequest`; `serialize_head`
turns it into bytes for the wire. A body given as `bytes` is small and whole: it goes out with the
head in one write, so the request counts as bodiless for the pool's retry rule. A body given as an
async iterator is streamed after the head (with `chunked`, in chunked framing).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

Header = tuple[bytes, bytes]

_JOIN_HEADER = b": ".join
_CHUNKED = b"transfer-encoding: chunked"


# Not frozen: on CPython 3.11 a frozen dataclass's __init__ costs about 1 us more per request (one
# object.__setattr__ per field), and this value is made for every forwarded request. Treat it as
# immutable all the same: the pool may send one twice (see UpstreamPool.send).
@dataclass(slots=True)
class UpstreamRequest:
    """`target` is the request target as sent (path and query); `headers` are sent in order after the
    pool's fixed headers (Host, upstream credentials). With a `bytes` body the serializer adds
    `content-length`; with a streamed body the headers carry the framing (`content-length` from the
    client, or `chunked`, for which the serializer adds `transfer-encoding: chunked`)."""

    method: str
    target: bytes
    headers: Sequence[Header] = ()
    body: bytes | AsyncIterator[bytes] | None = None
    chunked: bool = False
    idempotent: bool = False
    read_timeout: float | None = None
    head_only: bool = False  # a HEAD request: the response has no body, whatever its headers say


def serialize_head(request: UpstreamRequest, fixed: Sequence[Header] = ()) -> bytes:
    """The request line, `fixed` and the request's headers, the framing header, the blank line, and a
    `bytes` body after it."""
    lines = [
        request.method.encode() + b" " + request.target + b" HTTP/1.1",
        *map(_JOIN_HEADER, fixed),
        *map(_JOIN_HEADER, request.headers),
    ]
    body = request.body
    if isinstance(body, bytes):
        lines.append(b"content-length: %d" % len(body))
        lines += (b"", body)  # joined: "...\r\n\r\n" + body, the body copied once
    else:
        if request.chunked:
            lines.append(_CHUNKED)
        lines += (b"", b"")
    return b"\r\n".join(lines)
