"""Single-sign-on users in the key store's database (synchronous, like the key store).

A user is identified by (issuer, subject); their name, fixed when the user is created, is the owner their
requests act as. Disabling a user revokes every key they have (those behind their browser sessions
included) in the same transaction, so it takes effect on every gateway within the key-revision poll.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa

from hokusai_registry.store.key_store import KeyStore, as_utc
from hokusai_registry.store.schema import users

Kind = Literal["person", "service"]


class UserNotAllowed(PermissionError):
    """The identity may not sign in or act (disabled, unknown with auto-creation off, or its name is
    another identity's); the message says which and what to do."""


class UserNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    issuer: str | None
    subject: str | None
    name: str
    email: str | None
    kind: Kind
    scopes: tuple[str, ...]
    groups: tuple[str, ...]
    created_at: dt.datetime
    last_seen_at: dt.datetime
    disabled_at: dt.datetime | None

    @property
    def status(self) -> str:
        if self.disabled_at is not None:
            return "disabled"
        return "active" if self.subject is not None else "invited"


def _record(row: Any) -> UserRecord:
    return UserRecord(
        id=row.id,
        issuer=row.issuer,
        subject=row.subject,
        name=row.name,
        email=row.email,
        kind="service" if row.kind == "service" else "person",
        scopes=tuple(row.scopes.split()),
        groups=tuple(json.loads(row.groups)),
        created_at=as_utc(row.created_at),
        last_seen_at=as_utc(row.last_seen_at),
        disabled_at=as_utc(row.disabled_at) if row.disabled_at else None,
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UserStore:
    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self.engine = keys.engine

    def seen(
        self,
        *,
        issuer: str,
        subject: str,
        name: str,
        email: str | None,
        kind: Kind,
        scopes: tuple[str, ...],
        groups: tuple[str, ...],
        create: bool,
        sign_in: bool = True,
    ) -> UserRecord:
        """The user behind an identity that just proved itself (a sign-in or a bearer token), with their
        scopes, groups, e-mail and last sight brought up to date; created when new and `create`, or
        claimed when an admin added a user of that name beforehand. UserNotAllowed otherwise. A bearer
        token (`sign_in` False) speaks for itself only: it sets scopes, groups and kind only of a user it
        creates, never of one who signs in, whose rights come from their sign-in."""
        now = _now()
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.select(users).where(users.c.issuer == issuer, users.c.subject == subject)
            ).first()
            if row is None:
                named = connection.execute(sa.select(users).where(users.c.name == name)).first()
                if named is not None and named.subject is not None:
                    raise UserNotAllowed(
                        f"the name {name!r} already belongs to another identity ({named.issuer}); ask an "
                        "admin, or sign in with the identity that has it"
                    )
                if named is None and not create:
                    raise UserNotAllowed(
                        f"there is no user {name!r} here and users are not created at sign-in; ask an "
                        f"admin to add one (hokusai-registry users add {name})"
                    )
                if named is None:
                    user_id = secrets.token_hex(16)
                    connection.execute(
                        users.insert().values(
                            id=user_id,
                            issuer=issuer,
                            subject=subject,
                            name=name,
                            email=email,
                            kind=kind,
                            scopes=" ".join(scopes),
                            groups=json.dumps(list(groups)),
                            created_at=now,
                            last_seen_at=now,
                            disabled_at=None,
                        )
                    )
                else:
                    user_id = named.id
                    connection.execute(
                        users.update().where(users.c.id == user_id).values(issuer=issuer, subject=subject)
                    )
            else:
                user_id = row.id
            found = connection.execute(sa.select(users).where(users.c.id == user_id)).one()
            if found.disabled_at is not None:
                raise UserNotAllowed(
                    f"the user {found.name!r} is disabled; ask an admin (hokusai-registry users enable)"
                )
            changes: dict[str, Any] = {"last_seen_at": now}
            if email is not None:
                changes["email"] = email
            if sign_in:
                changes.update(kind=kind, scopes=" ".join(scopes), groups=json.dumps(list(groups)))
            connection.execute(users.update().where(users.c.id == user_id).values(**changes))
            return _record(connection.execute(sa.select(users).where(users.c.id == user_id)).one())

    def add(self, name: str, *, kind: Kind = "person", scopes: tuple[str, ...]) -> UserRecord:
        """A user an admin adds before their first sign-in (needed when users are not created at
        sign-in)."""
        now = _now()
        with self.engine.begin() as connection:
            if connection.execute(sa.select(users.c.id).where(users.c.name == name)).first():
                raise UserNotAllowed(f"a user named {name!r} already exists")
            user_id = secrets.token_hex(16)
            connection.execute(
                users.insert().values(
                    id=user_id,
                    issuer=None,
                    subject=None,
                    name=name,
                    email=None,
                    kind=kind,
                    scopes=" ".join(scopes),
                    groups="[]",
                    created_at=now,
                    last_seen_at=now,
                    disabled_at=None,
                )
            )
            return _record(connection.execute(sa.select(users).where(users.c.id == user_id)).one())

    def get(self, user_id: str) -> UserRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(users).where(users.c.id == user_id)).first()
        return _record(row) if row else None

    def named(self, name: str) -> UserRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(users).where(users.c.name == name)).first()
        return _record(row) if row else None

    def find(self, issuer: str, subject: str) -> UserRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(users).where(users.c.issuer == issuer, users.c.subject == subject)
            ).first()
        return _record(row) if row else None

    def list(self) -> list[UserRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(users).order_by(users.c.name)).all()
        return [_record(row) for row in rows]

    def disable(self, user_id: str) -> tuple[UserRecord, int]:
        """Disable a user: their keys are revoked and their sessions end at once; the user and the
        number of keys revoked."""
        with self.engine.begin() as connection:
            self._exists(connection, user_id)
            connection.execute(
                users.update()
                .where(users.c.id == user_id, users.c.disabled_at.is_(None))
                .values(disabled_at=_now())
            )
            revoked = self.keys.revoke_all_of(connection, user_id)
            return _record(connection.execute(sa.select(users).where(users.c.id == user_id)).one()), revoked

    def enable(self, user_id: str) -> UserRecord:
        """Let a disabled user sign in again (their revoked keys stay revoked)."""
        with self.engine.begin() as connection:
            self._exists(connection, user_id)
            connection.execute(users.update().where(users.c.id == user_id).values(disabled_at=None))
            return _record(connection.execute(sa.select(users).where(users.c.id == user_id)).one())

    @staticmethod
    def _exists(connection: sa.Connection, user_id: str) -> None:
        if connection.execute(sa.select(users.c.id).where(users.c.id == user_id)).first() is None:
            raise UserNotFound(f"no user with id {user_id!r} (see `hokusai-registry users list`)")
