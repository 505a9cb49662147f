"""Browser sessions in the key store's database (synchronous, like the key store; the gateway calls it
from a worker thread). Shared by every gateway on the same database, so a session works on any replica
and a logout on one ends it on all."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hokusai_registry.store.key_store import as_utc
from hokusai_registry.store.schema import ui_sessions


@dataclass(frozen=True, slots=True)
class SessionRow:
    id_hash: str
    key_id: str
    sealed_key: str
    created_at: dt.datetime
    last_seen_at: dt.datetime
    expires_at: dt.datetime
    sealed_id_token: str | None = None


def _row(row: Any) -> SessionRow:
    return SessionRow(
        id_hash=row.id_hash,
        key_id=row.key_id,
        sealed_key=row.sealed_key,
        created_at=as_utc(row.created_at),
        last_seen_at=as_utc(row.last_seen_at),
        expires_at=as_utc(row.expires_at),
        sealed_id_token=row.sealed_id_token,
    )


def is_live(row: SessionRow, now: dt.datetime, idle_timeout: dt.timedelta) -> bool:
    """Not past its absolute end and used within the idle timeout (pure)."""
    return now < row.expires_at and now - row.last_seen_at < idle_timeout


class SessionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, row: SessionRow, idle_timeout: dt.timedelta) -> None:
        """Store a new session; dead sessions are swept here, so the table stays as small as the number
        of people signed in."""
        with self.engine.begin() as connection:
            connection.execute(
                ui_sessions.delete().where(
                    sa.or_(
                        ui_sessions.c.expires_at <= row.created_at,
                        ui_sessions.c.last_seen_at <= row.created_at - idle_timeout,
                    )
                )
            )
            connection.execute(
                ui_sessions.insert().values(
                    id_hash=row.id_hash,
                    key_id=row.key_id,
                    sealed_key=row.sealed_key,
                    created_at=row.created_at,
                    last_seen_at=row.last_seen_at,
                    expires_at=row.expires_at,
                    sealed_id_token=row.sealed_id_token,
                )
            )

    def use(
        self, id_hash: str, now: dt.datetime, idle_timeout: dt.timedelta, touch_after: dt.timedelta
    ) -> SessionRow | None:
        """The live session with this id hash, its last use moved to `now` when older than
        `touch_after`; None (and the row deleted) when it is unknown or has expired."""
        with self.engine.connect() as connection:
            found = connection.execute(sa.select(ui_sessions).where(ui_sessions.c.id_hash == id_hash)).first()
        if found is None:
            return None
        row = _row(found)
        if not is_live(row, now, idle_timeout):
            self.end(id_hash)
            return None
        if now - row.last_seen_at >= touch_after:
            with self.engine.begin() as connection:
                connection.execute(
                    ui_sessions.update().where(ui_sessions.c.id_hash == id_hash).values(last_seen_at=now)
                )
        return row

    def end(self, id_hash: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(ui_sessions.delete().where(ui_sessions.c.id_hash == id_hash))

    def count(self) -> int:
        with self.engine.connect() as connection:
            return int(connection.execute(sa.select(sa.func.count()).select_from(ui_sessions)).scalar_one())
