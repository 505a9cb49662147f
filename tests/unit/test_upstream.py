"""The upstream transport against scripted HTTP servers on real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from hokusai_registry.transport.forward import Forwarder
from hokusai_registry.transport.request import UpstreamRequest, serialize_head
from hokusai_registry.transport.upstream import (
    CONNECT_SPACING,
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
        connect_spacing=options.get("connect_spacing", CONNECT_SPACING),
    )


def get(path: str = "/x", read_timeout: float = 5, method: str = "GET") -> UpstreamRequest:
    return UpstreamRequest(
        method, path.encode(), idempotent=True, read_timeout=read_timeout, head_only=method == "HEAD"
    )


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
                assert await upstream.exchange(get("/x", 5)) == (200, b"hello")
            assert server.connections == 1
            await asyncio.gather(*(upstream.exchange(get("/x", 5)) for _ in range(20)))
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
                assert await upstream.exchange(get("/x", 5)) == (200, b"ok")
            assert server.connections == 3
            response = await upstream.send(get(method="HEAD"))
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
            assert await upstream.exchange(get("/a", 5)) == (200, b"abcde")
            assert await upstream.exchange(get("/b", 5)) == (200, b"until the end")

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
            put = UpstreamRequest("PUT", b"/f", [(b"content-length", b"13")], parts(), read_timeout=5)
            response = await upstream.send(put)
            assert b"".join([c async for c in response.chunks()]) == b"one two three"
            response.release()
            put = UpstreamRequest("PUT", b"/f", (), parts(), chunked=True, read_timeout=5)
            response = await upstream.send(put)
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
            response = await upstream.send(get())
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
                await pool(server.port).exchange(get("/x", 0.2))
        with pytest.raises(ConnectFailed):
            await pool(free_port()).exchange(get("/x", 1))

    run(scenario())


def test_the_read_timeout_counts_silence_not_the_whole_answer() -> None:
    """An answer that keeps coming, each piece sooner than the read timeout, is read whole however long
    it takes; one that stops mid-body times out."""
    pieces = 8

    async def trickle(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        stops = server.requests[-1].startswith(b"GET /stops ")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % pieces)
        for sent in range(pieces):
            if stops and sent == 2:
                await reader.read()  # silent from here on
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.1)

    async def scenario() -> None:
        async with ScriptedServer(trickle) as server:
            # 8 pieces 0.1 s apart: 0.8 s in all, longer than the 0.5 s timeout, never 0.5 s of silence.
            assert await pool(server.port).exchange(get("/trickles", 0.5)) == (200, b"x" * pieces)
            with pytest.raises(ReadTimeout):
                await pool(server.port).exchange(get("/stops", 0.5))

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
            assert await upstream.exchange(get("/a", 5)) == (200, b"ok")
            assert await upstream.exchange(get("/b", 5)) == (
                200,
                b"ok",
            )  # dropped once, retried on a fresh one
            assert server.connections == 2
            assert [r.split(b" ")[1] for r in server.requests] == [b"/a", b"/b", b"/b"]
            # A POST on a dropped connection is never sent twice: it fails instead.
            with pytest.raises(ConnectionLost):
                await upstream.send(UpstreamRequest("POST", b"/c", body=b"", read_timeout=5))
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
            first = [asyncio.ensure_future(upstream.exchange(get("/x", 5))) for _ in range(2)]
            await asyncio.sleep(0.1)
            with pytest.raises(ConnectTimeout, match="busy"):
                await upstream.exchange(get("/y", 5))
            gate.set()
            assert [await f for f in first] == [(200, b""), (200, b"")]
            assert await upstream.exchange(get("/z", 5)) == (200, b"")
            assert server.connections == 2

    run(scenario())


def test_new_connections_start_spaced_and_a_request_takes_one_that_came_back_meanwhile() -> None:
    """A burst on a cold pool opens one connection, and the next only a spacing later (so that MLflow's
    workers each accept some, not one worker all); a request whose turn to connect comes takes a
    connection that came back in the meantime instead. No gap is timed: a spacing of a minute never
    passes in a test, one of 50 ms is only waited for."""

    async def scenario() -> None:
        gate = asyncio.Event()

        async def held(
            server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            while True:
                await server.read_request(reader)
                await gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()

        async def until(condition: Callable[[], bool]) -> None:
            for _ in range(1000):  # 10 s at most
                if condition():
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("not reached within 10 s")

        async with ScriptedServer(held) as server:
            upstream = pool(server.port, connect_spacing=60)
            burst = [asyncio.ensure_future(upstream.exchange(get())) for _ in range(3)]
            await until(lambda: len(server.requests) >= 1)
            await asyncio.sleep(0.05)  # the other two had every chance to connect: they wait their turn
            assert server.connections == 1
            for request in burst:
                request.cancel()
            await asyncio.gather(*burst, return_exceptions=True)

        async with ScriptedServer(held) as server:
            upstream = pool(server.port, connect_spacing=0.05)
            burst = [asyncio.ensure_future(upstream.exchange(get())) for _ in range(3)]
            # Nothing comes back while the answers are held: each turn to connect does come.
            await until(lambda: server.connections == 3 and len(server.requests) == 3)
            gate.set()
            assert [await request for request in burst] == [(200, b"")] * 3

        async with ScriptedServer(ok_forever) as server:
            upstream = pool(server.port, connect_spacing=1.0)
            first = asyncio.ensure_future(upstream.exchange(get()))
            await asyncio.sleep(0)  # the first request connects at once...
            second = await upstream.exchange(get())  # ...this one waits its turn, and the first is back
            assert (await first, second) == ((200, b"hello"), (200, b"hello"))
            assert server.connections == 1

    run(scenario())


def test_serialize_head_writes_exact_bytes() -> None:
    fixed = [(b"host", b"127.0.0.1:5000")]
    assert serialize_head(UpstreamRequest("GET", b"/health"), fixed) == (
        b"GET /health HTTP/1.1\r\nhost: 127.0.0.1:5000\r\n\r\n"
    )
    assert serialize_head(UpstreamRequest("GET", b"/x?a=1&b=%20")) == b"GET /x?a=1&b=%20 HTTP/1.1\r\n\r\n"
    posted = UpstreamRequest("POST", b"/v", [(b"content-type", b"application/json")], b'{"a": 1}')
    assert serialize_head(posted, fixed) == (
        b"POST /v HTTP/1.1\r\nhost: 127.0.0.1:5000\r\ncontent-type: application/json\r\n"
        b'content-length: 8\r\n\r\n{"a": 1}'
    )
    assert serialize_head(UpstreamRequest("POST", b"/c", body=b"")) == (
        b"POST /c HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    )

    async def stream() -> AsyncIterator[bytes]:
        yield b"never serialized"

    chunked = UpstreamRequest("PUT", b"/f", [(b"x-a", b"1")], stream(), chunked=True)
    assert serialize_head(chunked, fixed) == (
        b"PUT /f HTTP/1.1\r\nhost: 127.0.0.1:5000\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    # A streamed body with a length: the framing is the caller's header, nothing is added.
    sized = UpstreamRequest("PUT", b"/f", [(b"content-length", b"3")], stream())
    assert serialize_head(sized) == b"PUT /f HTTP/1.1\r\ncontent-length: 3\r\n\r\n"


def test_probes_carry_fixed_headers_and_the_loop_mark() -> None:
    async def echo(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nOK")
            await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(echo) as server:
            forwarder = Forwarder(
                f"http://user:p%40ss@127.0.0.1:{server.port}/base",
                api_prefix="ajax-api",
                connect_timeout=2,
                read_timeout=5,
                transfer_idle_timeout=5,
                pool_size=2,
                mark="m-123",
            )
            assert forwarder.pool.fixed_headers == [
                (b"host", f"127.0.0.1:{server.port}".encode()),
                (b"authorization", b"Basic dXNlcjpwQHNz"),
            ]
            assert await forwarder.probe("GET", "/health", b"", None) == (200, b"OK")
            body = b'{"max_results": 1}'
            assert await forwarder.probe("POST", "/api/2.0/mlflow/experiments/search", b"q=1", body) == (
                200,
                b"OK",
            )
            await forwarder.close()
        fixed = f"host: 127.0.0.1:{server.port}\r\nauthorization: Basic dXNlcjpwQHNz\r\n".encode()
        probe_headers = b"x-hokusai-gateway: m-123\r\nuser-agent: hokusai-registry-health-check\r\n"
        assert server.requests == [
            b"GET /base/health HTTP/1.1\r\n" + fixed + probe_headers + b"\r\n",
            b"POST /base/ajax-api/2.0/mlflow/experiments/search?q=1 HTTP/1.1\r\n"
            + fixed
            + probe_headers
            + b"content-type: application/json\r\ncontent-length: 18\r\n\r\n"
            + body,
        ]

    run(scenario())


def test_whole_body_requests_are_retried_on_a_stale_connection() -> None:
    async def answer_once_then_drop(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        body = await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body))
        await writer.drain()
        await server.read_request(reader)

    async def scenario() -> None:
        async with ScriptedServer(answer_once_then_drop) as server:
            upstream = pool(server.port)
            first = UpstreamRequest("POST", b"/a", body=b"one", idempotent=True, read_timeout=5)
            assert await upstream.exchange(first) == (200, b"one")
            # The body goes out with the head, so the request counts as bodiless: sent again, body and all.
            again = UpstreamRequest("POST", b"/b", body=b"two", idempotent=True, read_timeout=5)
            assert await upstream.exchange(again) == (200, b"two")
            assert server.connections == 2
            assert [r.split(b"\r\n\r\n")[1] for r in server.requests] == [b"one", b"two", b"two"]
            # Not idempotent: never sent twice, even with a whole body.
            once = UpstreamRequest("POST", b"/c", body=b"three", read_timeout=5)
            with pytest.raises(ConnectionLost):
                await upstream.exchange(once)
            assert [r.split(b" ")[1] for r in server.requests].count(b"/c") == 1

            # A streamed body is never retried, idempotent or not.
            async def stream() -> AsyncIterator[bytes]:
                yield b"four"

            streamed = UpstreamRequest(
                "PUT", b"/d", [(b"content-length", b"4")], stream(), idempotent=True, read_timeout=5
            )
            assert await upstream.exchange(streamed) == (200, b"four")  # a fresh connection answers
            with pytest.raises(ConnectionLost):
                await upstream.exchange(
                    UpstreamRequest(
                        "PUT", b"/e", [(b"content-length", b"4")], stream(), idempotent=True, read_timeout=5
                    )
                )
            assert [r.split(b" ")[1] for r in server.requests].count(b"/e") == 1

    run(scenario())


def test_exchange_reads_at_most_limit_bytes() -> None:
    async def scenario() -> None:
        async with ScriptedServer(ok_forever) as server:
            upstream = pool(server.port)
            assert await upstream.exchange(get(), limit=3) == (200, b"hel")
            assert await upstream.exchange(get(), limit=5) == (200, b"hello")
            assert await upstream.exchange(get()) == (200, b"hello")

    run(scenario())


def test_a_small_answer_is_read_whole_and_a_long_or_unframed_one_is_streamed() -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")  # head and body together
        for head, body in (
            (b"content-length: 5", [b"later"]),  # declared small: waited for
            (b"content-length: 11", [b"longer", b" body"]),  # declared over the limit: streamed
            (b"transfer-encoding: chunked", [b"3\r\nabc\r\n", b"0\r\n\r\n"]),  # no length: streamed
        ):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n" + head + b"\r\n\r\n")
            await writer.drain()
            for piece in body:
                await asyncio.sleep(0.1)  # the body after the head, as MLflow writes them
                writer.write(piece)
                await writer.drain()
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(1)

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            upstream = pool(server.port)
            limit = 10
            for whole, streamed in ((b"hello", b""), (b"later", b""), (None, b"longer body"), (None, b"abc")):
                response = await upstream.send(get())
                assert await response.small_body(limit) == whole
                assert b"".join([chunk async for chunk in response.chunks()]) == streamed
                response.release()
            head = await upstream.send(get(method="HEAD"))
            assert await head.small_body(limit) == b""
            head.release()
            assert server.connections == 1  # kept alive throughout

    run(scenario())


def test_a_small_answer_that_stops_short_is_an_error_not_a_short_body() -> None:
    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            response = await pool(server.port).send(get())
            with pytest.raises(ConnectionLost):
                await response.small_body(64)
            response.release()

    run(scenario())


def test_a_connection_whose_last_read_went_over_the_high_water_mark_reads_again() -> None:
    size = HIGH_WATER + 4096

    async def handler(
        server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for _ in range(2):
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size + b"x" * size)
            await writer.drain()

    async def scenario() -> None:
        async with ScriptedServer(handler) as server:
            upstream = pool(server.port)
            for _ in range(2):
                response = await upstream.send(get())
                connection = response._connection
                assert connection is not None
                for _ in range(200):  # until the body is in, or reading paused below the whole
                    if connection.message_complete or connection._read_paused:
                        break
                    await asyncio.sleep(0.01)
                body = await response.small_body(size)
                assert body is not None and len(body) == size
                assert not connection._read_paused
                response.release()
            assert server.connections == 1

    run(scenario())
