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

_API = r"/(?:api|ajax-api)/[23]\.0/mlflow"
# Bodies of inspected routes are MLflow API JSON: tags and parameters, never artifacts.
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


def _row(
    method: str, route: str, event: str, *fields: str, attribute: bool = False
) -> tuple[str, re.Pattern[str], Inspection]:
    return method, re.compile(f"{_API}/{route}"), Inspection(event, fields, attribute)


_TABLE = (
    _row("POST", "runs/create", "run.created", "experiment_id", attribute=True),
    _row("POST", "registered-models/create", "registered_model.created", "name"),
    _row("PATCH", "registered-models/rename", "registered_model.renamed", "name", "new_name"),
    _row("DELETE", "registered-models/delete", "registered_model.deleted", "name"),
    _row("POST", "model-versions/create", "model_version.created", "name", "run_id", "source"),
    _row("DELETE", "model-versions/delete", "model_version.deleted", "name", "version"),
    _row(
        "POST", "model-versions/transition-stage", "model_version.stage_changed", "name", "version", "stage"
    ),
    _row("POST", "registered-models/alias", "model_alias.set", "name", "alias", "version"),
    _row("DELETE", "registered-models/alias", "model_alias.deleted", "name", "alias"),
)


def inspection(method: str, path: str) -> Inspection | None:
    for table_method, pattern, found in _TABLE:
        if method == table_method and pattern.fullmatch(path):
            return found
    return None


def parse(body: bytes) -> dict[str, Any] | None:
    """The JSON object in a request body, or None when it is not one (MLflow then rejects it)."""
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def audit_fields(found: Inspection, data: dict[str, Any] | None, query: dict[str, str]) -> dict[str, Any]:
    """The fields an audit line reports, from the JSON body or, for bodiless calls, the query string."""
    source: dict[str, Any] = data if data is not None else query
    return {name: str(source[name])[:500] for name in found.fields if name in source}


def attribute_run(data: dict[str, Any], user: str) -> bytes:
    """The runs/create body with `user` as the run's user, whatever the client sent."""
    data["user_id"] = user
    tags = [
        tag
        for tag in data.get("tags") or []
        if not (isinstance(tag, dict) and tag.get("key") == "mlflow.user")
    ]
    tags.append({"key": "mlflow.user", "value": user})
    data["tags"] = tags
    return json.dumps(data).encode()
