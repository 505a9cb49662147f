"""uvicorn's httptools protocol with bounds on a request's head: its size and the time it may take.

httptools buffers a request line and headers without limit and uvicorn gives them no deadline, so one
client could hold the gateway's memory (a 40 MiB URL) or its connections (slowloris) for ever. This
subclass counts the head's bytes before the parser sees them and stops at the limit (414 for the request
line, 431 for the headers), gives every head a deadline from its first byte (408), and closes a fresh
connection that stays silent for the keep-alive timeout, as uvicorn does between requests.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hokusai_registry.core.refusals import ORIGIN_HEADER, Reason, Refusal
from hokusai_registry.run.gathered_writes import GatheredWrites

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int  # of the request line, and of the header block, each as sent
    timeout: float  # seconds for a whole head, from its first byte


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HeadLimits]

    @classmethod
    def bounded(cls, limits: HeadLimits) -> type[BoundedHttpToolsProtocol]:
        """This protocol with `limits`: uvicorn makes one per connection from the class alone."""
        return cast(type[BoundedHttpToolsProtocol], type(cls.__name__, (cls,), {"limits": limits}))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._draining: asyncio.TimerHandle | None = None  # closes a connection answered mid-body
        self._next_head()

    def _next_head(self) -> None:
        # Bytes of a head that starts inside a read are counted from the next read: the limit may be
        # passed by one read at most (uvloop reads 256 KiB).
        self._in_head = True
        self._line_done = False
        self._line_bytes = 0
        self._header_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Head and body of an answer in one system call (uvicorn writes them apart).
        self.gathered = GatheredWrites(transport, self.loop)
        self.transport = self.gathered
        # uvicorn arms its keep-alive timer only after a response; a new connection is just as idle.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        if self._draining is not None:
            self._draining.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._in_head and self._deadline is None:
            # The head's clock starts with its first byte: idle time before it is the keep-alive
            # timeout's, which a load balancer in front needs longer than its own idle timeout.
            self._arm_deadline()
        while data and self._in_head and not self.transport.is_closing():
            piece, data = self._head_piece(data)
            if not piece:
                return
            super().data_received(piece)
        if data and not self.transport.is_closing():
            super().data_received(data)

    def _head_piece(self, data: bytes) -> tuple[bytes, bytes]:
        """The part of `data` the parser may see while the head stays within the limits (usually all of
        it), and the rest; nothing when the head has passed them (then refused)."""
        limit = self.limits.max_bytes
        line = 0  # bytes of `data` that belong to the request line
        if not self._line_done:
            end = data.find(b"\n") + 1
            self._line_done = end > 0
            line = end or len(data)
            self._line_bytes += line
            if self._line_bytes > limit:
                self._refuse(Reason.URL_TOO_LONG, f"its request line exceeds {limit // 1024} KiB")
                return b"", b""
        headers, room = len(data) - line, limit - self._header_bytes
        if headers and room <= 0:  # the limit was reached and the head goes on
            self._refuse(Reason.HEADERS_TOO_LARGE, f"its headers exceed {limit // 1024} KiB")
            return b"", b""
        cut = line + min(headers, room)
        self._header_bytes += cut - line
        return data[:cut], data[cut:]

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_deadline()
        # A request is under way: the idle timer re-armed after a drained body must not close it.
        self._unset_keepalive_if_required()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._next_head()
        if self._draining is not None:
            # The rest of a body answered early is in and thrown away: the parser is in step again, and
            # the answer promised keep-alive (a client reuses the connection at once; closed now, its
            # next request would fail), so the connection is idle like any other.
            self._draining.cancel()
            self._draining = None
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        # The answer is whole: out now, not after what the app does next (logs, metrics, audit).
        self.gathered.flush()
        super().on_response_complete()
        if not self._in_head and not self.transport.is_closing():
            # Answered before its body ended (a refusal, MLflow lost mid-upload): the rest is read and
            # thrown away so that the client gets to read the answer, but for the head timeout at most;
            # then the connection closes (a lingering close). Unbounded, a byte now and then would hold
            # it for ever.
            self._draining = self.loop.call_later(self.limits.timeout, self.transport.close)

    def _arm_deadline(self) -> None:
        self._disarm_deadline()
        self._deadline = self.loop.call_later(self.limits.timeout, self._deadline_passed)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refuse(
                Reason.HEADER_TIMEOUT, f"its headers did not arrive within {self.limits.timeout:g} s"
            )

    def _refuse(self, reason: Reason, problem: str) -> None:
        setting = "HOKUSAI_HEADER_TIMEOUT" if reason is Reason.HEADER_TIMEOUT else "HOKUSAI_MAX_HEADER_KB"
        refusal = Refusal(reason, f" refused the request: {problem} ({setting}).")
        log.info("closed a connection from %s:%s: %s", *(self.client or ("?", "?")), refusal.message)
        body = refusal.body()
        self.transport.write(
            b"".join(
                [
                    STATUS_LINE[refusal.http_status],
                    b"content-type: application/json\r\n",
                    b"%s: %s\r\n" % ORIGIN_HEADER,
                    b"content-length: %d\r\n" % len(body),
                    b"connection: close\r\n\r\n",
                    body,
                ]
            )
        )
        self.transport.close()
