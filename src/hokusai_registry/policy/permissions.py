"""What MLflow's permission refusals mean for the caller (pure).

MLflow's auth app answers a denied request with a bare `403 Permission denied`. The gateway replaces
it with MLflow's error JSON naming the user, the request, the level MLflow's model asks for that kind
of request and where to get it; the decision itself is always MLflow's.
"""

from __future__ import annotations

import re

from hokusai_registry.policy.routes import API_ROOT

LEVELS = ("READ", "USE", "EDIT", "MANAGE")
# MLflow's answer when a validator says no (mlflow.server.auth.make_forbidden_response).
MLFLOW_DENIAL = b"Permission denied"

_KINDS = (
    (re.compile(r"registered-models|model-versions|/model-versions/get-artifact"), "registered model"),
    (re.compile(r"/prompts?(?:/|$)|prompt-optimization"), "prompt"),
    (re.compile(r"/scorers?(?:/|$)"), "scorer"),
    (re.compile(r"/gateway(?:/|$)|gateway-proxy"), "AI-gateway endpoint"),
    (re.compile(r"/mcp"), "MCP server"),
    (re.compile(r"/(?:users|roles)(?:/|$)"), "MLflow's users and roles"),
)
_MANAGING = re.compile(r"/permissions(?:/|$)|/delete(?:$|-)|/roles/|/users/")
_USING = re.compile(rf"(?:^/gateway/|{API_ROOT}/mlflow/gateway-proxy|/invocations$|/invoke$)")
_READING = re.compile(
    r"/(?:search|get|list)[a-z-]*$|/get-latest-versions$|presigned-download-url$|^/graphql$"
)


def needed_level(method: str, path: str) -> str:
    """The level MLflow's model asks for a request like this: MANAGE to delete or to change permissions,
    READ to read, USE to invoke, EDIT for other changes."""
    if method in ("GET", "HEAD"):
        return "MANAGE" if "/permissions" in path and "/current/" not in path else "READ"
    if method == "DELETE" or _MANAGING.search(path):
        return "MANAGE"
    if _USING.search(path):
        return "USE"
    if _READING.search(path):
        return "READ"
    return "EDIT"


def resource_kind(path: str) -> str:
    for pattern, kind in _KINDS:
        if pattern.search(path):
            return kind
    return "experiment"


def denial_message(user: str, method: str, path: str) -> str:
    level = needed_level(method, path)
    kind = resource_kind(path)
    return (
        f"{user} may not {method} {path}: that needs {level} on the {kind} it names (MLflow's permissions; "
        f"a DENY on it, or on a team of {user}'s, also refuses). Ask an owner with MANAGE on it, or an "
        "admin (`hokusai-registry grants add`), for a grant; nothing was changed."
    )
