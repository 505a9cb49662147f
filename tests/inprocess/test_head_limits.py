"""The head limits of `run/protocol.py`, fed byte by byte in process: what the parser may see, where a
head is cut off, what the client gets. (The deadlines are timed on a live gateway in
tests/e2e/test_slow_clients.py.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.run.protocol import BoundedHttpToolsProtocol, HeadLimits

LIMIT = 1024


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def exchange(*reads: bytes) -> tuple[list[Scope], Transport]:
    """The requests the app saw and what was written back, for these reads of one connection."""
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run() -> Transport:
        config = uvicorn.Config(app, lifespan="off", log_config=None)
        config.load()
        protocol_class = BoundedHttpToolsProtocol.bounded(HeadLimits(LIMIT, 30))
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:
            protocol.data_received(data)
            await asyncio.sleep(0)  # the app's task runs
        await asyncio.sleep(0.05)
        protocol.connection_lost(None)
        return transport

    return seen, asyncio.run(run())


def head(headers_size: int, target: bytes = b"/health") -> bytes:
    """A request whose header block (all its lines and the blank one) is `headers_size` bytes."""
    fixed = b"Host: x\r\n" + b"X-Pad: \r\n" + b"\r\n"
    pad = b"a" * (headers_size - len(fixed))
    return b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + b"\r\n\r\n"


def refusal(transport: Transport) -> tuple[bytes, dict[str, Any]]:
    status_line, _, rest = bytes(transport.written).partition(b"\r\n")
    return status_line, json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_head_at_the_limit_passes_in_any_split() -> None:
    request = head(LIMIT) + head(LIMIT)  # two on one connection: each counted afresh
    for size in (1, 7, 100, len(request)):
        seen, transport = exchange(*[request[i : i + size] for i in range(0, len(request), size)])
        assert len(seen) == 2 and transport.written.count(b"HTTP/1.1 200 OK") == 2


def test_headers_one_byte_over_get_431_and_never_reach_the_app() -> None:
    seen, transport = exchange(head(LIMIT + 1))
    status_line, payload = refusal(transport)
    assert seen == [] and transport.closed
    assert status_line == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert payload["reason"] == "headers_too_large" and "HOKUSAI_MAX_HEADER_KB" in payload["message"]


def test_a_long_request_line_gets_414() -> None:
    seen, transport = exchange(b"GET /health?q=" + b"a" * LIMIT + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status_line, payload = refusal(transport)
    assert seen == [] and transport.closed and status_line.startswith(b"HTTP/1.1 414 ")
    assert payload["reason"] == "url_too_long"


def test_reading_stops_at_the_limit() -> None:
    """Reads after the refusal are not parsed: the connection is closing."""
    endless = [b"GET /health HTTP/1.1\r\n"] + [b"X-Pad: " + b"a" * 500 + b"\r\n"] * 10_000
    seen, transport = exchange(*endless)
    assert seen == [] and transport.closed and transport.written.count(b"HTTP/1.1 431") == 1


def test_a_body_in_the_same_read_as_the_head_is_not_counted_as_head() -> None:
    body = b"x" * (4 * LIMIT)
    request = head(LIMIT - 100).replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % len(body), 1)
    seen, transport = exchange(request + body)
    assert len(seen) == 1 and b"HTTP/1.1 200 OK" in transport.written
