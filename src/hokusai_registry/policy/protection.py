"""Protected aliases and stages (pure): the rules, what a request to MLflow would move or remove, and the
rule it runs into.

A rule names a model pattern and an alias pattern (or a legacy stage pattern), shell-style globs (`*`,
`?`, `[...]`), matched without regard to case: MLflow stores names as given, but a database may compare
them without case (MySQL), and stages are canonicalised by MLflow ("production" is "Production"), so
protecting more spellings never protects less.

What can move or remove an alias or a stage holder in MLflow 3.17.2 (all under `/api/2.0/mlflow/` and
`/ajax-api/2.0/mlflow/`, behind every mount):
- `POST registered-models/alias` (set), `DELETE registered-models/alias` (delete);
- `POST model-versions/transition-stage` (into a stage, out of one, and `archive_existing_versions`);
- `DELETE model-versions/delete` of a version that holds an alias or a stage;
- `POST registered-models/rename` and `DELETE registered-models/delete` of a model holding either
  (`models:/<name>@alias` stops resolving; a delete cascades to every version);
- `DELETE /api/3.0/mlflow/workspaces/<name>` (and its ajax twin): with `mode=CASCADE` it deletes every
  model of the workspace, with `SET_DEFAULT` it moves them. The gateway cannot cheaply know which
  models a workspace holds, so while any rule exists every workspace deletion runs into one.

MLflow reads these requests' fields from the JSON body (the query only for GET, which none of them is),
by either spelling (`new_name`, `newName`; two different values are refused by MLflow itself).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from hokusai_registry.policy.routes import API_PREFIX, API_ROOT

# The version tag the gateway sets when it applies a promotion: `hokusai.promotion.<alias or stage>`.
PROMOTION_TAG_PREFIX = "hokusai.promotion."
MAX_PATTERN = 250
_PATTERN = re.compile(r"[^\x00-\x1f\x7f]{1,250}")
_API_ROOT = re.compile(API_ROOT)
_WORKSPACE = re.compile(rf"{API_PREFIX}/3\.0/mlflow/workspaces/([^/]+)")


def valid_pattern(pattern: str) -> bool:
    return _PATTERN.fullmatch(pattern) is not None


def glob(pattern: str, value: str) -> bool:
    """A shell-style glob, without regard to case."""
    return fnmatchcase(value.casefold(), pattern.casefold())


@dataclass(frozen=True, slots=True)
class Rule:
    """One protection: changes to what it covers need `approvals` approvals from `approvers` (a team;
    None: admins)."""

    id: str
    model: str
    alias: str | None = None  # a pattern of alias names; None for a stage rule
    stage: str | None = None  # a pattern of legacy stages ("Production")
    approvers: str | None = None
    approvals: int = 1

    def covers_alias(self, model: str, alias: str) -> bool:
        return self.alias is not None and glob(self.model, model) and glob(self.alias, alias)

    def covers_stage(self, model: str, stage: str) -> bool:
        return self.stage is not None and glob(self.model, model) and glob(self.stage, stage)

    def covers_model(self, model: str) -> bool:
        return glob(self.model, model)

    @property
    def target(self) -> str:
        """What it protects, as people say it: `@production` or `stage Production`."""
        return f"@{self.alias}" if self.alias is not None else f"stage {self.stage}"

    @property
    def who(self) -> str:
        count = f"{self.approvals} approval{'s' if self.approvals != 1 else ''}"
        return f"{count} from team {self.approvers}" if self.approvers else f"{count} from an admin"


class Action(enum.Enum):
    SET_ALIAS = "set_alias"
    DELETE_ALIAS = "delete_alias"
    TRANSITION_STAGE = "transition_stage"
    DELETE_VERSION = "delete_version"
    RENAME_MODEL = "rename_model"
    DELETE_MODEL = "delete_model"
    DELETE_WORKSPACE = "delete_workspace"


# The actions whose decision needs what the model or version holds now (an MLflow lookup).
LOOKED_UP = frozenset(
    {Action.TRANSITION_STAGE, Action.DELETE_VERSION, Action.RENAME_MODEL, Action.DELETE_MODEL}
)
# (method, route after "/mlflow/") -> action
_ROUTES = {
    ("POST", "registered-models/alias"): Action.SET_ALIAS,
    ("DELETE", "registered-models/alias"): Action.DELETE_ALIAS,
    ("POST", "model-versions/transition-stage"): Action.TRANSITION_STAGE,
    ("DELETE", "model-versions/delete"): Action.DELETE_VERSION,
    ("POST", "registered-models/rename"): Action.RENAME_MODEL,
    ("DELETE", "registered-models/delete"): Action.DELETE_MODEL,
}


@dataclass(frozen=True, slots=True)
class Touch:
    """What a request would change: the model, and the alias, version or stage it names."""

    action: Action
    model: str = ""
    alias: str = ""
    version: str = ""
    stage: str = ""
    workspace: str = ""


@dataclass(frozen=True, slots=True)
class Holdings:
    """What a model or version holds now (MLflow's answer): aliases and the stages of its versions."""

    aliases: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Hit:
    rule: Rule
    what: str  # what the request would move, e.g. "@production of model 'fraud'"


def action(method: str, path: str) -> Action | None:
    """The kind of alias or stage change a request is (before its body is read), or None."""
    root, found, route = path.partition("/mlflow/")
    if found and _API_ROOT.fullmatch(root):
        known = _ROUTES.get((method, route))
        if known is not None:
            return known
    if method == "DELETE" and _WORKSPACE.fullmatch(path):
        return Action.DELETE_WORKSPACE
    return None


def _field(data: Mapping[str, Any], name: str) -> str:
    """A field by its proto name or its JSON (lowerCamelCase) name, as text."""
    head, *rest = name.split("_")
    for spelling in (name, head + "".join(part.title() for part in rest)):
        value = data.get(spelling)
        if value is not None:
            return str(value)
    return ""


def touched(method: str, path: str, data: Mapping[str, Any] | None) -> Touch | None:
    """What the request would change, from its JSON body (`data`); None when it changes no alias or
    stage."""
    found = action(method, path)
    if found is None:
        return None
    if found is Action.DELETE_WORKSPACE:
        match = _WORKSPACE.fullmatch(path)
        return Touch(found, workspace=match.group(1) if match else "")
    body = data or {}
    return Touch(
        found,
        model=_field(body, "name"),
        alias=_field(body, "alias"),
        version=_field(body, "version"),
        stage=_field(body, "stage"),
    )


def hit(rules: Sequence[Rule], touch: Touch, held: Holdings | None = None) -> Hit | None:
    """The first rule the change runs into, or None. `held` is what the model (rename, delete) or the
    version (delete, stage transition) holds now."""
    if touch.action is Action.DELETE_WORKSPACE:
        return Hit(rules[0], f"every model of workspace {touch.workspace!r}") if rules else None
    model = touch.model
    holdings = held or Holdings()
    for rule in rules:
        if touch.action in (Action.SET_ALIAS, Action.DELETE_ALIAS):
            if rule.covers_alias(model, touch.alias):
                return Hit(rule, f"@{touch.alias} of model {model!r}")
            continue
        if touch.action is Action.TRANSITION_STAGE:
            stages = (touch.stage, *holdings.stages)
            held_stage = next((stage for stage in stages if rule.covers_stage(model, stage)), None)
            if held_stage is not None:
                return Hit(rule, f"stage {held_stage} of model {model!r}")
            continue
        alias = next((name for name in holdings.aliases if rule.covers_alias(model, name)), None)
        stage = next((name for name in holdings.stages if rule.covers_stage(model, name)), None)
        if alias is not None or stage is not None:
            what = f"@{alias}" if alias is not None else f"stage {stage}"
            holder = f"version {touch.version} of model" if touch.action is Action.DELETE_VERSION else "model"
            return Hit(rule, f"{what}, held by {holder} {model!r}")
    return None


def needs_lookup(rules: Iterable[Rule], touch: Touch) -> bool:
    """Whether a decision needs MLflow's answer: the action does and some rule covers the model."""
    return touch.action in LOOKED_UP and any(rule.covers_model(touch.model) for rule in rules)


def version_holdings(answer: Mapping[str, Any]) -> Holdings:
    """From `model-versions/get`: the version's aliases and its stage."""
    version = answer.get("model_version") or {}
    aliases = tuple(str(alias) for alias in version.get("aliases") or ())
    stage = version.get("current_stage")
    return Holdings(aliases, (str(stage),) if stage else ())


def model_holdings(answer: Mapping[str, Any]) -> Holdings:
    """From `registered-models/get`: the model's aliases and the stages its latest versions hold."""
    model = answer.get("registered_model") or {}
    aliases = tuple(str(entry.get("alias")) for entry in model.get("aliases") or () if entry.get("alias"))
    stages = tuple(
        str(entry["current_stage"])
        for entry in model.get("latest_versions") or ()
        if entry.get("current_stage")
    )
    return Holdings(aliases, stages)


def alias_versions(answer: Mapping[str, Any]) -> dict[str, str]:
    """From `registered-models/get`: alias -> version."""
    model = answer.get("registered_model") or {}
    return {
        str(entry["alias"]): str(entry.get("version"))
        for entry in model.get("aliases") or ()
        if entry.get("alias") is not None
    }


def stage_version(answer: Mapping[str, Any], stage: str) -> str:
    """From `registered-models/get`: the latest version in `stage`, or "" when none is."""
    model = answer.get("registered_model") or {}
    for entry in model.get("latest_versions") or ():
        if str(entry.get("current_stage", "")).casefold() == stage.casefold():
            return str(entry.get("version"))
    return ""


# Where a request names a model version's tag: the one key it sets or deletes, or the tags it creates with.
_TAGGING = {
    ("POST", "model-versions/set-tag"): "key",
    ("DELETE", "model-versions/delete-tag"): "key",
    ("POST", "model-versions/create"): "tags",
}


def tags_versions(method: str, path: str) -> bool:
    """A request that sets, deletes or creates with a model version's tags (its body is then read)."""
    root, found, route = path.partition("/mlflow/")
    return found != "" and (method, route) in _TAGGING and _API_ROOT.fullmatch(root) is not None


def names_promotion_tag(method: str, path: str, data: Mapping[str, Any] | None) -> bool:
    """A version tag `hokusai.promotion.*` set or deleted through the gateway: the record of an approval
    is the gateway's to write (it sets it as MLflow's administrator, past these checks)."""
    root, found, route = path.partition("/mlflow/")
    where = _TAGGING.get((method, route)) if found and _API_ROOT.fullmatch(root) else None
    if where is None or data is None:
        return False
    if where == "key":
        return _field(data, "key").casefold().startswith(PROMOTION_TAG_PREFIX)
    tags = data.get("tags")
    return isinstance(tags, list) and any(
        isinstance(tag, Mapping) and str(tag.get("key", "")).casefold().startswith(PROMOTION_TAG_PREFIX)
        for tag in tags
    )
