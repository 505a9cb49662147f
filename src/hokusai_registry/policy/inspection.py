"""Requests whose small JSON body the gateway reads before forwarding (pure policy).

- Creation (runs, prompt-lab runs, logged models, traces): the key's owner becomes the creator
  (`user_id` and the `mlflow.user` tag or trace metadata), whatever the client claimed, so the MLflow UI
  shows who really did it.
- Reserved tags: `mlflow.user` says who created a run, logged model or trace. It is the gateway's to
  write: a later set, batch or delete that names it is refused (400), on every route and spelling MLflow
  accepts. (`mlflow.trace.user` is not one: MLflow keeps the application's end user there, set by
  `mlflow.trace(user=...)`.)
- Experiment creation, registry writes and prompt-lab runs: the audit log records what was created,
  renamed, aliased, moved or deleted, and by whom.
- GraphQL: MLflow's schema has mutations; they need the `write` scope, decided by a GraphQL parser.

Everything else streams through unread. MLflow parses bodies with protobuf's JSON parser, which takes a
field by its proto name (`new_name`) or its JSON name (`newName`): both spellings are read here.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType
from graphql import parse as parse_graphql

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.routes import API_PREFIX, API_ROOT

# The part before "/mlflow/<route>": every API flavour the UI and clients use.
_API_ROOT = re.compile(API_ROOT)
MAX_INSPECTED_BODY = 4 << 20
# The tag (and trace metadata key) naming who created a run, logged model or trace.
CREATOR_KEY = "mlflow.user"


class Kind(enum.Enum):
    FIELD = "field"  # a string field: the creator's name
    LIST = "list"  # a list of {"key", "value"} (run, logged-model and v2 trace tags and metadata)
    MAP = "map"  # a {key: value} object (v3 trace metadata and tags)
    KEY = "key"  # a field holding the one tag key the call sets or deletes
    PATH_KEY = "path_key"  # the tag key is the request path's last segment


@dataclass(frozen=True)
class Place:
    """Where a body (or path) names the creator: snake_case field names from the body's root."""

    path: tuple[str, ...]
    kind: Kind


@dataclass(frozen=True)
class Inspection:
    event: str | None = None  # the audit event; None: not audited
    fields: tuple[str, ...] = ()  # body fields copied into the audit line
    creates: tuple[Place, ...] = ()  # set to the key's owner
    reserved: tuple[Place, ...] = ()  # refused when they name CREATOR_KEY
    graphql: bool = False  # mutations need `write`
    max_body: int = MAX_INSPECTED_BODY  # parsed whole as JSON: bounded by what the call needs


@dataclass(frozen=True)
class Inspected:
    body: bytes  # what is forwarded
    fields: dict[str, str]  # for the audit line
    needs: str | None = None  # a scope the caller must hold beyond the route's own


_TAGS = Place(("tags",), Kind.LIST)
_KEY = Place(("key",), Kind.KEY)
_TRACE_INFO = ("trace", "trace_info")
_RUN_CREATED = Inspection(creates=(Place(("user_id",), Kind.FIELD), _TAGS))
_TAGS_SET = Inspection(reserved=(_TAGS,))
_ONE_TAG = Inspection(reserved=(_KEY,))  # set-tag, delete-tag: the key in the body
# The parser stops at HOKUSAI_GRAPHQL_MAX_TOKENS; the UI's queries and variables are a few KiB.
_GRAPHQL = Inspection(graphql=True, max_body=64 << 10)

# (method, route after "/mlflow/") -> what to do; a dict lookup, so other requests pay almost nothing.
_TABLE = {
    ("POST", "runs/create"): _RUN_CREATED,
    # The UI's prompt lab: MLflow takes `user_id` from the body and its store fails on any tag given.
    ("POST", "runs/create-promptlab-run"): Inspection(
        "promptlab_run.created",
        ("experiment_id", "run_name"),
        creates=(Place(("user_id",), Kind.FIELD),),
        reserved=(_TAGS,),
    ),
    ("POST", "runs/set-tag"): _ONE_TAG,
    ("POST", "runs/delete-tag"): _ONE_TAG,
    ("POST", "runs/log-batch"): _TAGS_SET,
    ("POST", "logged-models"): Inspection(creates=(_TAGS,)),
    # Who created an experiment: MLflow keeps no creator, and `grants backfill` reads this line.
    ("POST", "experiments/create"): Inspection("experiment.created", ("name",)),
    ("POST", "registered-models/create"): Inspection("registered_model.created", ("name",)),
    ("POST", "registered-models/rename"): Inspection("registered_model.renamed", ("name", "new_name")),
    ("DELETE", "registered-models/delete"): Inspection("registered_model.deleted", ("name",)),
    ("POST", "model-versions/create"): Inspection("model_version.created", ("name", "run_id", "source")),
    # The record of an approved promotion (`hokusai.promotion.*`) is the gateway's: `policy/protection.py`.
    ("POST", "model-versions/set-tag"): Inspection(),
    ("DELETE", "model-versions/delete-tag"): Inspection(),
    ("DELETE", "model-versions/delete"): Inspection("model_version.deleted", ("name", "version")),
    ("POST", "model-versions/transition-stage"): Inspection(
        "model_version.stage_changed", ("name", "version", "stage")
    ),
    ("POST", "registered-models/alias"): Inspection("model_alias.set", ("name", "alias", "version")),
    ("DELETE", "registered-models/alias"): Inspection("model_alias.deleted", ("name", "alias")),
}
# Trace start: v2 (2.0) and v3 (3.0) share a route but not a body; MLflow picks the handler by version.
_BY_VERSION = {
    ("POST", "traces"): {
        "2.0": Inspection(creates=(Place(("request_metadata",), Kind.LIST), _TAGS)),
        "3.0": Inspection(
            creates=(
                Place((*_TRACE_INFO, "trace_metadata"), Kind.MAP),
                Place((*_TRACE_INFO, "tags"), Kind.MAP),
            )
        ),
    }
}
# Routes with an id in the path, tried only after the table (most requests never get here).
_SEGMENT = r"[^/]+"
_PATTERNS = tuple(
    (method, re.compile(pattern), found)
    for method, pattern, found in (
        ("PATCH", rf"logged-models/{_SEGMENT}/tags", _TAGS_SET),
        (
            "DELETE",
            rf"logged-models/{_SEGMENT}/tags/{_SEGMENT}",
            Inspection(reserved=(Place((), Kind.PATH_KEY),)),
        ),
        # v2 trace end: metadata and tags merged into an existing trace.
        (
            "PATCH",
            rf"traces/{_SEGMENT}",
            Inspection(reserved=(Place(("request_metadata",), Kind.LIST), _TAGS)),
        ),
        ("PATCH", rf"traces/{_SEGMENT}/tags", _ONE_TAG),
        ("DELETE", rf"traces/{_SEGMENT}/tags", _ONE_TAG),
    )
)
_PATTERNED = ("logged-models/", "traces/")
# MLflow's GraphQL endpoint reads a JSON body on GET (and so HEAD) as well as on POST.
_GRAPHQL_METHODS = frozenset({"GET", "HEAD", "POST"})


def inspection(method: str, path: str) -> Inspection | None:
    if path == "/graphql":
        return _GRAPHQL if method in _GRAPHQL_METHODS else None
    root, found, route = path.partition("/mlflow/")
    if not found:
        return None
    inspected = _TABLE.get((method, route))
    versioned = _BY_VERSION.get((method, route))
    if versioned is not None:
        inspected = versioned.get(root[-3:])
    elif inspected is None and route.startswith(_PATTERNED):
        inspected = next(
            (row for verb, pattern, row in _PATTERNS if verb == method and pattern.fullmatch(route)), None
        )
    if inspected is None or not _API_ROOT.fullmatch(root):
        return None
    return inspected


def inspected_routes() -> list[tuple[str, str]]:
    """Every (method, path pattern) inspected, for the contract test against MLflow's routes."""
    rows = [(method, rf"{API_ROOT}/mlflow/{re.escape(route)}") for method, route in _TABLE]
    rows += [
        (method, rf"{API_PREFIX}/{re.escape(version)}/mlflow/{re.escape(route)}")
        for (method, route), versions in _BY_VERSION.items()
        for version in versions
    ]
    rows += [(method, rf"{API_ROOT}/mlflow/{pattern.pattern}") for method, pattern, _ in _PATTERNS]
    return rows + [(method, "/graphql") for method in sorted(_GRAPHQL_METHODS - {"HEAD"})]


def parse(body: bytes) -> dict[str, Any] | None:
    """The JSON object in a request body, or None when it is not one (MLflow then rejects it)."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def camel(name: str) -> str:
    """The JSON name protobuf gives a field: lowerCamelCase of its proto name."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _spellings(name: str) -> tuple[str, ...]:
    other = camel(name)
    return (name,) if other == name else (name, other)


def audit_fields(found: Inspection, data: dict[str, Any] | None, query: dict[str, str]) -> dict[str, str]:
    """The fields an audit line reports (by their proto names), from the JSON body or, for bodiless
    calls, the query string; either spelling of a field counts."""
    source: dict[str, Any] = data if data is not None else query
    fields = {}
    for name in found.fields:
        for spelling in _spellings(name):
            if spelling in source:
                fields[name] = str(source[spelling])[:500]
                break
    return fields


def _containers(
    data: dict[str, Any], path: tuple[str, ...], create: bool
) -> list[tuple[dict[str, Any], str]]:
    """(object, field name) pairs where the body holds `path`, under either spelling of each field; with
    `create`, the path is made (snake_case) where the body lacks it. ValueError for a part that is not
    an object where MLflow expects one."""
    found = [data]
    for name in path[:-1]:
        deeper = []
        for container in found:
            present = [spelling for spelling in _spellings(name) if spelling in container]
            if not present and create:
                container[name] = {}
                present = [name]
            for spelling in present:
                value = container[spelling]
                if not isinstance(value, dict):
                    raise ValueError(f"'{spelling}' must be an object")
                deeper.append(value)
        found = deeper
    pairs = []
    for container in found:
        present = [spelling for spelling in _spellings(path[-1]) if spelling in container]
        pairs += [(container, spelling) for spelling in present or ([path[-1]] if create else [])]
    return pairs


def _set_creator(data: dict[str, Any], place: Place, user: str) -> None:
    for container, name in _containers(data, place.path, create=True):
        if place.kind is Kind.FIELD:
            container[name] = user
        elif place.kind is Kind.MAP:
            given = container.get(name)
            if given is None:
                given = container[name] = {}
            if not isinstance(given, dict):
                raise ValueError(f"'{name}' must be an object")
            given[CREATOR_KEY] = user
        else:
            given = container.get(name) or []
            if not isinstance(given, list):
                raise ValueError(f"'{name}' must be a list")
            kept = [
                entry for entry in given if not (isinstance(entry, dict) and entry.get("key") == CREATOR_KEY)
            ]
            container[name] = [*kept, {"key": CREATOR_KEY, "value": user}]


def _names_creator(data: dict[str, Any], place: Place, path: str) -> bool:
    if place.kind is Kind.PATH_KEY:
        return path.rpartition("/")[2] == CREATOR_KEY
    for container, name in _containers(data, place.path, create=False):
        value = container[name]
        if place.kind is Kind.KEY and value == CREATOR_KEY:
            return True
        if place.kind is Kind.MAP and isinstance(value, dict) and CREATOR_KEY in value:
            return True
        if (
            place.kind is Kind.LIST
            and isinstance(value, list)
            and any(isinstance(entry, dict) and entry.get("key") == CREATOR_KEY for entry in value)
        ):
            return True
    return False


def _reserved_refusal(route: str) -> Refusal:
    return Refusal(
        Reason.RESERVED_TAG,
        f"the tag '{CREATOR_KEY}' records who created the run, model or trace; the gateway sets it from "
        f"the key's owner, so {route} may not set, change or delete it. Leave '{CREATOR_KEY}' out (use "
        "another tag name for your own data).",
    )


def _graphql_needs(data: dict[str, Any] | None, max_tokens: int) -> str | None:
    """The scope a GraphQL request needs beyond `read`: `write` for a mutation or subscription."""

    def invalid(detail: str) -> Refusal:
        return Refusal(Reason.INVALID_GRAPHQL, f"the GraphQL request is not valid: {detail}.")

    if data is None or not isinstance(data.get("query"), str):
        raise invalid("the body must be a JSON object with a 'query' string")
    name = data.get("operationName")
    if name is not None and not isinstance(name, str):
        raise invalid("'operationName' must be a string")
    try:
        document = parse_graphql(data["query"], no_location=True, max_tokens=max_tokens)
    except GraphQLError as exc:
        # The parser stops at the token limit, so a huge query costs the gateway little.
        limit = (
            f" (at most {max_tokens} tokens: HOKUSAI_GRAPHQL_MAX_TOKENS)" if "tokens" in exc.message else ""
        )
        raise invalid(exc.message.rstrip(".") + limit) from None
    except RecursionError:
        raise invalid("it is nested too deeply") from None
    operations = [node for node in document.definitions if isinstance(node, OperationDefinitionNode)]
    if name:
        operations = [node for node in operations if node.name is not None and node.name.value == name]
        if not operations:
            raise invalid(f"it has no operation named {name[:100]!r}")
    if len(operations) != 1:
        raise invalid("it must hold exactly one operation, or name one in 'operationName'")
    operation = operations[0].operation
    return "write" if operation in (OperationType.MUTATION, OperationType.SUBSCRIPTION) else None


def inspect(
    found: Inspection,
    path: str,
    body: bytes,
    query: dict[str, str],
    *,
    owner: str,
    graphql_max_tokens: int,
) -> Inspected:
    """What to forward for an inspected request, the audit fields, and any scope it needs: the creator
    set to `owner`, a reserved tag refused, a GraphQL mutation marked as needing `write`."""
    data = parse(body)
    if data is None and body.strip() and not found.graphql:
        # The gateway reads these to attribute and audit them: it forwards none it cannot read.
        raise Refusal(Reason.BODY_NOT_JSON, "the request body is not a JSON object.")
    route = path.partition("/mlflow/")[2]
    try:
        if found.graphql:
            return Inspected(body, {}, _graphql_needs(data, graphql_max_tokens))
        if any(_names_creator(data or {}, place, path) for place in found.reserved):
            raise _reserved_refusal(route)
        if found.creates:
            # Never forward a creation the gateway could not attribute.
            if data is None:
                raise ValueError("the body must be a JSON object")
            for place in found.creates:
                if place.kind is Kind.FIELD:
                    data.pop(camel(place.path[-1]), None)  # one spelling: MLflow refuses two
                _set_creator(data, place, owner)
            body = json.dumps(data).encode()
    except (ValueError, RecursionError) as exc:
        raise Refusal(Reason.INVALID_REQUEST, f"invalid {route} request: {exc}.") from None
    return Inspected(body, audit_fields(found, data, query))
