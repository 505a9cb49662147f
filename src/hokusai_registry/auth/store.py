"""The key store: API key records in a SQL database (SQLite by default, any SQLAlchemy URL).

Synchronous on purpose: the CLI calls it directly and the gateway calls it from a worker thread, so
one implementation serves both and nothing blocks the event loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

from hokusai_registry.auth import keys
from hokusai_registry.auth.schema import api_keys, key_store_state
from hokusai_registry.auth.scopes import expand

ADMIN_SCOPES = expand("admin")
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

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        key_id=row.key_id,
        name=row.name,
        environment=row.environment,
        scopes=tuple(row.scopes.split()),
        secret_hash=row.secret_hash,
        created_at=_aware(row.created_at),
        revoked_at=_aware(row.revoked_at) if row.revoked_at else None,
        expires_at=_aware(row.expires_at) if row.expires_at else None,
    )


def _aware(value: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


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


class KeyStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _engine(url)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()

    def _bump_revision(self, connection: sa.Connection) -> None:
        connection.execute(
            key_store_state.update()
            .where(key_store_state.c.id == 1)
            .values(revision=key_store_state.c.revision + 1)
        )

    def create(
        self,
        name: str,
        *,
        environment: keys.Environment,
        scopes: tuple[str, ...],
        expires_at: dt.datetime | None = None,
    ) -> tuple[KeyRecord, str]:
        """Create a key; the plaintext is returned once and never stored."""
        name = name.strip()
        if not name:
            raise ValueError("a key needs a name (--name)")
        generated = keys.generate(environment)
        with self.engine.begin() as connection:
            taken = connection.execute(
                sa.select(api_keys.c.key_id).where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
            ).first()
            if taken:
                raise KeyNameTaken(
                    f"an active key named {name!r} already exists (id {taken.key_id}); "
                    "revoke it or choose another name"
                )
            record = KeyRecord(
                key_id=generated.key_id,
                name=name,
                environment=environment,
                scopes=scopes,
                secret_hash=keys.digest(generated.text),
                created_at=_now(),
                revoked_at=None,
                expires_at=expires_at,
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
                    expires_at=expires_at,
                )
            )
            self._bump_revision(connection)
        return record, generated.text

    def rotate(self, key_id: str) -> tuple[KeyRecord, str]:
        """Revoke a key and create its successor (same name, environment, scopes and expiry) at once."""
        old = self.get(key_id)
        if old is None:
            raise KeyNotFound(f"no key with id {key_id!r} (see `hokusai-registry keys list`)")
        if old.revoked_at is not None:
            raise KeyNameTaken(f"key {key_id} is revoked; create a new key instead of rotating it")
        self.revoke(key_id)
        environment: keys.Environment = "test" if old.environment == "test" else "live"
        return self.create(old.name, environment=environment, scopes=old.scopes, expires_at=old.expires_at)

    def get(self, key_id: str) -> KeyRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        return _record(row) if row else None

    def list(self) -> list[KeyRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).all()
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
                self._bump_revision(connection)
            row = connection.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one()
        return _record(row)

    def revision(self) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    sa.select(key_store_state.c.revision).where(key_store_state.c.id == 1)
                ).scalar_one()
            )
