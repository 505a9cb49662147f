"""The record of one request, filled in as it goes through and reported in its access line."""

from __future__ import annotations

from hokusai_registry.core.asgi import Message, Send


class RequestRecord:
    """What the access line reports about one request; filled in as the request goes through."""

    __slots__ = (
        "auth_failure",
        "bytes_in",
        "bytes_out",
        "family",
        "key_id",
        "request_id",
        "status",
        "upstream",
        "upstream_error",
        "upstream_ms",
    )

    def __init__(self, request_id: bytes) -> None:
        self.request_id = request_id
        self.family = "none"  # the route family, or "gateway" for the gateway's own routes
        self.upstream_error: str | None = None  # refused, reset, timeout, loop
        self.auth_failure: str | None = None
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.key_id = "-"
        self.upstream = "-"
        self.upstream_ms: float | None = None


def counted(send: Send, record: RequestRecord) -> Send:
    """`send` that records status and body bytes and adds the request id (for gateway-made answers;
    the forwarder does the same inline on its hot path)."""

    async def send_counted(message: Message) -> None:
        if message["type"] == "http.response.start":
            record.status = message["status"]
            message["headers"] = [*message["headers"], (b"x-request-id", record.request_id)]
        else:
            record.bytes_out += len(message.get("body", b""))
        await send(message)

    return send_counted
