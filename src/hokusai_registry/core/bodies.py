"""Whole request bodies for the few calls the gateway reads itself (generic ASGI)."""

from __future__ import annotations

from hokusai_registry.core.asgi import Message, Receive
from hokusai_registry.core.refusals import Reason, Refusal


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
                f"the request body is over "
                f"{f'{limit >> 20} MiB' if limit >= 1 << 20 else f'{limit >> 10} KiB'}, more than this "
                "call takes.",
            )
        if not message.get("more_body", False):
            return bytes(body)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields `body` once, then defers to the client's (for disconnects)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed
