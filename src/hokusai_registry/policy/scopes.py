"""Which scope each forwarded MLflow route needs (pure data and one lookup).

Scopes: `read` < `write` < `admin` (each implies the ones before it). The table is matched top to bottom
on the canonical MLflow path (mount removed); a request no row matches is denied. A test walks the
installed MLflow's routes and fails when one has no row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hokusai_registry.policy.routes import API_ROOT as _API

SCOPES = ("read", "write", "admin")
_IMPLIED = {"read": ("read",), "write": ("read", "write"), "admin": ("read", "write", "admin")}

READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Rule:
    methods: frozenset[str]
    pattern: re.Pattern[str]
    scope: str


def _rule(methods: frozenset[str], pattern: str, scope: str) -> Rule:
    return Rule(methods, re.compile(pattern), scope)


RULES = (
    _rule(READ_METHODS, r"/.*", "read"),  # every GET and HEAD MLflow serves only reads
    # POSTs that only read: searches carry their filters in a body.
    _rule(frozenset({"POST"}), rf"{_API}/mlflow/.*/search(?:-[a-z-]+)?", "read"),  # search with a JSON body
    _rule(frozenset({"POST"}), rf"{_API}/mlflow/registered-models/get-latest-versions", "read"),  # lookup
    _rule(frozenset({"POST"}), rf"{_API}/mlflow/artifacts/presigned-download-url", "read"),  # download link
    # GraphQL: queries read; a mutation needs `write`, decided on the body (`inspection.py`).
    _rule(frozenset({"POST"}), r"/graphql", "read"),
    _rule(frozenset({"POST"}), r"/ajax-api/3\.0/mlflow/ui-telemetry", "read"),  # the UI's usage pings
    _rule(frozenset({"POST"}), r"/ajax-api/3\.0/jobs/search", "read"),  # job search
    # Server-side configuration: AI-gateway secrets and endpoints, workspaces, webhooks (which make
    # MLflow call out to any URL).
    _rule(WRITE_METHODS, rf"{_API}/mlflow/(?:gateway|workspaces)(?:/.*)?", "admin"),  # server configuration
    _rule(WRITE_METHODS, rf"{_API}/mlflow/webhooks(?:/.*)?", "admin"),  # webhooks call out to any URL
    _rule(WRITE_METHODS, r"/.*", "write"),  # everything else that changes state
)


def required_scope(method: str, path: str) -> str | None:
    """The scope a request needs, or None when no rule allows the method at all."""
    for rule in RULES:
        if method in rule.methods and rule.pattern.fullmatch(path):
            return rule.scope
    return None


def expand(scope: str) -> tuple[str, ...]:
    """The scopes a key created with `scope` holds."""
    return _IMPLIED[scope]


def grants(held: tuple[str, ...], needed: str) -> bool:
    return needed in held
