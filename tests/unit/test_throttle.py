"""The failure throttle under concurrency (issue 15, defect 13): key checks are counted before they
start, so at most the limit of guesses per window reach the key store however many arrive at once;
valid keys are counted back, and concurrent requests with one key are one check.

On the real SQLite key store (its lookups run in a worker thread, so checks really overlap), counting in
memory; tests/contract/test_redis_rate_limits.py does the same in Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hokusai_registry.auth.authenticator import Authenticator, Identity
from hokusai_registry.auth.local_keys import LocalKeys
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.auth.throttle import Guard
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy import keys
from hokusai_registry.store.key_store import DEFAULT_SCOPES
from tests.helpers import clear_of_minute_edge, mistyped
from tests.unit.test_authenticator import CountingStore

T = TypeVar("T")
CLIENT = "203.0.113.9"


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.migrate()
    clear_of_minute_edge()
    return store


def guarded(store: CountingStore, limit: int, redis_url: str | None = None) -> tuple[Guard, Authenticator]:
    rate_limits = RateLimits(per_minute=0, per_hour=0, auth_failures_per_minute=limit, redis_url=redis_url)
    authenticator = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=60), cache_ttl=60)
    return Guard(rate_limits), authenticator


async def attempt(guard: Guard, authenticator: Authenticator, key: str, client: str = CLIENT) -> str:
    """One request's key check as the gateway makes it: the outcome's reason, or "ok"."""
    try:
        await guard.authenticate(authenticator, key, client)
    except Refusal as error:
        await guard.refused(client, "GET", "/x", keys.hint(key), error)
        return str(error.reason.value)
    return "ok"


def at_once(guard: Guard, authenticator: Authenticator, presented: list[str]) -> Counter[str]:
    async def scenario() -> list[str]:
        return await asyncio.gather(*(attempt(guard, authenticator, key) for key in presented))

    return Counter(run(scenario()))


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def unknown(count: int) -> list[str]:
    return [keys.generate("live").text for _ in range(count)]


def test_200_guesses_at_once_check_exactly_the_limit(store: CountingStore) -> None:
    guard, authenticator = guarded(store, limit=30)
    outcomes = at_once(guard, authenticator, unknown(200))
    assert outcomes == Counter({"unknown": 30, "throttled": 170})
    assert store.lookups == 30


def test_each_guess_sent_twice_at_once_is_still_one_count(store: CountingStore) -> None:
    guard, authenticator = guarded(store, limit=10)
    guesses = unknown(100)
    outcomes = at_once(guard, authenticator, guesses + guesses)
    assert store.lookups == 10
    # A copy that joins a check gets its 401; the others are throttled.
    assert 10 <= outcomes["unknown"] <= 20 and outcomes["unknown"] + outcomes["throttled"] == 200


def test_one_valid_key_in_many_requests_at_once_is_one_check(store: CountingStore) -> None:
    """A UI loading, or a client right after a restart, with a key not checked yet: the limit of 3 is
    not used up, so the address still has its 3 failures afterwards."""
    _, key = store.create("ui", environment="live", scopes=DEFAULT_SCOPES)
    guard, authenticator = guarded(store, limit=3)
    assert at_once(guard, authenticator, [key] * 50) == Counter({"ok": 50})
    assert store.lookups == 1
    assert at_once(guard, authenticator, unknown(5)) == Counter({"unknown": 3, "throttled": 2})


def test_valid_keys_are_counted_back(store: CountingStore) -> None:
    """Users sharing an address (a NAT) with nobody guessing never use up its allowance."""
    valid = [store.create(f"user-{n}", environment="live", scopes=DEFAULT_SCOPES)[1] for n in range(10)]
    guard, authenticator = guarded(store, limit=3)

    async def scenario() -> list[str]:
        return [await attempt(guard, authenticator, key) for key in [*valid, *unknown(4)]]

    assert run(scenario()) == ["ok"] * 10 + ["unknown"] * 3 + ["throttled"]


def test_a_checked_key_passes_from_a_throttled_address(store: CountingStore) -> None:
    _, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    _, fresh = store.create("fresh", environment="live", scopes=DEFAULT_SCOPES)
    guard, authenticator = guarded(store, limit=2)

    async def scenario() -> list[str]:
        first = [await attempt(guard, authenticator, key)]
        guesses = [await attempt(guard, authenticator, guess) for guess in unknown(3)]
        after = [await attempt(guard, authenticator, k) for k in (key, fresh)]
        elsewhere = await attempt(guard, authenticator, fresh, client="198.51.100.1")
        return [*first, *guesses, *after, elsewhere]

    assert run(scenario()) == ["ok", "unknown", "unknown", "throttled", "ok", "throttled", "ok"]


def test_malformed_and_repeated_guesses_count_once_each(store: CountingStore) -> None:
    """Counted before the check, never a second time when refused."""
    guard, authenticator = guarded(store, limit=4)
    guess = unknown(1)[0]

    async def scenario() -> list[str]:
        presented = [guess, guess, "hk_live_nonsense", mistyped(guess), guess]
        return [await attempt(guard, authenticator, key) for key in presented]

    assert run(scenario()) == ["unknown", "unknown", "malformed", "malformed", "throttled"]


def test_a_check_the_source_cannot_decide_is_counted_back(store: CountingStore) -> None:
    class Down(CountingStore):
        def get(self, key_id: str) -> Any:
            raise RuntimeError("database gone")

    guard, authenticator = guarded(Down(store.url), limit=2)

    async def scenario() -> list[str]:
        return [await attempt(guard, authenticator, key) for key in unknown(5)]

    assert run(scenario()) == ["store_unavailable"] * 5
    assert guard.rate_limits.blocked(CLIENT) is None


def test_more_checks_at_once_than_the_limit_block_nobody(store: CountingStore) -> None:
    """Valid keys not checked yet, more at once than the limit (users behind one NAT after a key change
    emptied the cache): the excess is refused while the others are under way (Retry-After 1 s), and the
    address is not blocked, since they are all counted back."""
    valid = [store.create(f"user-{n}", environment="live", scopes=DEFAULT_SCOPES)[1] for n in range(8)]
    guard, authenticator = guarded(store, limit=3)
    outcomes = at_once(guard, authenticator, valid)
    assert outcomes == Counter({"ok": 3, "throttled": 5})
    assert guard.rate_limits.blocked(CLIENT) is None
    assert at_once(guard, authenticator, valid[3:6]) == Counter({"ok": 3})


def test_without_a_limit_nothing_is_counted(store: CountingStore) -> None:
    guard, authenticator = guarded(store, limit=0)
    assert at_once(guard, authenticator, unknown(50)) == Counter({"unknown": 50})


def test_waiters_on_a_shared_check_get_its_result(store: CountingStore) -> None:
    record, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    guard, authenticator = guarded(store, limit=1)

    async def scenario() -> list[Identity]:
        return await asyncio.gather(*(guard.authenticate(authenticator, key, CLIENT) for _ in range(5)))

    assert {identity.key_id for identity in run(scenario())} == {record.key_id}
