"""The key store on SQLite: only hashes stored, revision bumps, names, revocation."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hokusai_registry.policy import keys
from hokusai_registry.store.key_store import ADMIN_SCOPES, DEFAULT_SCOPES, KeyNameTaken, KeyNotFound, KeyStore


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    store = KeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.migrate()
    store.migrate()  # idempotent
    return store


def test_create_stores_only_the_hash(store: KeyStore, tmp_path: Path) -> None:
    record, key = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    assert keys.parse(key).key_id == record.key_id
    assert record.secret_hash == keys.digest(key)
    secret = key.split("_")[3]
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("keys.db*"))
    assert secret.encode() not in raw and key.encode() not in raw
    assert store.get(record.key_id) == record


def test_list_and_count(store: KeyStore) -> None:
    store.create("a", environment="live", scopes=ADMIN_SCOPES)
    store.create("b", environment="test", scopes=DEFAULT_SCOPES)
    assert [r.name for r in store.list()] == ["a", "b"]
    assert store.count() == 2
    assert "admin" in store.list()[0].scopes and "admin" not in store.list()[1].scopes


def test_active_names_are_unique(store: KeyStore) -> None:
    record, _ = store.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    with pytest.raises(KeyNameTaken, match=record.key_id):
        store.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    store.revoke(record.key_id)
    store.create("ci", environment="live", scopes=DEFAULT_SCOPES)


def test_empty_name_is_refused(store: KeyStore) -> None:
    with pytest.raises(ValueError, match="name"):
        store.create("  ", environment="live", scopes=DEFAULT_SCOPES)


def test_every_change_bumps_the_revision(store: KeyStore) -> None:
    start = store.revision()
    record, _ = store.create("a", environment="live", scopes=DEFAULT_SCOPES)
    assert store.revision() == start + 1
    revoked = store.revoke(record.key_id)
    assert revoked.revoked_at is not None
    assert store.revision() == start + 2
    store.revoke(record.key_id)  # already revoked: no change
    assert store.revision() == start + 2


def test_revoking_an_unknown_key(store: KeyStore) -> None:
    with pytest.raises(KeyNotFound, match="keys list"):
        store.revoke("AAAAAAAAAAAA")


def test_schema_is_versioned_by_alembic(store: KeyStore, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "keys.db") as connection:
        assert connection.execute("select version_num from alembic_version").fetchall() == [("0007",)]


def test_keys_made_before_expiry_existed_survive_the_upgrade(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    import hokusai_registry.store.key_store as store_module

    old = KeyStore(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(Path(store_module.__file__).parent / "migrations"))
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
        connection.exec_driver_sql(
            "insert into api_keys (key_id, name, environment, scopes, secret_hash, created_at) "
            "values ('AAAAAAAAAAAA', 'step-1', 'live', 'read write', 'ab', '2026-11-01 00:00:00')"
        )
    old.migrate()
    record = old.get("AAAAAAAAAAAA")
    assert record is not None and record.expires_at is None and record.scopes == ("read", "write")


def test_expiry_is_stored(store: KeyStore) -> None:
    import datetime as dt

    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    record, _ = store.create("temp", environment="live", scopes=DEFAULT_SCOPES, expires_at=when)
    assert store.get(record.key_id).expires_at == when  # type: ignore[union-attr]


def test_rotate_revokes_and_replaces(store: KeyStore) -> None:
    import datetime as dt

    when = dt.datetime(2031, 5, 1, tzinfo=dt.UTC)
    old, old_key = store.create("trainer", environment="test", scopes=("read",), expires_at=when)
    new, new_key = store.rotate(old.key_id)
    assert new_key != old_key and new.key_id != old.key_id
    assert (new.name, new.environment, new.scopes, new.expires_at) == ("trainer", "test", ("read",), when)
    assert store.get(old.key_id).revoked_at is not None  # type: ignore[union-attr]
    with pytest.raises(KeyNameTaken, match="revoked"):
        store.rotate(old.key_id)
    with pytest.raises(KeyNotFound):
        store.rotate("BBBBBBBBBBBB")
