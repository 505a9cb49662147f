"""What teams and grants look like to the CLI, the admin API (its OpenAPI schema comes from these) and
the pages: the requests, checked here, and the answers (`admin/permissions.py` makes them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hokusai_registry.core.refusals import Reason
from hokusai_registry.policy.assertions import RESERVED_PREFIX, reserved_user

WORKSPACE = "default"
# MLflow's per-user role (`__user_<id>__`): an owner's own grants live there. The prefix is reserved by
# MLflow, so no team is named like it.
OWN_ROLE = re.compile(r"__user_(\d+)__")
LEVELS = ("READ", "USE", "EDIT", "MANAGE", "DENY")
Level = Literal["READ", "USE", "EDIT", "MANAGE", "DENY"]
# Names made here go into URLs and page forms: letters, digits and . _ - (MLflow itself takes any).
TEAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
WILDCARD = "*"


@dataclass(frozen=True)
class Kind:
    """A kind of resource grants are made on: its field (`--flag`), MLflow's resource type, a label."""

    field: str
    resource_type: str
    label: str


KINDS = (
    Kind("experiment", "experiment", "experiment"),
    Kind("model", "registered_model", "registered model"),
    Kind("prompt", "prompt", "prompt"),
    Kind("scorer", "scorer", "scorer"),
    Kind("gateway_endpoint", "gateway_endpoint", "AI-gateway endpoint"),
)
KIND_BY_TYPE = {kind.resource_type: kind for kind in KINDS}


class ChangeRefused(Exception):
    """A team or grant request that did not happen; `reason` says how the API answers it."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def owner_name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    if len(value) > 200:
        raise ValueError("at most 200 characters")
    if reserved_user(value):
        raise ValueError(f"names starting with {RESERVED_PREFIX!r} are reserved for the gateway")
    return value


class TeamSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="1-100 of A-Z a-z 0-9 . _ -, starting with a letter or digit.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not TEAM_NAME.fullmatch(value):
            raise ValueError(
                f"{value[:40]!r} is not a team name (1-100 of A-Z a-z 0-9 . _ -, first a letter or digit)"
            )
        return value


class MemberSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner: str = Field(description="A key's owner (the MLflow user its requests act as).")

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str) -> str:
        return owner_name(value)


class Team(BaseModel):
    name: str
    members: list[str] = Field(description="Owners in the team (MLflow users assigned to its role).")


class GrantTarget(BaseModel):
    """Whose grant on what: one of `owner` and `team`, one resource."""

    model_config = ConfigDict(extra="forbid")

    owner: str | None = Field(default=None, description="The owner (a key's owner, an MLflow user).")
    team: str | None = Field(default=None, description="The team.")
    experiment: str | None = Field(default=None, description="An experiment id, else name; * for all.")
    model: str | None = Field(default=None, description="A registered model's name; * for all.")
    prompt: str | None = Field(default=None, description="A prompt's name; * for all.")
    scorer: str | None = Field(
        default=None,
        description="EXPERIMENT/NAME: the experiment (id or name) and the scorer's name; * for all.",
    )
    gateway_endpoint: str | None = Field(
        default=None, description="An AI-gateway endpoint's id, else name; * for all."
    )

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        return None if value is None else owner_name(value)

    @field_validator("team", "experiment", "model", "prompt", "scorer", "gateway_endpoint")
    @classmethod
    def _given(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or len(value) > 500:
            raise ValueError("must be 1-500 characters")
        return value

    @model_validator(mode="after")
    def _one_of_each(self) -> GrantTarget:
        if (self.owner is None) == (self.team is None):
            raise ValueError("give exactly one of owner and team")
        given = [kind.field for kind in KINDS if getattr(self, kind.field) is not None]
        if len(given) != 1:
            fields = ", ".join(kind.field for kind in KINDS)
            raise ValueError(f"give exactly one resource: one of {fields}")
        if self.scorer is not None and self.scorer != WILDCARD and "/" not in self.scorer.strip("/"):
            raise ValueError(
                "scorer: give EXPERIMENT/NAME, the experiment's id or name and the scorer's name"
            )
        return self

    @property
    def kind(self) -> Kind:
        return next(kind for kind in KINDS if getattr(self, kind.field) is not None)

    @property
    def value(self) -> str:
        value: str = getattr(self, self.kind.field)
        return value

    @property
    def grantee(self) -> str:
        return f"owner {self.owner}" if self.owner is not None else f"team {self.team}"


class GrantSpec(GrantTarget):
    level: Level = Field(
        description="READ, USE (also invoke), EDIT (also change), MANAGE (also delete and grant), or DENY "
        "(refuses all of it, whatever else is granted)."
    )


class Grant(BaseModel):
    owner: str | None = Field(description="The owner granted; null for a team's grant.")
    team: str | None = Field(description="The team granted; null for an owner's own grant.")
    resource_type: str = Field(
        description="MLflow's resource type: experiment, registered_model, prompt, scorer, gateway_endpoint "
        "(or another MLflow knows, for grants made with MLflow's own client)."
    )
    resource_id: str = Field(
        description="As MLflow keeps it: an experiment id, a model's or prompt's name, "
        "EXPERIMENT_ID/NAME for a scorer (the name URL-encoded), an endpoint id, or * for all."
    )
    level: str

    @property
    def grantee(self) -> str:
        return f"owner {self.owner}" if self.owner is not None else f"team {self.team}"

    @property
    def resource(self) -> str:
        kind = KIND_BY_TYPE.get(self.resource_type)
        label = kind.label if kind else self.resource_type
        return f"every {label}" if self.resource_id == WILDCARD else f"{label} {self.shown_id}"

    @property
    def shown_id(self) -> str:
        if self.resource_type == "scorer" and "/" in self.resource_id:
            experiment, _, name = self.resource_id.partition("/")
            return f"{experiment}/{unquote(name)}"
        return self.resource_id


@dataclass(frozen=True)
class GrantChange:
    grant: Grant
    previous: str | None  # the level it replaced; None when the grant is new
    changed: bool = True


@dataclass(frozen=True)
class MemberChange:
    team: Team
    changed: bool
