"""`grants backfill`: after an upgrade to permissions, MANAGE grants for what owners made before.

A registry that ran without permissions (an older version, or HOKUSAI_PERMISSIONS=off) has no grants, so
with permissions on nobody but an admin could change anything, and with `NO_PERMISSIONS` owners would not
even see their own experiments. What the registry already knows says who made what, and none of it is a
claim made now:

- runs: the `mlflow.user` tag, which the gateway sets to the key's owner -> the run's experiment;
- model versions: the owner of the run each was registered from (MLflow records no creator of a version
  through its REST API; a `user_id` a store kept is used too) -> the registered model or prompt;
- the audit log: `experiment.created`, `promptlab_run.created`, `registered_model.created` and
  `model_version.created` (renames and deletions followed, in time order) -> the experiment or model.

Each (owner, resource) becomes a proposed MANAGE grant (EDIT on the Default experiment, which belongs to
nobody: those who logged there keep logging and reading, none may delete it or grant on it). An owner's
own grant on the resource, whatever its level (a deliberate READ or DENY included), is kept: the proposal
marks it and `apply` skips it, so running it again changes nothing. Owners no key has (names MLflow
recorded before the gateway attributed runs) are skipped unless asked for, and names reserved for the
gateway (`hokusai:...`) always are.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from hokusai_registry.admin.signed_mlflow import MlflowError, SignedMlflow
from hokusai_registry.policy.assertions import reserved_user

LEVEL = "MANAGE"
# The Default experiment was created by nobody (docs/permissions.md): those who logged runs there keep
# logging and reading, but none of them may delete it or grant on it.
DEFAULT_EXPERIMENT = "0"
SHARED_LEVEL = "EDIT"
CREATOR_TAG = "mlflow.user"
PROMPT_FILTER = "tags.`mlflow.prompt.is_prompt` = 'true'"
# Distinct run owners are found one query each (runs whose owner is none of those found so far); past this
# many, or for a name a filter cannot quote, the experiment's runs are paged through instead.
MAX_EXCLUDED = 50
RUN_PAGE = 1000
RUN_IDS_PER_QUERY = 100
# MLflow's synthetic per-user role: grants made with users/permissions/grant live there.
OWN_ROLE_PREFIX = "__user_"
KIND_LABELS = {"experiment": "experiment", "registered_model": "registered model", "prompt": "prompt"}


@dataclass(frozen=True, order=True)
class Resource:
    kind: str  # MLflow's resource_type: experiment, registered_model or prompt
    id: str  # the experiment id, or the model's or prompt's name
    name: str  # the experiment's name; the name again for models and prompts
    deleted: bool = False

    def label(self) -> str:
        if self.kind == "experiment":
            return f"experiment {self.id} ({self.name})" + (" [deleted]" if self.deleted else "")
        return f"{KIND_LABELS[self.kind]} {self.id}"


@dataclass
class Registry:
    """What MLflow holds now: every experiment (deleted ones too: they can be restored) and model."""

    experiments: dict[str, Resource] = field(default_factory=dict)  # by id
    models: dict[str, Resource] = field(default_factory=dict)  # by name, prompts included

    def experiment_named(self, name: str) -> Resource | None:
        return next((found for found in self.experiments.values() if found.name == name), None)


# (owner, resource) -> what shows the owner made it
Attributions = dict[tuple[str, Resource], set[str]]


@dataclass
class Proposal:
    owner: str
    resource: Resource
    evidence: list[str]
    status: str = "new"  # new, exists, skipped, applied, failed
    detail: str = ""  # the kept grant's level, or why skipped or failed
    owners_of_resource: int = 1  # proposals on the same resource, this one included
    level: str = LEVEL

    def as_dict(self) -> dict[str, object]:
        return {
            "owner": self.owner,
            "resource_type": self.resource.kind,
            "resource_id": self.resource.id,
            "resource_name": self.resource.name,
            "resource_deleted": self.resource.deleted,
            "permission": self.level,
            "evidence": self.evidence,
            "status": self.status,
            "detail": self.detail,
            "owners_of_resource": self.owners_of_resource,
        }


def _attribute(found: Attributions, owner: object, resource: Resource | None, evidence: str) -> None:
    if resource is None or not isinstance(owner, str) or not owner.strip():
        return
    found.setdefault((owner.strip(), resource), set()).add(evidence)


# -- what MLflow knows (I/O through the signed client)


def read_registry(mlflow: SignedMlflow) -> Registry:
    registry = Registry()
    for experiment in mlflow.pages(
        "GET",
        "/api/2.0/mlflow/experiments/search",
        "experiments",
        query={"max_results": "1000", "view_type": "ALL"},
    ):
        registry.experiments[str(experiment["experiment_id"])] = Resource(
            "experiment",
            str(experiment["experiment_id"]),
            str(experiment.get("name", "")),
            experiment.get("lifecycle_stage") == "deleted",
        )
    for kind, query in (("registered_model", {}), ("prompt", {"filter": PROMPT_FILTER})):
        for model in mlflow.pages(
            "GET",
            "/api/2.0/mlflow/registered-models/search",
            "registered_models",
            query={"max_results": "1000", **query},
        ):
            name = str(model["name"])
            registry.models[name] = Resource(kind, name, name)
    return registry


def _quoted(value: str) -> str | None:
    """`value` as a string literal of MLflow's search filters, or None when it cannot be one."""
    if "\\" in value:
        return None
    if "'" not in value:
        return f"'{value}'"
    return f'"{value}"' if '"' not in value else None


def _run_owner(run: dict[str, object]) -> str | None:
    data = run.get("data")
    tags = data.get("tags") if isinstance(data, dict) else None
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, dict) and tag.get("key") == CREATOR_TAG:
            value = tag.get("value")
            return value if isinstance(value, str) else None
    return None


def run_owners(mlflow: SignedMlflow, experiment_id: str) -> set[str]:
    """Every distinct `mlflow.user` of the experiment's runs (deleted runs too), in one small query per
    owner rather than by reading every run."""
    found: set[str] = set()
    while len(found) < MAX_EXCLUDED:
        quoted = [_quoted(owner) for owner in sorted(found)]
        if any(literal is None for literal in quoted):
            break
        # LIKE '%': only runs that have the tag (a run without one would end the search early).
        clauses = [f"tags.`{CREATOR_TAG}` LIKE '%'"]
        clauses += [f"tags.`{CREATOR_TAG}` != {literal}" for literal in quoted]
        answer = mlflow.call(
            "POST",
            "/api/2.0/mlflow/runs/search",
            body={
                "experiment_ids": [experiment_id],
                "filter": " AND ".join(clauses),
                "run_view_type": "ALL",
                "max_results": 1,
            },
        )
        runs = answer.get("runs") or []
        owner = _run_owner(runs[0]) if runs else None
        if owner is None or owner in found:
            return found
        found.add(owner)
    for run in mlflow.pages(
        "POST",
        "/api/2.0/mlflow/runs/search",
        "runs",
        body={"experiment_ids": [experiment_id], "run_view_type": "ALL", "max_results": RUN_PAGE},
    ):
        owner = _run_owner(run)
        if owner:
            found.add(owner)
    return found


def _owners_of_runs(mlflow: SignedMlflow, registry: Registry, run_ids: set[str]) -> dict[str, str]:
    """run id -> its `mlflow.user`, in batches."""
    owners: dict[str, str] = {}
    ordered = sorted(run_ids)
    experiment_ids = sorted(registry.experiments)
    for start in range(0, len(ordered), RUN_IDS_PER_QUERY):
        batch = ordered[start : start + RUN_IDS_PER_QUERY]
        listed = ", ".join(f"'{run_id}'" for run_id in batch if _quoted(run_id) == f"'{run_id}'")
        if not listed or not experiment_ids:
            continue
        for run in mlflow.pages(
            "POST",
            "/api/2.0/mlflow/runs/search",
            "runs",
            body={
                "experiment_ids": experiment_ids,
                "filter": f"attributes.run_id IN ({listed})",
                "run_view_type": "ALL",
                "max_results": RUN_PAGE,
            },
        ):
            info = run.get("info")
            owner = _run_owner(run)
            if isinstance(info, dict) and owner:
                owners[str(info.get("run_id") or info.get("run_uuid"))] = owner
    return owners


def mlflow_attributions(mlflow: SignedMlflow, registry: Registry) -> Attributions:
    found: Attributions = {}
    for experiment in registry.experiments.values():
        for owner in run_owners(mlflow, experiment.id):
            _attribute(found, owner, experiment, "runs")
    versions: list[dict[str, object]] = []
    for query in ({}, {"filter": PROMPT_FILTER}):
        versions += mlflow.pages(
            "GET",
            "/api/2.0/mlflow/model-versions/search",
            "model_versions",
            query={"max_results": "10000", **query},
        )
    run_ids = {str(version["run_id"]) for version in versions if version.get("run_id")}
    owners = _owners_of_runs(mlflow, registry, run_ids)
    for version in versions:
        model = registry.models.get(str(version.get("name")))
        _attribute(found, version.get("user_id"), model, "model versions")
        _attribute(found, owners.get(str(version.get("run_id"))), model, "model versions (their runs)")
    return found


# -- the audit log (pure)


def audit_events(lines: Iterable[str]) -> list[dict[str, object]]:
    """The audit lines that say who made something, in time order; other lines are ignored."""
    wanted = {
        "experiment.created",
        "promptlab_run.created",
        "registered_model.created",
        "registered_model.renamed",
        "registered_model.deleted",
        "model_version.created",
    }
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("audit") in wanted and event.get("status") == 200:
            events.append(event)
    return sorted(events, key=lambda event: str(event.get("ts", "")))


def audit_attributions(events: Iterable[dict[str, object]], registry: Registry) -> Attributions:
    found: Attributions = {}
    by_model: dict[str, dict[str, set[str]]] = {}  # model name (as renamed) -> owner -> evidence
    for event in events:
        kind, owner, name = event.get("audit"), event.get("owner"), str(event.get("name", ""))
        if kind == "experiment.created":
            _attribute(found, owner, registry.experiment_named(name), "audit: created it")
        elif kind == "promptlab_run.created":
            experiment = registry.experiments.get(str(event.get("experiment_id", "")))
            _attribute(found, owner, experiment, "audit: prompt-lab runs")
        elif kind == "registered_model.created":
            by_model[name] = {}  # a new model of that name: earlier owners were a deleted one's
            if isinstance(owner, str):
                by_model[name][owner] = {"audit: created it"}
        elif kind == "registered_model.renamed":
            by_model[str(event.get("new_name", ""))] = by_model.pop(name, {})
        elif kind == "registered_model.deleted":
            by_model.pop(name, None)
        elif kind == "model_version.created" and isinstance(owner, str):
            by_model.setdefault(name, {}).setdefault(owner, set()).add("audit: created versions")
    for name, owners in by_model.items():
        for owner, evidence in owners.items():
            for item in evidence:
                _attribute(found, owner, registry.models.get(name), item)
    return found


# -- proposals


def _default_experiment(resource: Resource) -> Resource | None:
    return resource if resource.kind == "experiment" and resource.id == DEFAULT_EXPERIMENT else None


def _order(owner: str, resource: Resource) -> tuple[str, int, str, str]:
    """Experiments before models and prompts, experiment ids in numeric order, then owners."""
    number = int(resource.id) if resource.kind == "experiment" and resource.id.isdigit() else 0
    return (resource.kind, number, resource.id, owner)


def propose(*sources: Attributions, key_owners: set[str] | None, any_owner: bool = False) -> list[Proposal]:
    """One proposal per (owner, resource), sorted by resource then owner. With `key_owners` known, an
    owner no key has is skipped unless `any_owner`."""
    merged: Attributions = {}
    for source in sources:
        for where, evidence in source.items():
            merged.setdefault(where, set()).update(evidence)
    proposals = [
        Proposal(owner, resource, sorted(evidence))
        for (owner, resource), evidence in sorted(merged.items(), key=lambda item: _order(*item[0]))
    ]
    per_resource: dict[Resource, int] = {}
    for proposal in proposals:
        per_resource[proposal.resource] = per_resource.get(proposal.resource, 0) + 1
    for proposal in proposals:
        proposal.owners_of_resource = per_resource[proposal.resource]
        if proposal.resource == _default_experiment(proposal.resource):
            proposal.level = SHARED_LEVEL
        if reserved_user(proposal.owner):
            proposal.status, proposal.detail = "skipped", "a name reserved for the gateway"
        elif key_owners is not None and proposal.owner not in key_owners and not any_owner:
            proposal.status, proposal.detail = "skipped", "no key has this owner (--any-owner to include)"
    return proposals


def own_grants(mlflow: SignedMlflow, owner: str) -> dict[tuple[str, str], str] | None:
    """The owner's own grants in MLflow, (resource_type, resource_id) -> level; None: no such user."""
    try:
        answer = mlflow.call("GET", "/api/3.0/mlflow/users/permissions/list", query={"username": owner})
    except MlflowError as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    rows = answer.get("permissions") or []
    return {
        (str(row["resource_type"]), str(row["resource_pattern"])): str(row["permission"])
        for row in rows
        if isinstance(row, dict) and str(row.get("role_name", "")).startswith(OWN_ROLE_PREFIX)
    }


def mark_existing(mlflow: SignedMlflow, proposals: list[Proposal]) -> dict[str, bool]:
    """Marks proposals whose owner already has a grant of their own on the resource; returns which
    owners exist as MLflow users."""
    exists: dict[str, bool] = {}
    for owner in sorted({proposal.owner for proposal in proposals if proposal.status == "new"}):
        grants = own_grants(mlflow, owner)
        exists[owner] = grants is not None
        for proposal in proposals:
            if proposal.owner != owner or proposal.status != "new":
                continue
            level = (grants or {}).get((proposal.resource.kind, proposal.resource.id))
            if level is not None:
                proposal.status, proposal.detail = "exists", f"already has {level} (kept)"
    return exists


def apply(
    mlflow: SignedMlflow,
    proposals: list[Proposal],
    users: dict[str, bool],
    audited: Callable[[Proposal], None],
) -> None:
    """Makes every `new` proposal's grant (creating the MLflow user first when needed); a grant that
    appeared meanwhile is `exists`, a refusal `failed` with MLflow's error code."""
    for proposal in proposals:
        if proposal.status != "new":
            continue
        try:
            if not users.get(proposal.owner):
                _create_user(mlflow, proposal.owner)
                users[proposal.owner] = True
            mlflow.call(
                "POST",
                "/api/3.0/mlflow/users/permissions/grant",
                body={
                    "username": proposal.owner,
                    "resource_type": proposal.resource.kind,
                    "resource_id": proposal.resource.id,
                    "permission": proposal.level,
                },
            )
        except MlflowError as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                proposal.status, proposal.detail = "exists", "granted meanwhile (kept)"
            else:
                proposal.status, proposal.detail = "failed", exc.message
            continue
        proposal.status = "applied"
        audited(proposal)


def _create_user(mlflow: SignedMlflow, owner: str) -> None:
    """The MLflow user the gateway would create on the owner's first request: a random password nobody
    ever presents (the gateway authenticates)."""
    try:
        mlflow.call(
            "POST",
            "/api/2.0/mlflow/users/create",
            body={"username": owner, "password": secrets.token_urlsafe(32)},
        )
    except MlflowError as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


# -- output


def counts(proposals: list[Proposal]) -> dict[str, int]:
    found = dict.fromkeys(("new", "applied", "exists", "skipped", "failed"), 0)
    for proposal in proposals:
        found[proposal.status] += 1
    return found


def _shared(proposal: Proposal) -> str:
    count = proposal.owners_of_resource
    return f" (one of {count} owners: review)" if count > 1 else ""


def table(proposals: list[Proposal]) -> Iterator[str]:
    if not proposals:
        yield "Nothing to propose: no run, model version or audit line names an owner of anything."
        return
    rows = [
        (
            proposal.owner,
            proposal.level,
            proposal.resource.label(),
            ", ".join(proposal.evidence),
            proposal.status + (f": {proposal.detail}" if proposal.detail else "") + _shared(proposal),
        )
        for proposal in proposals
    ]
    heading = ("OWNER", "GRANT", "RESOURCE", "FROM", "STATUS")
    widths = [min(40, max(len(row[column]) for row in (heading, *rows))) for column in range(4)]
    for row in (heading, *rows):
        yield "  ".join(f"{cell:<{width}}" for cell, width in zip(row, widths, strict=False)) + f"  {row[4]}"


def as_json(proposals: list[Proposal], *, applied: bool) -> str:
    return json.dumps(
        {
            "applied": applied,
            "counts": counts(proposals),
            "proposals": [proposal.as_dict() for proposal in proposals],
        },
        indent=2,
    )
