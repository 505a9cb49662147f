"""Request limits per key, and a throttle on repeated authentication failures per client address.

Counting is done by the `limits` library (sliding-window counters): in memory, or in Redis when
`REDIS_URL` is set so all replicas share one count. If Redis stops answering, each process counts on
its own for BREAKER_SECONDS before trying Redis again: limits loosen (by up to the number of
replicas) but nothing is refused because Redis is down.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.core.net import redact_url
from hokusai_registry.core.refusals import Reason, Refusal

log = logging.getLogger(__name__)

BREAKER_SECONDS = 5.0
REDIS_TIMEOUT = 1.0
REDIS_CONNECTIONS = 8
REDIS_POOL_WAIT = 2.0  # seconds a request waits for a free Redis connection before counting locally
_WINDOWS = ((RateLimitItemPerMinute, "minute"), (RateLimitItemPerHour, "hour"))


@dataclass(frozen=True, slots=True)
class Exceeded:
    """A refused request: which limit, and when its window frees up (Unix time)."""

    limit: int
    per: str
    reset_at: float

    def error(self, detail: str) -> Refusal:
        retry_after = max(1, math.ceil(self.reset_at - time.time()))
        return Refusal(
            Reason.RATE_LIMITED,
            detail,
            [
                (b"retry-after", str(retry_after).encode()),
                (b"x-ratelimit-limit", str(self.limit).encode()),
                (b"x-ratelimit-remaining", b"0"),
                (b"x-ratelimit-reset", str(retry_after).encode()),
            ],
        )


class RateLimits:
    def __init__(
        self, *, per_minute: int, per_hour: int, auth_failures_per_minute: int, redis_url: str | None
    ) -> None:
        self._defaults = (per_minute, per_hour)
        self._auth_failures = auth_failures_per_minute
        self._local = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._shared: SlidingWindowCounterRateLimiter | None = None
        self._redis_display = redact_url(redis_url) if redis_url else ""
        if redis_url:
            from redis.asyncio import BlockingConnectionPool  # only a gateway that counts in Redis loads it

            # limits names a Unix socket `redis+unix://`.
            scheme, rest = redis_url.split("://", 1)
            storage: Storage = RedisStorage(
                f"async+{'redis+unix' if scheme == 'unix' else scheme}://{rest}",
                wrap_exceptions=True,
                implementation="redispy",
                # A burst (200 guesses at once) waits for a few connections instead of opening one per
                # request, which took longer than REDIS_TIMEOUT and dropped the count to local.
                connection_pool=BlockingConnectionPool.from_url(  # type: ignore[arg-type]  # passed on to redis
                    redis_url,
                    max_connections=REDIS_CONNECTIONS,
                    timeout=REDIS_POOL_WAIT,
                    socket_timeout=REDIS_TIMEOUT,
                    socket_connect_timeout=REDIS_TIMEOUT,
                ),
            )
            self._shared = SlidingWindowCounterRateLimiter(storage)
        self._shared_down_until = 0.0
        self._items: dict[tuple[int, int], RateLimitItem] = {}
        # Addresses refused for failing to authenticate, until when (monotonic): checked per request
        # without touching storage.
        self._blocked: dict[str, float] = {}
        # Key checks under way in this process, per address (counted by `start_check`).
        self._checking: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return any(self._defaults)

    def _item(self, window: int, amount: int) -> RateLimitItem:
        item = self._items.get((window, amount))
        if item is None:
            item = self._items[(window, amount)] = _WINDOWS[window][0](amount)
        return item

    def _strategy(self) -> SlidingWindowCounterRateLimiter:
        if self._shared is not None and time.monotonic() >= self._shared_down_until:
            return self._shared
        return self._local

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, float]:
        """Counts one request; whether it is within the limit, and when the window resets."""
        strategy = self._strategy()
        try:
            allowed = await strategy.hit(item, *identifiers)
            reset = 0.0 if allowed else (await strategy.get_window_stats(item, *identifiers)).reset_time
        except Exception as exc:  # limits wraps every Redis failure in StorageError
            if strategy is self._local:
                raise
            self._shared_down_until = time.monotonic() + BREAKER_SECONDS
            log.warning(
                "Redis at %s is unavailable for rate limits (%s); counting locally for %g s",
                self._redis_display,
                type(exc).__name__,
                BREAKER_SECONDS,
            )
            return await self._hit(item, *identifiers)
        return allowed, reset

    async def check_key(self, identity: Identity) -> Exceeded | None:
        """Counts a request with this key against its limits; the exceeded limit, if any."""
        limits = (
            identity.rate_limit_per_minute
            if identity.rate_limit_per_minute is not None
            else self._defaults[0],
            identity.rate_limit_per_hour if identity.rate_limit_per_hour is not None else self._defaults[1],
        )
        for window, amount in enumerate(limits):
            if amount <= 0:
                continue
            allowed, reset = await self._hit(self._item(window, amount), "key", identity.key_id)
            if not allowed:
                return Exceeded(amount, _WINDOWS[window][1], reset)
        return None

    def blocked(self, client: str) -> float | None:
        """Seconds until this address may try again, if it is throttled for failed authentications."""
        if not self._blocked:
            return None
        until = self._blocked.get(client)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._blocked[client]
            return None
        return left

    async def auth_failed(self, client: str) -> None:
        """Counts a failed authentication that needed no key check (credentials sent so that no key
        could be read); the one that reaches the limit blocks the address."""
        if self._auth_failures <= 0:
            return
        item = self._item(0, self._auth_failures)
        allowed, reset = await self._hit(item, "auth-failure", client)
        if allowed:
            allowed, reset = await self._has_room(item, "auth-failure", client)
        if not allowed:
            self._block(client, reset)

    async def start_check(self, client: str) -> float | None:
        """Counts a key check from this address as a failure before it starts (one atomic hit, in Redis
        too), so that however many arrive at once, at most `auth_failures_per_minute` are checked per
        window; None if this one may go ahead (then `end_check` follows), else the seconds to wait.
        Over the limit with none of this address's checks under way here, the count is failures: the
        address is blocked for the rest of the window. Otherwise checks that may yet be counted back
        fill it, and only this one is refused."""
        if self._auth_failures <= 0:
            return None
        allowed, reset = await self._hit(self._item(0, self._auth_failures), "auth-failure", client)
        if allowed:
            self._checking[client] = self._checking.get(client, 0) + 1
            return None
        if self._checking.get(client):
            return 1.0
        return self._block(client, reset)

    async def end_check(self, client: str, *, failed: bool) -> None:
        """The check counted by `start_check` is over: a failure stays counted; a valid key (or a check
        that could not decide) is counted back, so users sharing an address with nobody guessing never
        use up its allowance."""
        if self._auth_failures <= 0:
            return
        left = self._checking.pop(client, 1) - 1
        if left:
            self._checking[client] = left
        if failed:
            return
        try:
            # A negative hit takes one off the window's count, atomically (tests/contract pin this).
            await self._strategy().hit(self._item(0, self._auth_failures), "auth-failure", client, cost=-1)
        except Exception:  # Redis went away meanwhile: the count lapses with its window
            log.debug("could not count back a key check from %s", client)

    def _block(self, client: str, reset: float) -> float:
        if len(self._blocked) > 100_000:  # bounded under a distributed flood
            self._blocked.clear()
        wait = max(1.0, reset - time.time())
        self._blocked[client] = time.monotonic() + wait
        return wait

    async def _has_room(self, item: RateLimitItem, *identifiers: str) -> tuple[bool, float]:
        """Whether one more hit would be allowed, and when the window resets."""
        strategy = (
            self._shared if self._shared is not None and time.monotonic() >= self._shared_down_until else None
        )
        try:
            stats = await (strategy or self._local).get_window_stats(item, *identifiers)
        except Exception:  # Redis went away between the two calls: the next hit will fall back
            return True, 0.0
        return stats.remaining > 0, stats.reset_time
