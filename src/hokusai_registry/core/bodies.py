"""Whole request bodies for the few calls the gateway reads itself (generic ASGI)."""

from __future__ import annotations

from collections.abc import Sequence

from hokusai_registry.core.asgi import Message, Receive, Scope
from hokusai_registry.core.refusals import Reason, Refusal


def size_text(limit: int) -> str:
    """A body limit as people read it: MiB from 1 MiB up, else KiB."""
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """A whole (small) request body, or None if the client left first. Over `limit` bytes is a 413."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            raise Refusal(
                Reason.BODY_TOO_LARGE,
                f"the request body is over {size_text(limit)}, more than this call takes.",
            )
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes | Sequence[bytes], receive: Receive) -> Receive:
    """A receive that yields `body` (whole, or the pieces it was read in, without joining them), then
    defers to the client's (for disconnects)."""
    pieces = [body] if isinstance(body, bytes) else list(body) or [b""]
    last = len(pieces) - 1
    sent = 0

    async def replayed() -> Message:
        nonlocal sent
        if sent > last:
            return await receive()
        piece = pieces[sent]
        pieces[sent] = b""  # handed on: the forwarder drops it once written
        sent += 1
        return {"type": "http.request", "body": piece, "more_body": sent <= last}

    return replayed


def with_length(scope: Scope, length: int, *, drop: tuple[bytes, ...] = ()) -> Scope:
    """The scope of a request whose body is now `length` bytes read whole: framed by Content-Length (not
    chunked), without the headers in `drop` (e.g. a Content-Encoding the gateway decoded)."""
    removed = (b"content-length", b"transfer-encoding", *drop)
    headers = [(name, value) for name, value in scope["headers"] if name not in removed]
    headers.append((b"content-length", str(length).encode()))
    return {**scope, "headers": headers}
