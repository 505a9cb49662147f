"""Single-sign-on users: the one implementation behind `hokusai-registry users ...` and `/api/v1/users`.

Users appear at their first sign-in (or first bearer token); an admin may add one beforehand (with
`HOKUSAI_OIDC_AUTO_CREATE_USERS=off`, only those may sign in) and disable one: that revokes every key the
user has, ends their browser sessions on every gateway, and refuses their tokens until they are enabled.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hokusai_registry.admin.service import KeySpec
from hokusai_registry.ops.audit import audit
from hokusai_registry.policy.scopes import expand
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.user_store import UserNotFound, UserRecord, UserStore


class UserSpec(BaseModel):
    """A user added before they first sign in."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=200, description="Their name as the provider's username claim gives it."
    )
    scope: Literal["read", "write", "admin"] = Field(
        default="write", description="What they may do until their first sign-in sets it from their groups."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return KeySpec._stripped(value) or value


class UserInfo(BaseModel):
    id: str
    name: str
    email: str | None
    kind: Literal["person", "service"]
    issuer: str | None
    scopes: list[str]
    groups: list[str] = Field(description="The provider's groups at their last sign-in.")
    status: Literal["active", "invited", "disabled"]
    created_at: dt.datetime
    last_seen_at: dt.datetime
    disabled_at: dt.datetime | None

    @classmethod
    def of(cls, user: UserRecord) -> UserInfo:
        return cls(
            id=user.id,
            name=user.name,
            email=user.email,
            kind=user.kind,
            issuer=user.issuer,
            scopes=list(user.scopes),
            groups=list(user.groups),
            status=user.status,  # type: ignore[arg-type]
            created_at=user.created_at,
            last_seen_at=user.last_seen_at,
            disabled_at=user.disabled_at,
        )


class UserChange(UserInfo):
    keys_revoked: int = Field(default=0, description="Keys revoked by disabling the user.")


class UserAdmin:
    """User changes for an actor (`cli:<user>` or `key:<admin key id>`), each audited."""

    def __init__(self, store: KeyStore) -> None:
        self.users = UserStore(store)

    def list(self) -> list[UserInfo]:
        return [UserInfo.of(user) for user in self.users.list()]

    def _named(self, name: str) -> UserRecord:
        user = self.users.named(name)
        if user is None:
            raise UserNotFound(f"there is no user {name!r} (see `hokusai-registry users list`)")
        return user

    def get(self, name: str) -> UserInfo:
        return UserInfo.of(self._named(name))

    def add(self, spec: UserSpec, actor: str) -> UserInfo:
        user = self.users.add(spec.name, scopes=expand(spec.scope))
        audit("user.added", actor=actor, user=user.name, scopes=list(user.scopes))
        return UserInfo.of(user)

    def disable(self, name: str, actor: str) -> UserChange:
        user, revoked = self.users.disable(self._named(name).id)
        audit("user.disabled", actor=actor, user=user.name, keys_revoked=revoked)
        return UserChange(**UserInfo.of(user).model_dump(), keys_revoked=revoked)

    def enable(self, name: str, actor: str) -> UserChange:
        user = self.users.enable(self._named(name).id)
        audit("user.enabled", actor=actor, user=user.name)
        return UserChange(**UserInfo.of(user).model_dump())
