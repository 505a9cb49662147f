"""GatheredWrites on a real event loop, in front of a transport that records what reaches it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable

from hokusai_registry.run.gathered_writes import GATHER_LIMIT, GatheredWrites


class RecordingTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, pieces: Iterable[bytes | bytearray | memoryview]) -> None:
        self.calls.append(("writelines", [bytes(piece) for piece in pieces]))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", []))
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


async def turn() -> None:
    """Lets the loop run what is ready now, the gathered writes' flush among it."""
    await asyncio.sleep(0)


def run(test: Callable[[], Coroutine[None, None, None]]) -> None:
    asyncio.run(test())


def test_head_and_body_written_in_one_step_go_out_in_one_call() -> None:
    async def test() -> None:
        transport = RecordingTransport()
        gathered = GatheredWrites(transport, asyncio.get_running_loop())
        gathered.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        gathered.write(b"ok")
        assert transport.calls == [] and gathered.get_write_buffer_size() == 40
        await turn()
        assert transport.calls == [("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"])]
        assert gathered.get_write_buffer_size() == 0

    run(test)


def test_a_head_whose_body_is_not_ready_goes_out_alone_when_the_loop_turns() -> None:
    async def test() -> None:
        transport = RecordingTransport()
        gathered = GatheredWrites(transport, asyncio.get_running_loop())
        gathered.write(b"head")
        await turn()
        assert transport.calls == [("write", [b"head"])]
        gathered.write(b"body")
        await turn()
        assert transport.calls == [("write", [b"head"]), ("write", [b"body"])]

    run(test)


def test_writes_reaching_the_limit_go_out_at_once_with_what_was_held() -> None:
    async def test() -> None:
        transport = RecordingTransport()
        gathered = GatheredWrites(transport, asyncio.get_running_loop())
        chunk = b"x" * GATHER_LIMIT
        gathered.write(b"head")
        gathered.write(chunk)
        assert transport.calls == [("writelines", [b"head", chunk])]
        gathered.write(chunk)  # nothing held: as it is, not copied
        assert transport.calls[-1] == ("write", [chunk])
        await turn()
        assert len(transport.calls) == 2

    run(test)


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def test() -> None:
        loop = asyncio.get_running_loop()
        closed, aborted = RecordingTransport(), RecordingTransport()
        for transport in (closed, aborted):
            gathered = GatheredWrites(transport, loop)
            gathered.write(b"refusal")
            gathered.close() if transport is closed else gathered.abort()
        await turn()
        assert closed.calls == [("write", [b"refusal"]), ("close", [])]
        assert aborted.calls == [("abort", [])]

    run(test)


def test_nothing_is_written_to_a_transport_that_is_closing() -> None:
    async def test() -> None:
        transport = RecordingTransport()
        gathered = GatheredWrites(transport, asyncio.get_running_loop())
        gathered.write(b"late")
        transport.closing = True  # the client went away meanwhile
        await turn()
        assert transport.calls == []
        gathered.write(b"")
        await turn()
        assert transport.calls == []

    run(test)
