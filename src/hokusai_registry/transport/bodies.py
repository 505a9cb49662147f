"""Request bodies on their way in: what each route takes (`policy/bodies.py`), and the reading of the
bodies the gateway holds whole before anything else happens.

Capped bodies (MLflow API calls, and every body of the gateway's own routes) are read whole before an
upstream connection is taken, so a client that sends its body slowly, or never, holds no connection to
MLflow. While one arrives, silence longer than the idle timeout is a 408 (and the connection is closed), and
so is an average rate below the minimum once the idle timeout has passed (Apache's mod_reqtimeout rule: a
body dripped a byte at a time would otherwise hold its share of memory for as long as it likes).
All bodies held at once share one byte budget: a body that would overrun it is refused with 503 and
`Retry-After` (the MLflow client retries), so any number of concurrent clients cannot make the gateway hold
more than the budget. Bodies are held in the pieces the server delivered them in, not joined here (the
few the gateway inspects, at most 4 MiB, are joined once more for parsing), and bytes are counted as they
arrive, so a chunked body cannot go past a limit either.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from typing import NoReturn

from hokusai_registry.core.asgi import Headers, Receive, Scope
from hokusai_registry.core.bodies import replay, size_text, with_length
from hokusai_registry.core.codings import DecodedTooLarge, Decoder
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.assertions import EMPTY_BODY, UNBOUND_BODY, digest_text
from hokusai_registry.policy.bodies import BodyRule, body_rule, request_coding
from hokusai_registry.policy.paths import Target

# Every body the gateway parses itself (admin API, key validation, sign-in and admin forms) is small.
OWN_BODY_LIMIT = 64 * 1024
_CLOSE = ((b"connection", b"close"),)


class ByteBudget:
    """Bytes of request bodies the process holds in memory, over all requests (one event loop: no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give_back(self, size: int) -> None:
        self.used -= size


class Body:
    """A request as it goes on: its scope and receive (for a body read whole, framed by its length and
    replayed from memory). `release()` when the request is over: the bytes held count until then."""

    __slots__ = ("_budget", "_held", "digest", "receive", "scope")

    def __init__(
        self, scope: Scope, receive: Receive, budget: ByteBudget | None = None, digest: str = EMPTY_BODY
    ) -> None:
        self.scope = scope
        self.receive = receive
        # What the gateway's assertion binds (`policy/assertions.py`): the digest of a body read whole.
        self.digest = digest
        self._budget = budget
        self._held = 0

    def hold(self, size: int) -> bool:
        assert self._budget is not None  # nosec B101 - only bodies being read hold bytes
        if not self._budget.take(size):
            return False
        self._held += size
        return True

    def release(self) -> None:
        if self._held and self._budget is not None:
            self._budget.give_back(self._held)
            self._held = 0

    def __enter__(self) -> Body:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _framing(headers: Headers) -> tuple[int | None, bool, list[bytes]]:
    """Declared Content-Length (None if absent), chunked framing, and the Content-Encoding values."""
    length: int | None = None
    chunked = False
    codings: list[bytes] = []
    for name, value in headers:
        if name == b"content-length" and value.strip().isdigit():
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True  # anything but plain "chunked" was refused with the head
        elif name == b"content-encoding":
            codings.append(value)
    return length, chunked, codings


class RequestBodies:
    def __init__(self, *, max_api_body: int, buffer_limit: int, idle_timeout: float, min_rate: int) -> None:
        self.max_api_body = max_api_body
        self.budget = ByteBudget(buffer_limit)
        self.idle_timeout = idle_timeout
        self.min_rate = min_rate  # bytes per second, on average, once the idle timeout has passed

    def _api_too_large(self) -> Refusal:
        return Refusal(
            Reason.BODY_TOO_LARGE,
            f"the request body is over {size_text(self.max_api_body)}, the limit for MLflow API calls "
            "(HOKUSAI_MAX_API_BODY_MB, counted after decompression; artifact uploads have none).",
        )

    async def for_mlflow(self, scope: Scope, receive: Receive, target: Target) -> Body | None:
        """The request to forward, its body checked against its route's rule; a capped body read whole.
        None when the client left while sending it."""
        length, chunked, codings = _framing(scope["headers"])
        has_body = chunked or bool(length)
        method = scope["method"]
        rule = body_rule(method, target.family, target.path)
        if not has_body:
            return Body(scope, receive)
        if rule is BodyRule.STREAMED:
            return Body(scope, receive, digest=UNBOUND_BODY)
        if rule is BodyRule.NONE:
            framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
            raise Refusal(
                Reason.BODY_NOT_ALLOWED,
                f"{method} {target.path[:200]} takes no request body, and this one has one ({framing}). "
                "Send the parameters in the query string.",
            )
        coding = request_coding(codings, target.path)
        if length is not None and length > self.max_api_body:  # coded or not: sent bytes count too
            raise self._api_too_large()
        # Decoded, or "identity": what goes on is identity-coded.
        drop = (b"content-encoding",) if codings else ()
        return await self._read(scope, receive, self.max_api_body, self._api_too_large, coding, drop)

    async def for_gateway(self, scope: Scope, receive: Receive) -> Body | None:
        """A request for one of the gateway's own routes, its body (if any) read whole: at most
        OWN_BODY_LIMIT bytes, refused at once when its Content-Length says more. None when the client
        left while sending it."""
        length, chunked, _ = _framing(scope["headers"])
        if not (chunked or length):
            return Body(scope, receive)

        def too_large() -> Refusal:
            return Refusal(
                Reason.BODY_TOO_LARGE,
                f"the request body is over {size_text(OWN_BODY_LIMIT)}, more than the gateway's own "
                "endpoints (admin API, key validation, sign-in and admin forms) take.",
            )

        if length is not None and length > OWN_BODY_LIMIT:
            raise too_large()
        return await self._read(scope, receive, OWN_BODY_LIMIT, too_large)

    async def _read(
        self,
        scope: Scope,
        receive: Receive,
        limit: int,
        too_large: Callable[[], Refusal],
        coding: str | None = None,
        drop: tuple[bytes, ...] = (),
    ) -> Body | None:
        decoder = Decoder(coding, limit) if coding else None
        body = Body(scope, receive, self.budget)
        digest = hashlib.sha256()
        pieces: list[bytes] = []
        size = 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        received = 0  # as sent: the rate is the client's, whatever the coding
        try:
            async with asyncio.timeout(self.idle_timeout) as deadline:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        body.release()
                        return None
                    data: bytes = message.get("body", b"")
                    received += len(data)
                    if received > limit:  # as sent, too: empty deflate blocks decode to nothing
                        raise too_large()
                    deadline.reschedule(
                        min(
                            loop.time() + self.idle_timeout,
                            started + self.idle_timeout + received / self.min_rate,
                        )
                    )
                    if data:
                        try:
                            decoded = decoder.decode(data) if decoder else [data]
                        except DecodedTooLarge:
                            raise too_large() from None
                        for piece in decoded:
                            size += len(piece)
                            if size > limit:
                                raise too_large()
                            if not body.hold(len(piece)):
                                self._buffer_full()
                            digest.update(piece)
                            pieces.append(piece)
                    if not message.get("more_body", False):
                        break
            if decoder is not None:
                decoder.finish()
        except TimeoutError:
            body.release()
            elapsed = loop.time() - started
            raise Refusal(
                Reason.BODY_TIMEOUT,
                f"the request body came too slowly: {received} bytes in {elapsed:.0f} s, with nothing "
                f"for up to {self.idle_timeout:g} s (HOKUSAI_BODY_IDLE_TIMEOUT) and at least "
                f"{self.min_rate >> 10} KiB/s on average after that (HOKUSAI_BODY_MIN_RATE_KB). The "
                "connection is closed.",
                _CLOSE,
            ) from None
        except BaseException:
            body.release()
            raise
        body.scope = with_length(scope, size, drop=drop)
        body.receive = replay(pieces, receive)
        body.digest = digest_text(digest.digest())
        return body

    def _buffer_full(self) -> NoReturn:
        raise Refusal(
            Reason.BODY_BUFFER_FULL,
            " holds as many request bodies in memory as it may right now "
            f"({size_text(self.budget.limit)}, HOKUSAI_BODY_BUFFER_MB). Try again in a moment.",
            ((b"retry-after", b"1"),),
        )
