"""A client connection's writes gathered into one system call per turn of the event loop.

uvicorn writes a response's head when the app sends `http.response.start` and its body when the app
sends `http.response.body`, and uvloop sends each write at once: two `write()` calls, and often two
segments, for every small answer. Holding small writes until the answer is whole (the protocol calls
`flush()` then, before the app goes on to log it), until 64 KiB have gathered, or until the loop has run
what is ready, sends head and body together; a head whose body is not ready yet (a download still waiting
for MLflow) goes out a moment later on its own, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

# A write this large goes out at once, with whatever was held: gathering saves a system call per
# write, which only matters while the writes are small.
GATHER_LIMIT = 64 * 1024


class GatheredWrites(asyncio.Transport):
    """Stands in for a client's transport; everything but writing and closing goes to it unchanged."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray] = []
        self._held_bytes = 0
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._held.append(bytes(data) if isinstance(data, memoryview) else data)
        self._held_bytes += len(data)
        if self._held_bytes >= GATHER_LIMIT:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        held, self._held, self._held_bytes = self._held, [], 0
        if not held or self._transport.is_closing():
            return
        if len(held) == 1:
            self._transport.write(held[0])
        else:
            self._transport.writelines(held)  # uvloop: one writev(), nothing copied

    def writelines(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        for piece in pieces:
            self.write(piece)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()
