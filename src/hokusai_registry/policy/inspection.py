"""Requests whose small JSON body the gateway reads before forwarding (pure policy).

- Run creation: the key's owner becomes the run's user (`user_id` and the `mlflow.user` tag), whatever
  the client claimed, so the MLflow UI shows who really did it.
- Registry writes: the audit log records what was created, aliased, moved or deleted, and by whom.

Everything else streams through unread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from hokusai_registry.policy.routes import API_ROOT

# The part before "/mlflow/<route>": every API flavour the UI and clients use.
_API_ROOT = re.compile(API_ROOT)
MAX_INSPECTED_BODY = 4 << 20


@dataclass(frozen=True)
class Inspection:
    event: str  # the audit event
    fields: tuple[str, ...]  # body fields copied into the audit line
    attribute: bool = False  # rewrite the run's user

    @property
    def audited(self) -> bool:
        # Runs are created by the thousand; their attribution is in MLflow itself.
        return not self.attribute


# (method, route after "/mlflow/") -> what to do; a dict lookup, so other requests pay almost nothing.
_TABLE = {
    ("POST", "runs/create"): Inspection("run.created", ("experiment_id",), attribute=True),
    ("POST", "registered-models/create"): Inspection("registered_model.created", ("name",)),
    ("PATCH", "registered-models/rename"): Inspection("registered_model.renamed", ("name", "new_name")),
    ("DELETE", "registered-models/delete"): Inspection("registered_model.deleted", ("name",)),
    ("POST", "model-versions/create"): Inspection("model_version.created", ("name", "run_id", "source")),
    ("DELETE", "model-versions/delete"): Inspection("model_version.deleted", ("name", "version")),
    ("POST", "model-versions/transition-stage"): Inspection(
        "model_version.stage_changed", ("name", "version", "stage")
    ),
    ("POST", "registered-models/alias"): Inspection("model_alias.set", ("name", "alias", "version")),
    ("DELETE", "registered-models/alias"): Inspection("model_alias.deleted", ("name", "alias")),
}


def inspection(method: str, path: str) -> Inspection | None:
    root, found, route = path.partition("/mlflow/")
    if not found:
        return None
    inspected = _TABLE.get((method, route))
    if inspected is None or not _API_ROOT.fullmatch(root):
        return None
    return inspected


def parse(body: bytes) -> dict[str, Any] | None:
    """The JSON object in a request body, or None when it is not one (MLflow then rejects it)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def audit_fields(found: Inspection, data: dict[str, Any] | None, query: dict[str, str]) -> dict[str, Any]:
    """The fields an audit line reports, from the JSON body or, for bodiless calls, the query string."""
    source: dict[str, Any] = data if data is not None else query
    return {name: str(source[name])[:500] for name in found.fields if name in source}


def attribute_run(data: dict[str, Any], user: str) -> bytes:
    """The runs/create body with `user` as the run's user, whatever the client sent. ValueError when the
    tags are not a list (MLflow would refuse the body anyway)."""
    data["user_id"] = user
    given = data.get("tags") or []
    if not isinstance(given, list):
        raise ValueError("'tags' must be a list")
    tags = [tag for tag in given if not (isinstance(tag, dict) and tag.get("key") == "mlflow.user")]
    tags.append({"key": "mlflow.user", "value": user})
    data["tags"] = tags
    return json.dumps(data).encode()
