"""Rate limits counted in a real Redis (shared by gateways), and counting locally when Redis is down:
these talk to servers, so they are not unit tests (and the unit layer never imports redis)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from hokusai_registry.auth.rate_limits import Exceeded
from tests.helpers import TcpServer, free_port
from tests.unit.test_ratelimit import allowed_then_refused, checks, fail, key, limits, run

# Redis that is down, then Redis that answers.


@pytest.fixture(params=["refused", "silent"])
def dead_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Redis that is not there: a closed loopback port, or a server that accepts and never answers. The
    URL has a password, which must never reach the log."""
    if request.param == "refused":
        yield f"redis://user:s3cret@127.0.0.1:{free_port()}/0"
        return
    server = TcpServer()
    try:
        yield f"redis://user:s3cret@127.0.0.1:{server.port}/0"
    finally:
        server.stop()


def test_unreachable_redis_counts_locally(dead_redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tuple[list[Exceeded | None], float | None]:
        rate_limits = limits(per_minute=3, auth_failures=1, redis_url=dead_redis_url)
        results = await checks(rate_limits, key(), 5)
        await fail(rate_limits, "10.0.0.1", 2)
        return results, rate_limits.blocked("10.0.0.1")

    with caplog.at_level(logging.WARNING, logger="hokusai_registry.auth.rate_limits"):
        results, blocked = run(scenario())
    assert allowed_then_refused(results)[0] == 3
    assert blocked is not None
    # One warning, then local counting for a while instead of asking the dead Redis on every request.
    warnings = [r.getMessage() for r in caplog.records if "unavailable for rate limits" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "counting locally" in warnings[0]
    assert "s3cret" not in caplog.text


def test_instances_sharing_redis_count_together(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Two gateways' limits on one Redis: 3 per minute in all, not 3 each."""

    async def scenario() -> list[Exceeded | None]:
        first, second = limits(per_minute=3, redis_url=redis_url), limits(per_minute=3, redis_url=redis_url)
        identity = key()
        return [
            await first.check_key(identity),
            await second.check_key(identity),
            await first.check_key(identity),
            await second.check_key(identity),
            await first.check_key(identity),
        ]

    before = time.time()
    with caplog.at_level(logging.WARNING, logger="hokusai_registry.auth.rate_limits"):
        results = run(scenario())
    assert "unavailable" not in caplog.text  # counted in Redis, not by the local fallback
    allowed, refusal = allowed_then_refused(results)
    assert (allowed, refusal.limit, refusal.per) == (3, 3, "minute")
    assert before <= refusal.reset_at <= time.time() + 60


def test_failed_authentications_are_counted_across_instances(redis_url: str) -> None:
    async def scenario() -> float | None:
        first, second = (limits(auth_failures=3, redis_url=redis_url) for _ in range(2))
        client = f"test-{uuid.uuid4().hex}"
        await fail(first, client, 3)
        await fail(second, client, 1)  # the 4th failure from this address in all
        return second.blocked(client)

    assert run(scenario()) is not None


def test_key_checks_at_once_on_two_instances_are_counted_atomically(redis_url: str) -> None:
    """200 checks from one address started at once, half on each instance: exactly the limit go ahead
    (Redis counts them in one script each), and those counted back free their slot again."""

    async def scenario() -> tuple[list[float | None], list[float | None]]:
        first, second = (limits(auth_failures=30, redis_url=redis_url) for _ in range(2))
        client = f"test-{uuid.uuid4().hex}"
        started = await asyncio.gather(*(rate.start_check(client) for rate in [first, second] * 100))
        passed = [rate for rate, wait in zip([first, second] * 100, started, strict=True) if wait is None]
        for rate in passed[:10]:  # ten of them were valid keys
            await rate.end_check(client, failed=False)
        again = [await first.start_check(client) for _ in range(11)]
        return started, again

    started, again = run(scenario())
    assert sum(wait is None for wait in started) == 30
    assert [wait is None for wait in again] == [True] * 10 + [False]
