"""Browser sessions: the key sealed under the session id, CSRF tokens, the session table on SQLite, and the
`Sessions` service over it."""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import hashlib
import secrets
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import assume, given
from hypothesis import strategies as st

from hokusai_registry.auth.sealing import id_hash, seal, unseal
from hokusai_registry.auth.sessions import Session, Sessions, csrf_token, csrf_valid, well_formed
from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyStore
from hokusai_registry.store.schema import ui_sessions
from hokusai_registry.store.session_store import SessionRow, SessionStore, is_live

URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
T0 = dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
TICK = dt.timedelta(microseconds=1)

session_ids = st.binary(min_size=32, max_size=32).map(
    lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
)


def new_id() -> str:
    return secrets.token_urlsafe(32)


# Sealing


@given(st.text(), session_ids)
def test_sealing_round_trips(secret: str, session_id: str) -> None:
    assert unseal(seal(secret, session_id), session_id) == secret


@given(st.text(min_size=1), session_ids, session_ids)
def test_unseal_under_another_id_fails(secret: str, session_id: str, other: str) -> None:
    assume(other != session_id)
    assert unseal(seal(secret, session_id), other) is None


def test_sealed_text_hides_the_key_and_differs_each_time() -> None:
    key = "hk_live_ABCDEFGHIJKL_" + "s" * 40
    session_id = new_id()
    first, second = seal(key, session_id), seal(key, session_id)
    assert first != second  # a fresh nonce each time
    for sealed in (first, second):
        assert key not in sealed and "s" * 8 not in sealed and session_id not in sealed
        assert key.encode() not in base64.urlsafe_b64decode(sealed)
        assert unseal(sealed, session_id) == key


def decoded(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text.encode("ascii"))
    except (binascii.Error, ValueError):
        return None


@given(st.data())
def test_any_altered_byte_is_refused(data: st.DataObject) -> None:
    session_id = new_id()
    key = data.draw(st.text(min_size=1, max_size=80))
    sealed = seal(key, session_id)
    index = data.draw(st.integers(0, len(sealed) - 1))
    replacement = data.draw(st.sampled_from(URLSAFE + "="))
    assume(replacement != sealed[index])
    altered = sealed[:index] + replacement + sealed[index + 1 :]
    if decoded(altered) == decoded(sealed):
        # Only base64's unused low bits changed: the same bytes, so the same (authentic) key.
        assert unseal(altered, session_id) == key
    else:
        assert unseal(altered, session_id) is None


@pytest.mark.parametrize("index", [0, 5, 16, 30, -5])
def test_flipped_character_is_refused(index: int) -> None:
    session_id = new_id()
    sealed = seal("hk_live_ABCDEFGHIJKL_secretsecretsecret", session_id)
    position = index % len(sealed)
    if sealed[position] == "=":
        position -= 2
    flipped = sealed[:position] + ("A" if sealed[position] != "A" else "B") + sealed[position + 1 :]
    assert decoded(flipped) != decoded(sealed)
    assert unseal(flipped, session_id) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda s: s[:-1],
        lambda s: s[:-4],
        lambda s: s[:16],
        lambda s: s[:10],
        lambda s: "",
        lambda s: "not base64 at all!",
        lambda s: "!!!!",
        lambda s: "====",
        lambda s: base64.urlsafe_b64encode(base64.urlsafe_b64decode(s) + b"\x00").decode(),
        lambda s: base64.urlsafe_b64encode(base64.urlsafe_b64decode(s)[:-1]).decode(),
        lambda s: "é" + s,
        lambda s: base64.urlsafe_b64encode(b"\x00" * 12 + b"short").decode(),
    ],
)
def test_mangled_sealed_text_is_refused(mangle: Any) -> None:
    session_id = new_id()
    assert unseal(mangle(seal("hk_live_ABCDEFGHIJKL_secret", session_id)), session_id) is None


def test_id_hash() -> None:
    session_id = new_id()
    hashed = id_hash(session_id)
    assert len(hashed) == 64 and set(hashed) <= set("0123456789abcdef")
    assert hashed != session_id and session_id not in hashed
    assert hashed == hashlib.sha256(session_id.encode()).hexdigest()
    assert id_hash(session_id) == hashed
    assert id_hash(new_id()) != hashed


# CSRF tokens and session ids


def test_csrf_token_checks() -> None:
    session_id, other = new_id(), new_id()
    token = csrf_token(session_id)
    assert csrf_valid(session_id, token)
    assert csrf_token(session_id) == token  # derived, not stored
    assert token != csrf_token(other)
    assert not csrf_valid(session_id, csrf_token(other))
    assert not csrf_valid(other, token)
    assert not csrf_valid(session_id, "")
    assert not csrf_valid(session_id, token[:-1])
    assert not csrf_valid(session_id, token + "0")
    assert not csrf_valid(session_id, token.upper())
    assert not csrf_valid(session_id, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not csrf_valid(session_id, session_id)
    assert session_id not in token


@given(session_ids, st.text(alphabet="0123456789abcdefABCDEF", max_size=70))
def test_csrf_only_the_own_token_is_valid(session_id: str, token: str) -> None:
    assert csrf_valid(session_id, token) is (token == csrf_token(session_id))


def test_csrf_non_ascii_token_is_invalid_not_an_error() -> None:
    assert not csrf_valid(new_id(), "é")


def test_csrf_with_a_non_ascii_session_id_is_invalid_not_an_error() -> None:
    assert not csrf_valid("éabc", "0" * 64)


def test_token_urlsafe_ids_are_well_formed() -> None:
    for _ in range(50):
        assert well_formed(secrets.token_urlsafe(32))


@given(session_ids)
def test_every_256_bit_id_is_well_formed(session_id: str) -> None:
    assert well_formed(session_id)


@pytest.mark.parametrize(
    "session_id",
    [
        "",
        "a" * 42,
        "a" * 44,
        "TF06t37CaX9hNuf_R-Crjg",  # token_urlsafe(16), fixed: every xdist worker collects the same ids
        "OzwcuQBJi9EqYOPsXsgUG44HkGL-N2qzUjjEY-29NeEl-KI2mM2LHt6KzcwMmf1J",  # token_urlsafe(48)
        "a" * 42 + "+",
        "a" * 42 + "/",
        "a" * 42 + "=",
        "a" * 42 + " ",
        "a" * 42 + "é",
        "a" * 43 + "\n",
        "\n" + "a" * 43,
        "a" * 21 + "." + "a" * 21,
    ],
)
def test_other_ids_are_not_well_formed(session_id: str) -> None:
    assert not well_formed(session_id)


@given(session_ids, st.integers(0, 42), st.characters().filter(lambda c: c not in URLSAFE))
def test_one_foreign_character_makes_an_id_malformed(session_id: str, index: int, char: str) -> None:
    assert not well_formed(session_id[:index] + char + session_id[index + 1 :])


# Liveness


def row_at(
    created: dt.datetime = T0,
    *,
    last_seen: dt.datetime | None = None,
    expires: dt.datetime | None = None,
    key_id: str = "KEYID0000001",
    session_id: str | None = None,
) -> SessionRow:
    session_id = session_id or new_id()
    return SessionRow(
        id_hash=id_hash(session_id),
        key_id=key_id,
        sealed_key=seal("hk_live_x", session_id),
        created_at=created,
        last_seen_at=last_seen or created,
        expires_at=expires or created + 8 * HOUR,
    )


def test_is_live_at_the_absolute_end() -> None:
    row = row_at(expires=T0 + HOUR)
    assert is_live(row, T0 + HOUR - TICK, 2 * HOUR)
    assert not is_live(row, T0 + HOUR, 2 * HOUR)
    assert not is_live(row, T0 + 2 * HOUR, 10 * HOUR)


def test_is_live_at_the_idle_timeout() -> None:
    row = row_at(last_seen=T0)
    assert is_live(row, T0 + HOUR - TICK, HOUR)
    assert not is_live(row, T0 + HOUR, HOUR)
    assert not is_live(row, T0 + 2 * HOUR, HOUR)
    assert is_live(row, T0, HOUR)


# The session table


@pytest.fixture
def keystore(tmp_path: Path) -> KeyStore:
    store = KeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.migrate()
    return store


@pytest.fixture
def table(keystore: KeyStore) -> SessionStore:
    return SessionStore(keystore.engine)


def stored(table: SessionStore) -> dict[str, Any]:
    """The table's rows by id hash, as stored."""
    with table.engine.connect() as connection:
        return {row.id_hash: row for row in connection.execute(sa.select(ui_sessions))}


def last_seen(table: SessionStore, hashed: str) -> dt.datetime:
    value: dt.datetime = stored(table)[hashed].last_seen_at
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def test_add_use_end(table: SessionStore) -> None:
    row = row_at()
    table.add(row, HOUR)
    assert table.count() == 1
    assert table.use(row.id_hash, T0 + MINUTE, HOUR, MINUTE) == row
    assert table.use(id_hash(new_id()), T0 + MINUTE, HOUR, MINUTE) is None
    table.end(row.id_hash)
    assert table.count() == 0
    assert table.use(row.id_hash, T0 + MINUTE, HOUR, MINUTE) is None
    table.end(row.id_hash)  # ending twice is harmless


def test_use_deletes_an_expired_row(table: SessionStore) -> None:
    row, other = row_at(expires=T0 + HOUR), row_at(expires=T0 + 2 * HOUR)
    table.add(row, 10 * HOUR)
    table.add(other, 10 * HOUR)
    assert table.use(row.id_hash, T0 + HOUR - TICK, 10 * HOUR, HOUR) == row
    assert table.use(row.id_hash, T0 + HOUR, 10 * HOUR, HOUR) is None
    assert set(stored(table)) == {other.id_hash}


def test_use_deletes_an_idle_row(table: SessionStore) -> None:
    row, other = row_at(), row_at()
    table.add(row, HOUR)
    table.add(other, HOUR)
    assert table.use(row.id_hash, T0 + HOUR, HOUR, 10 * HOUR) is None
    assert set(stored(table)) == {other.id_hash}


def test_use_moves_last_use_only_after_touch_after(table: SessionStore) -> None:
    row = row_at()
    table.add(row, HOUR)
    table.use(row.id_hash, T0 + MINUTE - TICK, HOUR, MINUTE)
    assert last_seen(table, row.id_hash) == T0
    found = table.use(row.id_hash, T0 + MINUTE, HOUR, MINUTE)
    assert found is not None and found.id_hash == row.id_hash
    assert last_seen(table, row.id_hash) == T0 + MINUTE
    table.use(row.id_hash, T0 + 2 * MINUTE - TICK, HOUR, MINUTE)
    assert last_seen(table, row.id_hash) == T0 + MINUTE


def test_use_keeps_a_session_alive_past_the_idle_timeout(table: SessionStore) -> None:
    row = row_at()
    table.add(row, HOUR)
    for minutes in (50, 100, 150):  # each use within the idle timeout of the last
        assert table.use(row.id_hash, T0 + minutes * MINUTE, HOUR, MINUTE) is not None
    assert table.use(row.id_hash, T0 + 210 * MINUTE, HOUR, MINUTE) is None


def test_add_sweeps_dead_rows(table: SessionStore) -> None:
    now = T0 + 10 * HOUR
    expired = row_at(T0, last_seen=now - MINUTE, expires=now)
    idle = row_at(T0, last_seen=now - HOUR, expires=now + HOUR)
    live = row_at(T0, last_seen=now - HOUR + TICK, expires=now + TICK)
    for row in (expired, idle, live):
        table.add(row, HOUR)
    assert table.count() == 3
    new = row_at(now)
    table.add(new, HOUR)
    assert set(stored(table)) == {live.id_hash, new.id_hash}


def test_the_table_holds_neither_ids_nor_keys(keystore: KeyStore, tmp_path: Path) -> None:
    sessions = Sessions(SessionStore(keystore.engine), idle_timeout=3600, max_age=3600)
    secret = secrets.token_urlsafe(30)  # may hold "_": taken whole, not split out of the key
    key = "hk_live_ABCDEFGHIJKL_" + secret
    session = asyncio.run(sessions.start(key, "ABCDEFGHIJKL", None))
    keystore.close()
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("keys.db*"))
    assert id_hash(session.id).encode() in raw
    assert session.id.encode() not in raw
    assert key.encode() not in raw and secret.encode() not in raw


# Sessions end with their key


def sessions_of(table: SessionStore, key_id: str) -> int:
    return sum(1 for row in stored(table).values() if row.key_id == key_id)


def test_revoke_ends_the_keys_sessions_only(keystore: KeyStore, table: SessionStore) -> None:
    a, _ = keystore.create("a", environment="live", scopes=DEFAULT_SCOPES)
    b, _ = keystore.create("b", environment="live", scopes=DEFAULT_SCOPES)
    now = dt.datetime.now(dt.UTC)
    for key_id in (a.key_id, a.key_id, b.key_id):
        table.add(row_at(now, key_id=key_id), HOUR)
    keystore.revoke(a.key_id)
    assert sessions_of(table, a.key_id) == 0
    assert sessions_of(table, b.key_id) == 1
    keystore.revoke(a.key_id)  # already revoked: nothing else goes
    assert sessions_of(table, b.key_id) == 1


def test_rotate_ends_the_old_keys_sessions_only(keystore: KeyStore, table: SessionStore) -> None:
    a, _ = keystore.create("a", environment="live", scopes=DEFAULT_SCOPES)
    b, _ = keystore.create("b", environment="live", scopes=DEFAULT_SCOPES)
    now = dt.datetime.now(dt.UTC)
    for key_id in (a.key_id, b.key_id, b.key_id):
        table.add(row_at(now, key_id=key_id), HOUR)
    successor, _ = keystore.rotate(a.key_id)
    assert successor.key_id != a.key_id
    assert sessions_of(table, a.key_id) == 0
    assert sessions_of(table, b.key_id) == 2
    table.add(row_at(now, key_id=successor.key_id), HOUR)
    keystore.rotate(b.key_id)
    assert sessions_of(table, b.key_id) == 0
    assert sessions_of(table, successor.key_id) == 1


# The Sessions service


def service(keystore: KeyStore, *, idle_timeout: float = 3600, max_age: float = 8 * 3600) -> Sessions:
    return Sessions(SessionStore(keystore.engine), idle_timeout=idle_timeout, max_age=max_age)


def test_an_id_token_is_kept_sealed_with_the_session(keystore: KeyStore) -> None:
    sessions = service(keystore)
    started = asyncio.run(
        sessions.start("hk_live_KEY000000001_secret", "KEY000000001", None, id_token="eyJ.id.token")
    )
    found = asyncio.run(sessions.find(started.id))
    assert found is not None and found.id_token == "eyJ.id.token"
    with keystore.engine.connect() as connection:
        stored = connection.execute(sa.text("select sealed_id_token from ui_sessions")).scalar_one()
    assert "eyJ.id.token" not in stored


def test_start_then_find(keystore: KeyStore) -> None:
    sessions = service(keystore)
    started = asyncio.run(sessions.start("hk_live_KEY000000001_secret", "KEY000000001", None))
    assert well_formed(started.id)
    assert (started.key, started.key_id) == ("hk_live_KEY000000001_secret", "KEY000000001")
    found = asyncio.run(sessions.find(started.id))
    assert found == Session(
        started.id, started.key, started.key_id, started.expires_at, started.started_at, id_token=None
    )
    other = asyncio.run(sessions.start("hk_live_KEY000000002_secret", "KEY000000002", None))
    assert other.id != started.id
    found_other = asyncio.run(sessions.find(other.id))
    assert found_other is not None and found_other.key == "hk_live_KEY000000002_secret"


def test_session_ends_at_max_age(keystore: KeyStore) -> None:
    sessions = service(keystore, max_age=600)
    before = dt.datetime.now(dt.UTC)
    started = asyncio.run(sessions.start("hk_live_x", "KEY000000001", before + HOUR))
    after = dt.datetime.now(dt.UTC)
    assert before + dt.timedelta(seconds=600) <= started.expires_at <= after + dt.timedelta(seconds=600)


def test_session_ends_with_its_key(keystore: KeyStore) -> None:
    sessions = service(keystore, max_age=8 * 3600)
    key_expires = dt.datetime.now(dt.UTC) + HOUR
    started = asyncio.run(sessions.start("hk_live_x", "KEY000000001", key_expires))
    assert started.expires_at == key_expires
    found = asyncio.run(sessions.find(started.id))
    assert found is not None and found.expires_at == key_expires


@pytest.mark.parametrize(
    "session_id",
    [
        "",
        "short",
        "!" * 43,
        "3okzYvZVZVkFOuxKpWatZzvSguG0CIp-DfxtMb23N10a",
        "é" * 43,
        "vpXcSpuj_wFe_RTMnYFD0__hfQo6O84-Gno5EsCF5T=",
    ],
)
def test_find_and_end_of_a_malformed_id_do_not_touch_the_table(
    keystore: KeyStore, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = service(keystore)

    def untouchable(*_: object) -> None:
        raise AssertionError("the session table was queried")

    monkeypatch.setattr(sessions.store, "use", untouchable)
    monkeypatch.setattr(sessions.store, "end", untouchable)
    assert asyncio.run(sessions.find(session_id)) is None
    asyncio.run(sessions.end(session_id))


def test_end_then_find(keystore: KeyStore) -> None:
    sessions = service(keystore)
    kept = asyncio.run(sessions.start("hk_live_kept", "KEY000000001", None))
    ended = asyncio.run(sessions.start("hk_live_ended", "KEY000000001", None))
    asyncio.run(sessions.end(ended.id))
    assert asyncio.run(sessions.find(ended.id)) is None
    assert asyncio.run(sessions.find(kept.id)) is not None
    assert sessions.store.count() == 1


def test_find_of_an_unknown_well_formed_id(keystore: KeyStore) -> None:
    sessions = service(keystore)
    asyncio.run(sessions.start("hk_live_x", "KEY000000001", None))
    assert asyncio.run(sessions.find(new_id())) is None


def set_column(keystore: KeyStore, session_id: str, **values: Any) -> None:
    with keystore.engine.begin() as connection:
        connection.execute(
            ui_sessions.update().where(ui_sessions.c.id_hash == id_hash(session_id)).values(**values)
        )


def test_a_row_sealed_under_another_id_is_refused(keystore: KeyStore) -> None:
    sessions = service(keystore)
    mine = asyncio.run(sessions.start("hk_live_mine", "KEY000000001", None))
    theirs = asyncio.run(sessions.start("hk_live_theirs", "KEY000000002", None))
    their_sealed = stored(sessions.store)[id_hash(theirs.id)].sealed_key
    set_column(keystore, mine.id, sealed_key=their_sealed)  # another session's key swapped into my row
    assert asyncio.run(sessions.find(mine.id)) is None
    set_column(keystore, mine.id, sealed_key=seal("hk_live_mine", new_id()))
    assert asyncio.run(sessions.find(mine.id)) is None
    set_column(keystore, mine.id, sealed_key=seal("hk_live_mine", mine.id))
    found = asyncio.run(sessions.find(mine.id))
    assert found is not None and found.key == "hk_live_mine"


def test_find_refuses_and_deletes_dead_sessions(keystore: KeyStore) -> None:
    sessions = service(keystore, idle_timeout=3600)
    idle = asyncio.run(sessions.start("hk_live_idle", "KEY000000001", None))
    expired = asyncio.run(sessions.start("hk_live_expired", "KEY000000001", None))
    live = asyncio.run(sessions.start("hk_live_live", "KEY000000001", None))
    now = dt.datetime.now(dt.UTC)
    set_column(keystore, idle.id, last_seen_at=now - 2 * HOUR)
    set_column(keystore, expired.id, expires_at=now - MINUTE)
    assert asyncio.run(sessions.find(idle.id)) is None
    assert asyncio.run(sessions.find(expired.id)) is None
    assert asyncio.run(sessions.find(live.id)) is not None
    assert set(stored(sessions.store)) == {id_hash(live.id)}


def test_find_after_the_key_is_revoked(keystore: KeyStore) -> None:
    record, key = keystore.create("ui", environment="live", scopes=DEFAULT_SCOPES)
    sessions = service(keystore)
    started = asyncio.run(sessions.start(key, record.key_id, record.expires_at))
    assert asyncio.run(sessions.find(started.id)) is not None
    keystore.revoke(record.key_id)
    assert asyncio.run(sessions.find(started.id)) is None
