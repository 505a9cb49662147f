"""RateLimits: per-key limits (the key's own or the gateway's default, 0 = unlimited), the throttle on
failed authentications per client address, the 429 it turns into, and counting in Redis: shared by
instances when Redis answers, local (and never an exception) when it does not.

In-memory windows are aligned to the clock minute, so tests that count to a limit first step clear of
a minute's last seconds (`clear_of_minute_edge`); Redis windows start at the first hit.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.auth.rate_limits import Exceeded, RateLimits
from hokusai_registry.core.refusals import Refusal
from tests.helpers import clear_of_minute_edge

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def key(per_minute: int | None = None, per_hour: int | None = None) -> Identity:
    """A key with a fresh id, so no count (in memory or left in Redis) is ever shared between tests."""
    return Identity(
        key_id=uuid.uuid4().hex[:12],
        name="test",
        scopes=("read",),
        rate_limit_per_minute=per_minute,
        rate_limit_per_hour=per_hour,
    )


def limits(
    per_minute: int = 0, per_hour: int = 0, auth_failures: int = 0, redis_url: str | None = None
) -> RateLimits:
    return RateLimits(
        per_minute=per_minute, per_hour=per_hour, auth_failures_per_minute=auth_failures, redis_url=redis_url
    )


async def checks(rate_limits: RateLimits, identity: Identity, count: int) -> list[Exceeded | None]:
    return [await rate_limits.check_key(identity) for _ in range(count)]


def allowed_then_refused(results: list[Exceeded | None]) -> tuple[int, Exceeded]:
    """How many requests passed before the first refusal, and that refusal; every later one is refused."""
    allowed = next((i for i, result in enumerate(results) if result is not None), len(results))
    assert allowed < len(results), f"all {len(results)} requests were allowed"
    assert all(result is not None for result in results[allowed:]), results
    refusal = results[allowed]
    assert refusal is not None
    return allowed, refusal


@pytest.fixture(autouse=True)
def _whole_window() -> None:
    clear_of_minute_edge()


# Per-key limits, counted in memory.


def test_n_requests_per_minute_then_exceeded() -> None:
    before = time.time()
    allowed, refusal = allowed_then_refused(run(checks(limits(per_minute=3), key(), 6)))
    assert allowed == 3
    assert (refusal.limit, refusal.per) == (3, "minute")
    assert before < refusal.reset_at <= time.time() + 60


def test_per_hour_limit_names_the_hour() -> None:
    allowed, refusal = allowed_then_refused(run(checks(limits(per_minute=5, per_hour=2), key(), 4)))
    assert allowed == 2
    assert (refusal.limit, refusal.per) == (2, "hour")


def test_keys_are_counted_separately() -> None:
    async def scenario() -> tuple[list[Exceeded | None], list[Exceeded | None]]:
        rate_limits = limits(per_minute=2)
        return await checks(rate_limits, key(), 3), await checks(rate_limits, key(), 2)

    first, second = run(scenario())
    assert allowed_then_refused(first)[0] == 2
    assert second == [None, None]


@pytest.mark.parametrize(("default", "own"), [(1, 3), (5, 3)], ids=["own-higher", "own-lower"])
def test_key_own_limit_beats_the_default(default: int, own: int) -> None:
    allowed, refusal = allowed_then_refused(run(checks(limits(per_minute=default), key(per_minute=own), 7)))
    assert (allowed, refusal.limit) == (own, own)


def test_zero_on_the_key_means_unlimited_despite_a_default() -> None:
    rate_limits = limits(per_minute=1, per_hour=1)
    assert run(checks(rate_limits, key(per_minute=0, per_hour=0), 20)) == [None] * 20


def test_zero_defaults_mean_unlimited() -> None:
    rate_limits = limits()
    assert not rate_limits.active
    assert run(checks(rate_limits, key(), 100)) == [None] * 100
    assert limits(per_hour=1).active


# The throttle on failed authentications.


async def fail(rate_limits: RateLimits, client: str, times: int) -> None:
    for _ in range(times):
        await rate_limits.auth_failed(client)


def test_failures_under_the_limit_do_not_block() -> None:
    rate_limits = limits(auth_failures=3)
    run(fail(rate_limits, "10.0.0.1", 2))
    assert rate_limits.blocked("10.0.0.1") is None


def test_failures_over_the_limit_block_that_address_only() -> None:
    rate_limits = limits(auth_failures=3)
    run(fail(rate_limits, "10.0.0.1", 4))
    wait = rate_limits.blocked("10.0.0.1")
    assert wait is not None and 0 < wait <= 60
    assert rate_limits.blocked("10.0.0.2") is None


def test_exactly_limit_failures_block_the_next_request() -> None:
    rate_limits = limits(auth_failures=3)
    run(fail(rate_limits, "10.0.0.1", 3))
    assert rate_limits.blocked("10.0.0.1") is not None


def test_zero_failure_limit_disables_the_throttle() -> None:
    rate_limits = limits(auth_failures=0)
    run(fail(rate_limits, "10.0.0.1", 100))
    assert rate_limits.blocked("10.0.0.1") is None


def test_failure_counts_are_separate_from_key_counts() -> None:
    """An address's failures and a key's requests never use up each other's allowance."""

    async def scenario() -> list[Exceeded | None]:
        rate_limits = limits(per_minute=2, auth_failures=2)
        identity = key()
        await fail(rate_limits, identity.key_id, 2)
        return await checks(rate_limits, identity, 2)

    assert run(scenario()) == [None, None]


# The 429 answer.


def error_headers(error: Refusal) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in error.headers}


def limit_of(headers: dict[str, str]) -> int:
    """The number in X-RateLimit-Limit (a window suffix such as `;w=60` is allowed)."""
    return int(headers["x-ratelimit-limit"].partition(";")[0])


def test_exceeded_error_is_a_429_with_rate_limit_headers() -> None:
    error = Exceeded(limit=3, per="minute", reset_at=time.time() + 30.5).error("slow down")
    assert (error.http_status, error.code, error.reason.value, error.message) == (
        429,
        "RESOURCE_EXHAUSTED",
        "rate_limited",
        "Hokusai Registry gateway: slow down",
    )
    headers = error_headers(error)
    assert set(headers) == {"retry-after", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
    assert (headers["retry-after"], headers["x-ratelimit-remaining"], headers["x-ratelimit-reset"]) == (
        "31",
        "0",
        "31",
    )
    assert limit_of(headers) == 3


def test_exceeded_error_for_the_hour_window() -> None:
    headers = error_headers(Exceeded(limit=100, per="hour", reset_at=time.time() + 1800.5).error("x"))
    assert (limit_of(headers), headers["retry-after"]) == (100, "1801")


def test_retry_after_is_at_least_one_second() -> None:
    headers = error_headers(Exceeded(limit=1, per="minute", reset_at=time.time() - 5).error("x"))
    assert headers["retry-after"] == "1"
