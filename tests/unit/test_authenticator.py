"""Key checks: cached in-process, one lookup for concurrent checks, revocation seen from another process."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from hokusai_registry.auth.authenticator import Authenticator
from hokusai_registry.auth.local_keys import LocalKeys
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy import keys
from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyRecord, KeyStore


class CountingStore(KeyStore):
    """The real SQLite store, counting how often the gateway asks it."""

    lookups = 0

    def get(self, key_id: str) -> KeyRecord | None:
        self.lookups += 1
        return super().get(key_id)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    store = CountingStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.migrate()
    return store


def run(coroutine: object) -> object:
    return asyncio.run(coroutine)  # type: ignore[arg-type]


def test_known_key_is_checked_once_then_served_from_memory(store: CountingStore) -> None:
    record, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)

    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=60), cache_ttl=60)
        await auth.start()
        for _ in range(100):
            identity = await auth.authenticate(key)
            assert identity.key_id == record.key_id and identity.scopes == DEFAULT_SCOPES
        await auth.stop()

    run(scenario())
    assert store.lookups == 1


def test_concurrent_checks_of_one_key_share_one_lookup(store: CountingStore) -> None:
    _, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)

    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=60), cache_ttl=60)
        await auth.start()
        results = await asyncio.gather(*(auth.authenticate(key) for _ in range(50)))
        assert len({r.key_id for r in results}) == 1
        await auth.stop()

    run(scenario())
    assert store.lookups == 1


def test_unknown_keys_are_refused_and_briefly_remembered(store: CountingStore) -> None:
    unknown = keys.generate("live").text

    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=60), cache_ttl=60)
        await auth.start()
        for _ in range(20):
            with pytest.raises(Refusal, match="not recognised"):
                await auth.authenticate(unknown)
        await auth.stop()

    run(scenario())
    assert store.lookups == 1


def test_malformed_keys_never_reach_the_store(store: CountingStore) -> None:
    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=60), cache_ttl=60)
        await auth.start()
        with pytest.raises(Refusal, match="malformed"):
            await auth.authenticate("hk_live_nope")
        await auth.stop()

    run(scenario())
    assert store.lookups == 0


def test_revocation_by_another_process_drops_the_cached_check(store: CountingStore, tmp_path: Path) -> None:
    record, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    other_process = KeyStore(store.url)  # e.g. `hokusai-registry keys revoke`

    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=0.05, last_used_interval=60), cache_ttl=3600)
        await auth.start()
        await auth.authenticate(key)
        await asyncio.to_thread(other_process.revoke, record.key_id)
        for _ in range(200):  # bounded wait for the revision watcher, not a timing assertion
            try:
                await auth.authenticate(key)
            except Refusal as error:
                assert error.code == "UNAUTHENTICATED" and "revoked" in error.message
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("revoked key still accepted")
        await auth.stop()

    run(scenario())


def test_expired_key_is_refused_and_says_so(store: CountingStore) -> None:
    import datetime as dt

    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    record, key = store.create("old", environment="live", scopes=DEFAULT_SCOPES, expires_at=past)

    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=60), cache_ttl=60)
        await auth.start()
        with pytest.raises(Refusal) as raised:
            await auth.authenticate(key)
        assert raised.value.code == "UNAUTHENTICATED" and raised.value.reason.value == "expired"
        assert f"{record.key_id} expired on" in raised.value.message
        await auth.stop()

    run(scenario())


def test_store_failure_is_503_not_401(store: CountingStore) -> None:
    _, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)

    class BrokenStore(KeyStore):
        def get(self, key_id: str) -> KeyRecord | None:
            raise OSError("disk gone")

    async def scenario() -> None:
        auth = Authenticator(
            LocalKeys(BrokenStore(store.url), poll_interval=60, last_used_interval=60), cache_ttl=60
        )
        await auth.start()
        with pytest.raises(Refusal) as raised:
            await auth.authenticate(key)
        assert raised.value.code == "TEMPORARILY_UNAVAILABLE" and raised.value.http_status == 503
        await auth.stop()

    run(scenario())


class TouchCountingStore(CountingStore):
    touches: list[dict[str, object]]

    def touch(self, used: dict[str, dt.datetime]) -> None:
        self.touches.append(dict(used))
        super().touch(used)


def test_last_use_is_written_in_one_batch_not_per_request(tmp_path: Path) -> None:
    store = TouchCountingStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.touches = []
    store.migrate()
    first, first_key = store.create("a", environment="live", scopes=DEFAULT_SCOPES)
    second, second_key = store.create("b", environment="live", scopes=DEFAULT_SCOPES)
    idle, _ = store.create("c", environment="live", scopes=DEFAULT_SCOPES)
    before = dt.datetime.now(dt.UTC)

    async def scenario() -> None:
        auth = Authenticator(LocalKeys(store, poll_interval=60, last_used_interval=3600), cache_ttl=60)
        await auth.start()
        for _ in range(100):
            await auth.authenticate(first_key)
            await auth.authenticate(second_key)
        await auth.stop()  # the final flush

    run(scenario())
    assert len(store.touches) == 1 and set(store.touches[0]) == {first.key_id, second.key_id}
    assert store.get(first.key_id).last_used_at >= before - dt.timedelta(seconds=1)  # type: ignore[union-attr,operator]
    assert store.get(idle.key_id).last_used_at is None  # type: ignore[union-attr]
    # An older time never overwrites a newer one (another gateway's).
    store.touch({first.key_id: before - dt.timedelta(days=1)})
    assert store.get(first.key_id).last_used_at >= before - dt.timedelta(seconds=1)  # type: ignore[union-attr,operator]
