"""The upstream transport against scripted HTTP servers on real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hokusai_registry.transport.upstream import (
    HIGH_WATER,
    ConnectFailed,
    ConnectionLost,
    ConnectTimeout,
    ReadTimeout,
    UpstreamPool,
)
from tests.helpers import free_port

Handler = Callable[["ScriptedServer", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ScriptedServer:
    """Accepts connections and hands each to `handler`; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []

    async def __aenter__(self) -> ScriptedServer:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.handler(self, reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        body = b""
        lower = head.lower()
        if b"content-length:" in lower:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        elif b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        self.requests.append(head + body)
        return body


def pool(port: int, **overrides: float) -> UpstreamPool:
    options: dict[str, float] = {"limit": 8, "connect_timeout": 2, "pool_timeout": 2, **overrides}
    return UpstreamPool(
        "127.0.0.1",
        port,
        tls=False,
        limit=int(options["limit"]),
        connect_timeout=options["connect_timeout"],
        pool_timeout=options["pool_timeout"],
        idle_timeout=options.get("idle_timeout", 4.0),
    )


def get(path: str = "/x", port: int = 0) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n\r\n".encode()


def run(coroutine: Awaitable[None]) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


async def ok_forever(
    server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        await writer.drain()


def test_keep_alive_connections_are_reused() -> None:
    async def scenario() -> None:
        async with ScriptedServer(ok_forever) as server:
            upstream = pool(server.port)
            for _ in range(50):
                assert await upstream.fetch("/x", 5) == (200, b"hello")
            assert server.connections == 1
            await asyncio.gather(*(upstream.fetch("/x", 5) for _ in range(20)))
            assert server.connections <= 8  # never more than the pool's limit
            upstream.close()

    run(scenario())


def test_connection_close_and_head_are_not_reused() -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            upstream = pool(server.port)
            for _ in range(3):
                assert await upstream.fetch("/x", 5) == (200, b"ok")
            assert server.connections == 3
            response = await upstream.request(
                get(port=server.port).replace(b"GET", b"HEAD"),
                None,
                chunked=False,
                read_timeout=5,
                head_only=True,
                idempotent=True,
            )
            assert response.status == 200 and [c async for c in response.chunks()] == []
            response.release()

    run(scenario())


def test_chunked_and_close_delimited_responses() -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            upstream = pool(server.port)
            assert await upstream.fetch("/a", 5) == (200, b"abcde")
            assert await upstream.fetch("/b", 5) == (200, b"until the end")

    run(scenario())


def test_request_bodies_with_length_and_chunked() -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            body = await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
            await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"", b"two ", b"three"):
            yield part

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            upstream = pool(server.port)
            head = b"PUT /f HTTP/1.1\r\nhost: x\r\ncontent-length: 13\r\n\r\n"
            response = await upstream.request(
                head, parts(), chunked=False, read_timeout=5, head_only=False, idempotent=False
            )
            assert b"".join([c async for c in response.chunks()]) == b"one two three"
            response.release()
            head = b"PUT /f HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
            response = await upstream.request(
                head, parts(), chunked=True, read_timeout=5, head_only=False, idempotent=False
            )
            assert b"".join([c async for c in response.chunks()]) == b"one two three"
            response.release()
            assert server.connections == 1

    run(scenario())


def test_large_response_is_read_with_backpressure() -> None:
    size = 8 * 1024 * 1024

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"x" * 65536)
            await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            upstream = pool(server.port)
            response = await upstream.request(
                get(port=server.port), None, chunked=False, read_timeout=5, head_only=False, idempotent=True
            )
            received = 0
            async for chunk in response.chunks():
                received += len(chunk)
                # A slow consumer: what waits in memory stays bounded by the high-water mark.
                connection = response._connection
                assert connection is not None and connection._buffered <= HIGH_WATER + 256 * 1024
                await asyncio.sleep(0)
            response.release()
            assert received == size

    run(scenario())


def test_silence_is_a_read_timeout_and_refusal_a_connect_failure() -> None:
    async def silent(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.read()

    async def scenario() -> None:
        async with ScriptedServer(silent) as server:
            with pytest.raises(ReadTimeout):
                await pool(server.port).fetch("/x", 0.2)
        with pytest.raises(ConnectFailed):
            await pool(free_port()).fetch("/x", 1)

    run(scenario())


def test_stale_keep_alive_connection_is_retried_for_idempotent_requests() -> None:
    async def answer_once_then_drop(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Answers one request, then reads the next and closes without a word: the race a keep-alive
        # timeout on the server side causes.
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        await server.read_request(reader)

    async def scenario() -> None:
        async with ScriptedServer(answer_once_then_drop) as server:
            upstream = pool(server.port)
            assert await upstream.fetch("/a", 5) == (200, b"ok")
            assert await upstream.fetch("/b", 5) == (200, b"ok")  # dropped once, retried on a fresh one
            assert server.connections == 2
            assert [r.split(b" ")[1] for r in server.requests] == [b"/a", b"/b", b"/b"]
            # A POST on a dropped connection is never sent twice: it fails instead.
            with pytest.raises(ConnectionLost):
                await upstream.request(
                    b"POST /c HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
                    None,
                    chunked=False,
                    read_timeout=5,
                    head_only=False,
                    idempotent=False,
                )
            assert [r.split(b" ")[1] for r in server.requests].count(b"/c") == 1

    run(scenario())


def test_pool_limit_waits_for_a_free_connection() -> None:
    async def scenario() -> None:
        gate = asyncio.Event()

        async def slow(
            server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while True:
                await server.read_request(reader)
                await gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()

        async with ScriptedServer(slow) as server:
            upstream = pool(server.port, limit=2, pool_timeout=0.3)
            first = [asyncio.ensure_future(upstream.fetch("/x", 5)) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(ConnectTimeout, match="busy"):
                await upstream.fetch("/y", 5)
            gate.set()
            assert [await f for f in first] == [(200, b""), (200, b"")]
            assert await upstream.fetch("/z", 5) == (200, b"")
            assert server.connections == 2

    run(scenario())
