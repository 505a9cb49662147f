"""The key store: API key records in a SQL database (SQLite by default, any SQLAlchemy URL).

Synchronous on purpose: the CLI calls it directly and the gateway calls it from a worker thread, so
one implementation serves both and nothing blocks the event loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from hokusai_registry.policy import keys
from hokusai_registry.policy.scopes import expand
from hokusai_registry.store.schema import api_keys, key_store_state, ui_sessions, users

ADMIN_SCOPES = expand("admin")
# KeyRecord.purpose: a key its single-sign-on user made for themselves, or the one behind a browser session
# that began at the identity provider.
SELF_SERVICE = "self"
SIGN_IN = "sign-in"
DEFAULT_SCOPES = expand("write")


class KeyNotFound(LookupError):
    pass


class KeyNameTaken(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    name: str
    environment: str
    scopes: tuple[str, ...]
    secret_hash: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    expires_at: dt.datetime | None = None
    owner: str | None = None
    service_ids: tuple[str, ...] = ()  # empty: valid for any service
    rate_limit_per_minute: int | None = None  # None: the gateway's default
    rate_limit_per_hour: int | None = None
    last_used_at: dt.datetime | None = None
    sso_user_id: str | None = None  # the single-sign-on user it belongs to (None: issued by an admin)
    purpose: str | None = None  # None: issued by an admin; SELF_SERVICE or SIGN_IN (see schema.py)
    # Of its single-sign-on user, read with the key (`get`): what the user may do now, and whether they
    # are disabled. None and False for other keys, and in lists.
    user_scopes: tuple[str, ...] | None = None
    user_disabled: bool = False

    @property
    def user_id(self) -> str:
        """Who requests with this key act as: the owner, or the key's name when it has none."""
        return self.owner or self.name

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        environment=row.environment,
        scopes=tuple(row.scopes.split()),
        secret_hash=row.secret_hash,
        created_at=as_utc(row.created_at),
        revoked_at=as_utc(row.revoked_at) if row.revoked_at else None,
        expires_at=as_utc(row.expires_at) if row.expires_at else None,
        owner=row.owner,
        service_ids=tuple(row.service_ids.split()) if row.service_ids else (),
        rate_limit_per_minute=row.rate_limit_per_minute,
        rate_limit_per_hour=row.rate_limit_per_hour,
        last_used_at=as_utc(row.last_used_at) if row.last_used_at else None,
        sso_user_id=row.sso_user_id,
        purpose=row.purpose,
    )


def as_utc(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True)
    database = sa.engine.make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        # WAL lets the gateway read while the CLI writes.
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


class StoreFileMissing(OSError):
    """The SQLite key store file is gone from its path."""


class KeyStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)
        database = sa.engine.make_url(url).database if url.startswith("sqlite") else None
        self._file = Path(database) if database and database != ":memory:" else None
        self._file_identity: tuple[int, int] | None = None

    def _same_file(self) -> None:
        """Open connections keep reading a SQLite file that was deleted or replaced (e.g. restored from a
        backup): notice either before using them. Missing → unavailable; replaced → reconnect."""
        if self._file is None:
            return
        try:
            stat = self._file.stat()
        except FileNotFoundError:
            raise StoreFileMissing(f"the key store file {self._file} is missing") from None
        identity = (stat.st_dev, stat.st_ino)
        if self._file_identity is not None and identity != self._file_identity:
            self.engine.dispose()
        self._file_identity = identity

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        with self.engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def schema_revisions(self) -> tuple[str | None, str]:
        """The schema revision the database is at (None: empty) and the one this version needs."""
        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        with self.engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
        return current, str(head)

    def close(self) -> None:
        self.engine.dispose()

    def _bump_revision(self, connection: sa.Connection) -> None:
        connection.execute(
            key_store_state.update()
            .where(key_store_state.c.id == 1)
            .values(revision=key_store_state.c.revision + 1)
        )

    @staticmethod
    def _end_sessions(connection: sa.Connection, key_id: str) -> None:
        # A revoked key's browser sessions end with it, on every gateway at once.
        connection.execute(ui_sessions.delete().where(ui_sessions.c.key_id == key_id))

    def revoke_all_of(self, connection: sa.Connection, sso_user_id: str) -> int:
        """Revoke every active key of a single-sign-on user and end their sessions (in the caller's
        transaction); the number of keys revoked."""
        owned = sa.select(api_keys.c.key_id).where(api_keys.c.sso_user_id == sso_user_id)
        connection.execute(ui_sessions.delete().where(ui_sessions.c.key_id.in_(owned)))
        revoked = connection.execute(
            api_keys.update()
            .where(api_keys.c.sso_user_id == sso_user_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=_now())
        ).rowcount
        self._bump_revision(connection)
        return int(revoked)

    def create(
        self,
        name: str,
        *,
        environment: keys.Environment,
        scopes: tuple[str, ...],
        expires_at: dt.datetime | None = None,
        owner: str | None = None,
        service_ids: tuple[str, ...] = (),
        rate_limit_per_minute: int | None = None,
        rate_limit_per_hour: int | None = None,
        sso_user_id: str | None = None,
        purpose: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """Create a key; the plaintext is returned once and never stored."""
        name = name.strip()
        if not name:
            raise ValueError("a key needs a name (--name)")
        generated = keys.generate(environment)
        record = KeyRecord(
            key_id=generated.key_id,
            name=name,
            environment=environment,
            scopes=scopes,
            secret_hash=keys.digest(generated.text),
            created_at=_now(),
            revoked_at=None,
            expires_at=expires_at,
            owner=owner,
            service_ids=service_ids,
            rate_limit_per_minute=rate_limit_per_minute,
            rate_limit_per_hour=rate_limit_per_hour,
            sso_user_id=sso_user_id,
            purpose=purpose,
        )
        with self.engine.begin() as connection:
            self._insert(connection, record)
            self._bump_revision(connection)
        return record, generated.text

    def create_sign_in_key(
        self,
        name: str,
        *,
        environment: keys.Environment,
        scopes: tuple[str, ...],
        expires_at: dt.datetime,
        owner: str,
        sso_user_id: str,
    ) -> tuple[KeyRecord, str]:
        """The key behind a new single-sign-on session. The user's dead sign-in keys (expired, or
        revoked with their user) are deleted here: they stood for sessions that are gone."""
        with self.engine.begin() as connection:
            connection.execute(
                api_keys.delete().where(
                    api_keys.c.sso_user_id == sso_user_id,
                    api_keys.c.purpose == SIGN_IN,
                    sa.or_(api_keys.c.revoked_at.is_not(None), api_keys.c.expires_at <= _now()),
                )
            )
        return self.create(
            name,
            environment=environment,
            scopes=scopes,
            expires_at=expires_at,
            owner=owner,
            sso_user_id=sso_user_id,
            purpose=SIGN_IN,
        )

    def end_sign_in_key(self, key_id: str) -> None:
        """A signed-out session's key: deleted, with any session it still has, on every gateway within
        the revision poll. Keys of any other purpose are left alone."""
        with self.engine.begin() as connection:
            deleted = connection.execute(
                api_keys.delete().where(api_keys.c.key_id == key_id, api_keys.c.purpose == SIGN_IN)
            ).rowcount
            if deleted:
                self._end_sessions(connection, key_id)
                self._bump_revision(connection)

    def _insert(self, connection: sa.Connection, record: KeyRecord) -> None:
        taken = connection.execute(
            sa.select(api_keys.c.key_id).where(
                api_keys.c.name == record.name, api_keys.c.revoked_at.is_(None)
            )
        ).first()
        if taken:
            raise KeyNameTaken(
                f"an active key named {record.name!r} already exists (id {taken.key_id}); "
                "revoke it or choose another name"
            )
        connection.execute(
            api_keys.insert().values(
                key_id=record.key_id,
                name=record.name,
                environment=record.environment,
                scopes=" ".join(record.scopes),
                secret_hash=record.secret_hash,
                created_at=record.created_at,
                revoked_at=None,
                expires_at=record.expires_at,
                owner=record.owner,
                service_ids=" ".join(record.service_ids) or None,
                rate_limit_per_minute=record.rate_limit_per_minute,
                rate_limit_per_hour=record.rate_limit_per_hour,
                sso_user_id=record.sso_user_id,
                purpose=record.purpose,
            )
        )

    def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """Revoke a key and create its successor (same name, owner, scopes, limits and expiry) in one
        transaction: either both happen or neither."""
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
            if row is None:
                raise KeyNotFound(f"no key with id {key_id!r} (see `hokusai-registry keys list`)")
            old = _record(row)
            if old.revoked_at is not None:
                raise KeyNameTaken(f"key {key_id} is revoked; create a new key instead of rotating it")
            connection.execute(api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=_now()))
            self._end_sessions(connection, key_id)
            environment: keys.Environment = "test" if old.environment == "test" else "live"
            generated = keys.generate(environment)
            record = replace(
                old,
                key_id=generated.key_id,
                secret_hash=keys.digest(generated.text),
                created_at=_now(),
                last_used_at=None,
            )
            self._insert(connection, record)
            self._bump_revision(connection)
        return record, generated.text

    def touch(self, used: dict[str, dt.datetime]) -> None:
        """Record when keys were last used (a batch from a gateway). Not a key change: no revision bump,
        and an older time never overwrites a newer one written by another gateway."""
        if not used:
            return
        column = api_keys.c.last_used_at
        statement = (
            api_keys.update()
            .where(api_keys.c.key_id == sa.bindparam("id"))
            .where(sa.or_(column.is_(None), column < sa.bindparam("used")))
            .values(last_used_at=sa.bindparam("used"))
        )
        with self.engine.begin() as connection:
            connection.execute(statement, [{"id": key_id, "used": when} for key_id, when in used.items()])

    def get(self, key_id: str) -> KeyRecord | None:
        """The key, with its single-sign-on user's current scopes and state (one query)."""
        self._same_file()
        query = (
            sa.select(
                api_keys, users.c.scopes.label("user_scopes"), users.c.disabled_at.label("user_disabled_at")
            )
            .select_from(api_keys.outerjoin(users, users.c.id == api_keys.c.sso_user_id))
            .where(api_keys.c.key_id == key_id)
        )
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        record = _record(row)
        if row.user_scopes is None:
            return record
        return replace(
            record, user_scopes=tuple(row.user_scopes.split()), user_disabled=row.user_disabled_at is not None
        )

    def list(self, *, sso_user_id: str | None = None) -> list[KeyRecord]:
        """Every managed key, oldest first, or only those of one single-sign-on user. Never the keys
        behind sign-in sessions: nobody holds them, and each sign-in adds one."""
        query = sa.select(api_keys).where(sa.or_(api_keys.c.purpose.is_(None), api_keys.c.purpose != SIGN_IN))
        if sso_user_id is not None:
            query = query.where(api_keys.c.sso_user_id == sso_user_id)
        with self.engine.connect() as connection:
            rows = connection.execute(query.order_by(api_keys.c.created_at)).all()
        return [_record(row) for row in rows]

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(api_keys)).scalar_one())

    def revoke(self, key_id: str) -> KeyRecord:
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
            if row is None:
                raise KeyNotFound(f"no key with id {key_id!r} (see `hokusai-registry keys list`)")
            if row.revoked_at is None:
                connection.execute(
                    api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=_now())
                )
                self._end_sessions(connection, key_id)
                self._bump_revision(connection)
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one()
        return _record(row)

    def gateway_mark(self) -> str:
        with self.engine.connect() as connection:
            return str(
                connection.execute(
                    sa.select(key_store_state.c.gateway_mark).where(key_store_state.c.id == 1)
                ).scalar_one()
            )

    def revision(self) -> int:
        self._same_file()
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(key_store_state.c.revision).where(key_store_state.c.id == 1)
                ).scalar_one()
            )
