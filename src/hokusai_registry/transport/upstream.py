"""HTTP/1.1 to the one upstream: a keep-alive connection pool on asyncio protocols and httptools.

Why not aiohttp's client: with the same gateway on top, aiohttp's per-request machinery (request and
response objects, auto headers, timers, tracing) cost about three quarters of the gateway's CPU; this
transport does only what a reverse proxy to one origin needs (see docs/benchmarks.md). The parser is
llhttp (via httptools, the one uvicorn uses); framing, flow control and timeouts are here. What to send
is an `UpstreamRequest`, written to the wire by `serialize_head` (transport/request.py).

Flow control both ways: request bodies wait for the socket to drain, and reading from MLflow pauses
while more than `HIGH_WATER` bytes of response body wait for the client, so memory stays flat.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import cast
from urllib.parse import urlsplit

import httptools

from hokusai_registry.transport.request import Header, UpstreamRequest, serialize_head

# New connections to one origin start at least this far apart. MLflow's worker processes share one
# listening socket, and a worker that wakes accepts every connection waiting: a burst (a cold pool under
# load) lands on one worker, which serves it all while the others idle, at half the rate on two workers.
# Spaced, each connection goes to whichever worker is free to accept it.
CONNECT_SPACING = 0.002
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
WRITE_HIGH_WATER = 1024 * 1024
# Linux only. An upstream that leaves Nagle's algorithm on (uvicorn <= 0.54 with several workers on the
# asyncio loop) holds the rest of each response until the first part is acknowledged, and on a kept-alive
# connection Linux delays that ACK by ~40 ms; in quick-ack mode it goes out when the data is read
# (docs/benchmarks.md, "Kept-alive connections and Nagle's algorithm"). Past the first bytes of a response
# a stall no longer matters, and ACKs for every segment would slow bulk downloads.
QUICKACK = getattr(socket, "TCP_QUICKACK", None)
QUICKACK_BYTES = 64 * 1024


class UpstreamError(Exception):
    """Any failure talking to the upstream; `stage` says when it happened (for messages)."""

    stage = "exchanging data"


class ConnectFailed(UpstreamError):
    stage = "connecting"


class ConnectTimeout(UpstreamError):
    stage = "connecting"


class ReadTimeout(UpstreamError):
    stage = "waiting for the response"


class ConnectionLost(UpstreamError):
    pass


class ProtocolViolation(UpstreamError):
    stage = "reading the response"


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one exchange at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout: float | None = None
        self._last_data = 0.0  # loop time of the last read while the read timeout runs
        self._socket: socket.socket | None = None
        self.reset()

    def reset(self) -> None:
        self.must_close = False
        self.keep_alive = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_complete = False
        self.message_complete = False
        self.received_any = False
        self._received = 0
        self.error: UpstreamError | None = None
        self._framed = False
        self.content_length: int | None = None
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._read_paused = False
        self._waiter: asyncio.Future[None] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        # Room for a few request-body chunks in flight, so reading from the client and writing to
        # MLflow overlap instead of taking turns (uploads); still a fixed bound per connection.
        self.transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        raw = transport.get_extra_info("socket") if QUICKACK is not None else None
        if raw is not None:
            # A socket object of our own on a duplicate of the descriptor, closed with the connection:
            # uvloop's stand-in builds a new one (a getsockname() call) for every setsockopt().
            self._socket = socket.socket(fileno=os.dup(raw.fileno()))

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if self._timer is not None:
            # The read timeout counts from here: the timer, when it fires, looks at this and waits on
            # if data came since (re-arming it on every read cost a timer per read).
            self._last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ProtocolViolation(f"invalid HTTP from upstream ({exc})"))
            self.close()
            return
        if self._received < QUICKACK_BYTES:
            self._received += len(data)
            if not self.message_complete:  # a response read whole needs no more ACKs in a hurry
                self._quick_ack()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._cancel_timer()
        if self.head_complete and not self._framed and not self.message_complete and self.error is None:
            # A body delimited by the end of the connection is complete now.
            self.message_complete = True
            self._wake()
        elif not self.message_complete:
            reason = f"{type(exc).__name__}: {exc}" if exc else "closed by the upstream"
            self._fail(ConnectionLost(f"connection lost ({reason})"))
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # interim response: the real one follows
            self.headers = []
            return
        self.status = status
        self.head_complete = True
        # llhttp answers this only while the message is being parsed, not after it completed.
        self.keep_alive = self.parser.should_keep_alive()
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"content-length":
                self._framed = True
                self.content_length = int(value)  # llhttp accepted it: digits only, and only one
            elif lower == b"transfer-encoding" and b"chunked" in value.lower():
                self._framed = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status:
            self.message_complete = True
            self._cancel_timer()
            self._wake()

    # helpers

    def _quick_ack(self) -> None:
        """Acknowledge at once what has arrived, and what arrives next. Not sticky (the kernel leaves
        quick-ack mode when this side sends, and on its own): set after each early read of a response
        not yet whole; setting it sends the ACK the kernel was holding back."""
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)  # type: ignore[arg-type]

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._read_timeout:
            self._last_data = self.loop.time()
            self._timer = self.loop.call_later(self._read_timeout, self._on_timeout)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self) -> None:
        assert self._read_timeout is not None  # nosec B101 - only armed with one
        left = self._last_data + self._read_timeout - self.loop.time()
        if left > 0:  # data came meanwhile: the silence started then
            self._timer = self.loop.call_later(left, self._on_timeout)
            return
        self._timer = None
        self._fail(ReadTimeout(f"no data from the upstream for {self._read_timeout:g} s"))
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # the exchange, as the pool drives it

    def write(self, data: bytes) -> None:
        if self.transport is None or self.closed:
            raise self.error or ConnectionLost("connection lost (closed by the upstream)")
        self.transport.write(data)

    async def drain(self) -> None:
        if self._write_paused and not self.closed:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter
        if self.closed and not self.head_complete:
            raise self.error or ConnectionLost("connection lost while sending the request body")

    def start_reading(self, read_timeout: float | None) -> None:
        """The request is out: from now on, silence longer than `read_timeout` is a timeout."""
        self._read_timeout = read_timeout
        if read_timeout and not self.message_complete:
            self._arm_timer()

    async def wait_head(self) -> None:
        while not self.head_complete:
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            await self._waiter

    async def next_chunk(self) -> bytes:
        """The next piece of response body; b"" at the end."""
        while True:
            if self._body:
                chunk = self._body.popleft()
                self._buffered -= len(chunk)
                self._resume_when_drained()
                return chunk
            if self.message_complete:
                return b""
            if self.error is not None:
                raise self.error
            self._waiter = self.loop.create_future()
            await self._waiter

    def take_body(self) -> bytes:
        """All of a complete response's body, which is here (nothing is waited for)."""
        body = b"".join(self._body)
        self._body.clear()
        self._buffered = 0
        self._resume_when_drained()
        return body

    def _resume_when_drained(self) -> None:
        """Reading paused for a slow client goes on once what waits for it is below LOW_WATER."""
        if self._read_paused and self._buffered < LOW_WATER and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()

    @property
    def reusable(self) -> bool:
        return (
            self.message_complete
            and not self.must_close
            and not self.closed
            and self.error is None
            and self.keep_alive
        )


class UpstreamResponse:
    """Status and headers as MLflow sent them; the body is read with `chunks()`. Always `release()`."""

    def __init__(self, pool: UpstreamPool, connection: _Connection, head_only: bool) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self.status = connection.status
        self.headers = connection.headers
        self._head_only = head_only

    async def chunks(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None or self._head_only:
            return
        while chunk := await connection.next_chunk():
            yield chunk

    async def small_body(self, limit: int) -> bytes | None:
        """The whole body, waited for, if MLflow declared a length of at most `limit` bytes or all of it
        has arrived already; None for any other answer, which `chunks()` streams. Raises UpstreamError
        if the body stops short."""
        connection = self._connection
        if connection is None or self._head_only:
            return b""
        if connection.message_complete:
            return connection.take_body()  # usually: a small answer comes in the read with its head
        declared = connection.content_length
        if declared is None or declared > limit:
            return None
        return b"".join([chunk async for chunk in self.chunks()])

    def release(self) -> None:
        """Back to the pool if the exchange completed cleanly; otherwise the connection is closed."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.give_back(connection, reuse=not self._head_only and connection.reusable)


class UpstreamPool:
    """Keep-alive connections to one origin. Idle connections are dropped before the upstream's own
    keep-alive timeout (uvicorn, which MLflow runs on, closes them after 5 s)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        limit: int,
        connect_timeout: float,
        pool_timeout: float,
        idle_timeout: float = 4.0,
        headers: Sequence[Header] = (),
        connect_spacing: float = CONNECT_SPACING,
    ) -> None:
        self.host = host
        self.port = port
        self.authority = (f"[{host}]" if ":" in host else host) + f":{port}"
        # Sent first in every request to this origin: Host, then `headers` (e.g. upstream credentials).
        self.fixed_headers: list[Header] = [(b"host", self.authority.encode()), *headers]
        self._ssl = ssl.create_default_context() if tls else None
        self.limit = limit
        # A counter and a queue of waiters: asyncio.Semaphore.locked() scans its waiters on every call.
        self._in_use = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        self._idle_timeout = idle_timeout
        self._idle: list[_Connection] = []
        self._connect_spacing = connect_spacing
        self._next_connect_at = 0.0

    @classmethod
    def for_url(
        cls,
        url: str,
        *,
        limit: int,
        connect_timeout: float,
        pool_timeout: float,
        headers: Sequence[Header] = (),
    ) -> UpstreamPool:
        """A pool to the origin of an http(s) URL (its path and credentials are the caller's business)."""
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        return cls(
            parts.hostname or "",
            parts.port or (443 if tls else 80),
            tls=tls,
            limit=limit,
            connect_timeout=connect_timeout,
            pool_timeout=pool_timeout,
            headers=headers,
        )

    async def _connect(self, *, or_idle: bool = False) -> _Connection:
        """A new connection, started CONNECT_SPACING after the one before; with `or_idle`, an idle one
        that came back while this waited its turn, if any."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        start = max(now, self._next_connect_at)
        self._next_connect_at = start + self._connect_spacing
        if start > now:
            await asyncio.sleep(start - now)
            if or_idle and (idle := self._take_idle()) is not None:
                return idle
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(loop),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                self._connect_timeout,
            )
        except TimeoutError:
            raise ConnectTimeout(f"no connection within {self._connect_timeout:g} s") from None
        except OSError as exc:
            raise ConnectFailed(exc.strerror or type(exc).__name__) from None
        return connection

    def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < self._idle_timeout:
                return connection
            connection.close()
        return None

    async def _acquire_slot(self) -> None:
        if self._in_use < self.limit and not self._waiting:
            self._in_use += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            # The slot is handed over by _release_slot: _in_use already counts it.
            await asyncio.wait_for(waiter, self._pool_timeout)
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed over just as this request gave up
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise ConnectTimeout(f"all {self.limit} pooled connections stayed busy") from None
            raise

    def _release_slot(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot straight to the next waiter
                return
        self._in_use -= 1

    def give_back(self, connection: _Connection, *, reuse: bool) -> None:
        self._release_slot()
        if reuse:
            connection.reset()
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send one request and wait for the response head; read the body with `chunks()`, then
        `release()`. An idempotent request without a streamed body whose connection is lost before any
        response byte (a kept-alive connection the upstream closed in the meantime, or a fresh one cut)
        is retried once, on a fresh connection. Anything else is never sent twice."""
        head = serialize_head(request, self.fixed_headers)
        body = request.body
        stream = None if body is None or isinstance(body, bytes) else body
        await self._acquire_slot()
        connection: _Connection | None = None
        try:
            connection = self._take_idle() or await self._connect(or_idle=True)
            try:
                await self._exchange(connection, head, stream, request.chunked, request.read_timeout)
            except ConnectionLost:
                if not (request.idempotent and stream is None and not connection.received_any):
                    raise
                connection.close()
                connection = await self._connect()
                await self._exchange(connection, head, stream, request.chunked, request.read_timeout)
            return UpstreamResponse(self, connection, request.head_only)
        except BaseException:
            self._release_slot()
            if connection is not None:
                connection.close()
            raise

    async def _exchange(
        self,
        connection: _Connection,
        head: bytes,
        body: AsyncIterator[bytes] | None,
        chunked: bool,
        read_timeout: float | None,
    ) -> None:
        connection.write(head)
        if body is not None:
            async for chunk in body:
                if connection.head_complete:
                    connection.must_close = True  # answered early (e.g. an error); the rest is not sent
                    break
                if chunk:
                    connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await connection.drain()
            else:
                if chunked:
                    connection.write(b"0\r\n\r\n")
        connection.start_reading(read_timeout)
        await connection.wait_head()

    async def exchange(self, request: UpstreamRequest, limit: int | None = None) -> tuple[int, bytes]:
        """A small request of the gateway's own (health checks, key validation, the start-up wait): the
        status and the whole answer in memory, or its first `limit` bytes (when it is longer, the rest is
        not read and the connection is closed). Give a small body as `bytes`: it goes out with the head,
        so an idempotent request on a stale kept-alive connection is retried."""
        response = await self.send(request)
        received = bytearray()
        try:
            async for chunk in response.chunks():
                received += chunk
                if limit is not None and len(received) > limit:
                    break
        finally:
            response.release()
        return response.status, bytes(received if limit is None else received[:limit])

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()
