"""Registry events from the writes the gateway forwards (pure): which routes make one, and the event's data
from the request MLflow was sent and the answer it gave.

Only answered writes count: the gateway emits an event after MLflow answered 2xx, never for a refused or
failed request. Data takes the shape of MLflow's own webhook payloads (`mlflow/webhooks/types.py`) where
MLflow has the event; `model_version.stage_transitioned` is the gateway's own. Every route and spelling the
inspected table covers (`inspection.py`: every mount, `api` and `ajax-api`, 2.0 and 3.0) makes its event,
because these routes are inspected, so their bodies are small JSON already read whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from hokusai_registry.policy import webhooks
from hokusai_registry.policy.inspection import camel, parse
from hokusai_registry.policy.routes import API_ROOT

_API_ROOT = re.compile(API_ROOT)
# The answers these routes give are a few KiB; one longer is not read for its event (the event still
# goes out, with what the request said).
MAX_ANSWER = 256 << 10

Data = dict[str, Any]


def _field(source: Data, name: str) -> Any:
    for spelling in (name, camel(name)):
        if spelling in source:
            return source[spelling]
    return None


def _text(source: Data, name: str) -> str | None:
    value = _field(source, name)
    return None if value is None else str(value)


def _tags(value: Any) -> dict[str, str]:
    """MLflow's `[{"key", "value"}]` as the `{key: value}` its webhook payloads carry."""
    if not isinstance(value, list):
        return {}
    return {
        str(entry["key"]): str(entry.get("value", ""))
        for entry in value
        if isinstance(entry, dict) and "key" in entry
    }


def _version(answer: Data) -> Data:
    found = _field(answer, "model_version")
    return found if isinstance(found, dict) else {}


def _registered_model_created(request: Data, answer: Data) -> Data:
    model = _field(answer, "registered_model")
    model = model if isinstance(model, dict) else {}
    return {
        "name": _text(model, "name") or _text(request, "name"),
        "tags": _tags(_field(model, "tags") or _field(request, "tags")),
        "description": _text(model, "description") or _text(request, "description"),
    }


def _model_version_created(request: Data, answer: Data) -> Data:
    version = _version(answer)
    return {
        "name": _text(version, "name") or _text(request, "name"),
        "version": _text(version, "version"),
        "source": _text(version, "source") or _text(request, "source"),
        "run_id": _text(version, "run_id") or _text(request, "run_id"),
        "tags": _tags(_field(version, "tags") or _field(request, "tags")),
        "description": _text(version, "description") or _text(request, "description"),
    }


def _alias_created(request: Data, answer: Data) -> Data:
    return {
        "name": _text(request, "name"),
        "alias": _text(request, "alias"),
        "version": _text(request, "version"),
    }


def _alias_deleted(request: Data, answer: Data) -> Data:
    return {"name": _text(request, "name"), "alias": _text(request, "alias")}


def _stage_transitioned(request: Data, answer: Data) -> Data:
    version = _version(answer)
    archive = _field(request, "archive_existing_versions")
    return {
        "name": _text(version, "name") or _text(request, "name"),
        "version": _text(version, "version") or _text(request, "version"),
        "stage": _text(version, "current_stage") or _text(request, "stage"),
        "archive_existing_versions": archive is True or str(archive).lower() == "true",
    }


Builder = Callable[[Data, Data], Data]
_TABLE: dict[tuple[str, str], tuple[str, Builder]] = {
    ("POST", "registered-models/create"): (webhooks.REGISTERED_MODEL_CREATED, _registered_model_created),
    ("POST", "model-versions/create"): (webhooks.MODEL_VERSION_CREATED, _model_version_created),
    ("POST", "registered-models/alias"): (webhooks.ALIAS_CREATED, _alias_created),
    ("DELETE", "registered-models/alias"): (webhooks.ALIAS_DELETED, _alias_deleted),
    ("POST", "model-versions/transition-stage"): (webhooks.STAGE_TRANSITIONED, _stage_transitioned),
}


def event_for(method: str, path: str) -> str | None:
    """The event a forwarded request makes once MLflow answered 2xx (the canonical MLflow path), or None."""
    root, found, route = path.partition("/mlflow/")
    if not found:
        return None
    row = _TABLE.get((method, route))
    if row is None or not _API_ROOT.fullmatch(root):
        return None
    return row[0]


def event_data(
    method: str, path: str, body: bytes, query: dict[str, str], answer: bytes | None
) -> tuple[str, Data] | None:
    """The event and its data for a request MLflow answered 2xx: from its JSON `body` (or, bodiless, its
    query string) and MLflow's JSON `answer` (None: not kept, too long)."""
    request = parse(body) if body.strip() else None
    answered = parse(answer) if answer else None
    return write_event(method, path, request if request is not None else dict(query), answered or {})


def write_event(method: str, path: str, request: Data, answer: Data) -> tuple[str, Data] | None:
    """The event and its data for a registry write MLflow answered 2xx, from the parsed request and
    answer: a forwarded one, or one the gateway made itself (a promotion applied moves the alias as a
    client's `set_registered_model_alias` would, and its listeners hear of it the same way)."""
    row = _TABLE.get((method, path.partition("/mlflow/")[2]))
    if row is None:
        return None
    event, build = row
    return event, build(request, answer)
