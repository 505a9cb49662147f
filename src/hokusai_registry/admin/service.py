"""Key management: the one implementation behind `hokusai-registry keys ...` and `/api/v1/keys`.

Inputs are validated by the pydantic models here (the admin API's OpenAPI schema comes from them too),
and every change is written to the audit log with who made it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hokusai_registry.ops.audit import audit
from hokusai_registry.policy import keys as key_format
from hokusai_registry.policy.assertions import RESERVED_PREFIX, reserved_user
from hokusai_registry.policy.scopes import expand
from hokusai_registry.store.key_store import SELF_SERVICE, KeyNotFound, KeyRecord, KeyStore
from hokusai_registry.store.user_store import UserRecord, UserStore

# Stored in a 64-bit integer column; no real limit comes near it (a fuzzer sent 5.7e21).
MAX_RATE_LIMIT = 1_000_000_000


def problems(errors: Iterable[Mapping[str, Any]], flags: bool = False) -> str:
    """Pydantic's validation errors as one line: `field: what is wrong; ...` (as `--field-name` for the
    CLI)."""
    described = []
    for problem in errors:
        name = ".".join(str(part) for part in problem["loc"] if part != "body")
        message = str(problem["msg"]).removeprefix("Value error, ")
        if not name:  # the whole request's (a model validator's), which names its fields itself
            described.append(message)
            continue
        if flags:
            name = "--" + name.replace("_", "-")
        described.append(f"{name}: {message}")
    return "; ".join(described)


class KeySpec(BaseModel):
    """What a new key is for and what it may do."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What the key is for, e.g. 'ci-trainer'.")
    owner: str | None = Field(
        default=None,
        max_length=200,
        description="The person or system the key acts for; runs it creates are attributed to this user. "
        "Default: the name.",
    )
    scope: Literal["read", "write", "admin"] = Field(
        default="write",
        description="read: search and download; write: also log runs, artifacts and models; admin: also "
        "server configuration and keys. Each implies the ones before it.",
    )
    expires_in: str | None = Field(
        default=None, description="Lifetime such as 90d, 12h or 30m; default none."
    )
    service_ids: list[str] = Field(
        default_factory=list, description="Service ids the key is valid for; empty means any."
    )
    rate_limit_per_minute: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RATE_LIMIT,
        description="Requests per minute; default the gateway's; 0 means unlimited.",
    )
    rate_limit_per_hour: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RATE_LIMIT,
        description="Requests per hour; default the gateway's; 0 means unlimited.",
    )

    @field_validator("name", "owner")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            raise ValueError("must not be blank")
        if reserved_user(value):
            # The owner (or else the name) is the MLflow user; `hokusai:admin` is MLflow's administrator.
            raise ValueError(f"names starting with {RESERVED_PREFIX!r} are reserved for the gateway")
        return value

    @field_validator("expires_in")
    @classmethod
    def _lifetime(cls, value: str | None) -> str | None:
        if value is not None:
            key_format.parse_duration(value)
        return value

    @field_validator("service_ids")
    @classmethod
    def _service_ids(cls, value: list[str]) -> list[str]:
        for service_id in value:
            if not key_format.SERVICE_ID.fullmatch(service_id):
                raise ValueError(f"{service_id!r} is not a service id (1-100 of A-Z a-z 0-9 . _ : -)")
        return list(dict.fromkeys(value))


class KeyInfo(BaseModel):
    """A key as shown to admins: everything but its secret."""

    key_id: str
    name: str
    owner: str | None
    user_id: str = Field(description="Who requests with this key act as: the owner, or else the name.")
    environment: str
    scopes: list[str]
    service_ids: list[str]
    rate_limit_per_minute: int | None
    rate_limit_per_hour: int | None
    status: Literal["active", "expired", "revoked"]
    created_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None
    last_used_at: dt.datetime | None

    @classmethod
    def of(cls, record: KeyRecord) -> KeyInfo:
        return cls(
            key_id=record.key_id,
            name=record.name,
            owner=record.owner,
            user_id=record.user_id,
            environment=record.environment,
            scopes=list(record.scopes),
            service_ids=list(record.service_ids),
            rate_limit_per_minute=record.rate_limit_per_minute,
            rate_limit_per_hour=record.rate_limit_per_hour,
            status=record.status(dt.datetime.now(dt.UTC)),  # type: ignore[arg-type]
            created_at=record.created_at,
            expires_at=record.expires_at,
            revoked_at=record.revoked_at,
            last_used_at=record.last_used_at,
        )


class CreatedKey(KeyInfo):
    key: str = Field(description="The API key. Shown only in this response; only its hash is stored.")


def check_key_id(key_id: str) -> None:
    if key_id.startswith(("hk_live_", "hk_test_")):
        raise ValueError("pass the key id (see `keys list`), not the whole key")
    if not key_format.is_key_id(key_id):
        raise ValueError(f"{key_id[:40]!r} is not a key id (12 letters and digits; see `keys list`)")


class KeyAdmin:
    """Key changes for an actor (`cli:<user>` or `key:<admin key id>`), each audited."""

    def __init__(self, store: KeyStore, environment: key_format.Environment) -> None:
        self.store = store
        self.environment = environment

    def create(self, spec: KeySpec, actor: str) -> CreatedKey:
        expires_at = None
        if spec.expires_in is not None:
            expires_at = dt.datetime.now(dt.UTC) + key_format.parse_duration(spec.expires_in)
        record, key = self.store.create(
            spec.name,
            environment=self.environment,
            scopes=expand(spec.scope),
            expires_at=expires_at,
            owner=spec.owner,
            service_ids=tuple(spec.service_ids),
            rate_limit_per_minute=spec.rate_limit_per_minute,
            rate_limit_per_hour=spec.rate_limit_per_hour,
        )
        self._audit("key.created", record, actor)
        return CreatedKey(**KeyInfo.of(record).model_dump(), key=key)

    def list(self) -> list[KeyInfo]:
        return [KeyInfo.of(record) for record in self.store.list()]

    def get(self, key_id: str) -> KeyInfo:
        check_key_id(key_id)
        record = self.store.get(key_id)
        if record is None:
            raise KeyNotFound(f"no key with id {key_id!r} (see `hokusai-registry keys list`)")
        return KeyInfo.of(record)

    def revoke(self, key_id: str, actor: str) -> KeyInfo:
        check_key_id(key_id)
        record = self.store.revoke(key_id)
        self._audit("key.revoked", record, actor)
        return KeyInfo.of(record)

    def rotate(self, key_id: str, actor: str) -> CreatedKey:
        check_key_id(key_id)
        record, key = self.store.rotate(key_id)
        self._audit("key.rotated", record, actor, replaces=key_id)
        return CreatedKey(**KeyInfo.of(record).model_dump(), key=key)

    @staticmethod
    def _audit(event: str, record: KeyRecord, actor: str, replaces: str | None = None) -> None:
        audit(
            event,
            actor=actor,
            key_id=record.key_id,
            replaces=replaces,
            name=record.name,
            owner=record.user_id,
            scopes=list(record.scopes),
            expires_at=record.expires_at,
        )


class OwnKeySpec(BaseModel):
    """A key a single-sign-on user makes for themselves: it acts as them and must expire."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="What the key is for, e.g. 'laptop'.")
    scope: Literal["read", "write", "admin"] = Field(
        default="write", description="At most the user's own scope (an admin user may make admin keys)."
    )
    expires_in: str | None = Field(
        default=None,
        description="Lifetime such as 30d or 12h; default and at most HOKUSAI_MAX_KEY_LIFETIME.",
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return KeySpec._stripped(value) or value

    @field_validator("expires_in")
    @classmethod
    def _expiry(cls, value: str | None) -> str | None:
        return KeySpec._lifetime(value)


class OwnKeys:
    """Self-service keys: a single-sign-on user's own, never above the user's rights (their scope at
    creation, and again at every use: `auth/local_keys.py`), each expiring within the maximum lifetime."""

    def __init__(
        self, store: KeyStore, environment: key_format.Environment, max_lifetime: dt.timedelta
    ) -> None:
        self.store = store
        self.environment = environment
        self.max_lifetime = max_lifetime

    def _user(self, user_id: str) -> UserRecord:
        user = UserStore(self.store).get(user_id)
        if user is None or user.status == "disabled":
            raise PermissionError("this user is disabled or unknown: it can have no keys")
        return user

    def list(self, user_id: str) -> list[KeyInfo]:
        return [KeyInfo.of(record) for record in self.store.list(sso_user_id=user_id)]

    def create(self, user_id: str, spec: OwnKeySpec, actor: str) -> CreatedKey:
        user = self._user(user_id)
        scopes = expand(spec.scope)
        if not set(scopes) <= set(user.scopes):
            held = " ".join(user.scopes)
            raise PermissionError(f"a {spec.scope} key is above what {user.name} may do ({held})")
        lifetime = self.max_lifetime
        if spec.expires_in is not None:
            lifetime = key_format.parse_duration(spec.expires_in)
            if lifetime > self.max_lifetime:
                raise ValueError(
                    f"expires_in: at most {self.max_lifetime.days} days for your own keys "
                    "(HOKUSAI_MAX_KEY_LIFETIME)"
                )
        record, key = self.store.create(
            f"{user.name}: {spec.name}",
            environment=self.environment,
            scopes=scopes,
            expires_at=dt.datetime.now(dt.UTC) + lifetime,
            owner=user.name,
            sso_user_id=user.id,
            purpose=SELF_SERVICE,
        )
        KeyAdmin._audit("key.created", record, actor)
        return CreatedKey(**KeyInfo.of(record).model_dump(), key=key)

    def revoke(self, user_id: str, key_id: str, actor: str) -> KeyInfo:
        """Revoke one of the user's own keys; anyone else's is not found (nothing said about it)."""
        check_key_id(key_id)
        record = self.store.get(key_id)
        if record is None or record.sso_user_id != user_id or record.purpose != SELF_SERVICE:
            raise KeyNotFound(f"you have no key with id {key_id!r}")
        revoked = self.store.revoke(key_id)
        KeyAdmin._audit("key.revoked", revoked, actor)
        return KeyInfo.of(revoked)
