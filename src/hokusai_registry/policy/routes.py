"""The route table: every path the gateway answers, as data (pure).

Two kinds of routes:
- The gateway's own (health, metrics, the admin API and its docs, the pages): answered by the gateway,
  never forwarded. Matched on the request's path as the server decoded it, exactly or by prefix.
- MLflow's route families: matched on the canonical MLflow path (decoded once, mount removed, see
  `paths.py`). Anything no family matches is answered 404 by the gateway and never reaches MLflow.
  Families, not a copied endpoint list: a test walks the installed MLflow's own routes and fails when
  one is not covered.

`API_ROOT` is the one spelling of MLflow's API prefixes; scopes, inspection and the transfer policy
build on it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

# Where the MLflow client may point its tracking URI: /mlflow, /api/mlflow, or the bare host ("").
MOUNTS = ("/mlflow", "/api/mlflow")
# Every API flavour MLflow serves and its UI uses: api and ajax-api (then a version), 2.0 and 3.0.
API_PREFIX = r"/(?:api|ajax-api)"
API_ROOT = rf"{API_PREFIX}/[23]\.0"

READS = frozenset({"GET", "HEAD"})
FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


class Family(enum.Enum):
    # JSON APIs: bounded bodies, answered within the API read timeout.
    REST = "rest"
    # Artifact bytes and AI-gateway streams: any size, no total deadline, only an idle timeout.
    TRANSFER = "transfer"
    # The MLflow web UI's page and static files.
    UI = "ui"
    # The gateway's own routes (the access line's family).
    GATEWAY = "gateway"


class Handler(enum.Enum):
    """The gateway's own answers; the gateway maps each to the component that gives it."""

    LIVENESS = "liveness"
    READINESS = "readiness"
    METRICS = "metrics"
    MLFLOW_HEALTH = "mlflow_health"
    MLFLOW_HEALTH_DETAILED = "mlflow_health_detailed"
    KEYS = "keys"  # the admin REST API: keys, teams, grants and webhooks
    VALIDATE = "validate"  # the auth-service contract: checks the key it is given
    DOCS = "docs"  # the admin API's OpenAPI document, Swagger UI and its assets
    NO_SUCH_API = "no_such_api"  # under the admin API's prefix, but no endpoint
    PAGES = "pages"  # sign-in, sign-out, key administration; they check their own callers


class Caller(enum.Enum):
    """Who may call an own route, checked by the gateway before its handler runs."""

    ANYONE = "anyone"
    KEY = "key"  # any valid key (header or browser session)
    HEADER_KEY = "header_key"  # any valid key in the headers (never a session cookie)
    ADMIN_KEY = "admin_key"  # an admin key in the headers (never a session cookie)
    # An admin key, or a single-sign-on user's key or bearer token, in the headers: people manage their
    # own keys where admins manage all.
    OWN_KEYS = "own_keys"


@dataclass(frozen=True, slots=True)
class OwnRoute:
    handler: Handler
    caller: Caller = Caller.ANYONE
    # None: the handler answers every method itself (405s included).
    methods: frozenset[str] | None = READS
    # Gone where keys live in a remote auth service (which also manages them).
    local_keys_only: bool = False


MLFLOW_HEALTH_PATHS = tuple(mount + "/health/mlflow" for mount in MOUNTS)
KEYS_PATH = "/api/v1/keys"
VALIDATE_PATH = KEYS_PATH + "/validate"
TEAMS_PATH = "/api/v1/teams"
GRANTS_PATH = "/api/v1/grants"
USERS_PATH = "/api/v1/users"
WEBHOOKS_PATH = "/api/v1/webhooks"
PROTECTIONS_PATH = "/api/v1/protections"
PROMOTIONS_PATH = "/api/v1/promotions"
ADMIN_API_PREFIX = "/api/v1/"
DOCS_PATHS = ("/docs", "/openapi.json")
DOCS_ASSETS = "/docs/assets"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
# Single sign-on: where the sign-in page's button starts the authorization code flow, and the redirect URI
# registered at the identity provider (HOKUSAI_PUBLIC_URL + this).
OIDC_LOGIN_PATH = "/login/oidc"
OIDC_CALLBACK_PATH = "/login/oidc/callback"
# Every signed-in user's own keys (self-service).
MY_KEYS_PATH = "/keys"
ADMIN_USERS_PATH = "/admin/users"
ADMIN_KEYS_PATH = "/admin/keys"
ADMIN_TEAMS_PATH = "/admin/teams"
ADMIN_GRANTS_PATH = "/admin/grants"
ADMIN_PROTECTIONS_PATH = "/admin/protections"
# Pending promotion requests, with approve and reject buttons: for every signed-in key.
PROMOTIONS_PAGE_PATH = "/promotions"
PROTECTION_PAGES = (
    ADMIN_PROTECTIONS_PATH,
    ADMIN_PROTECTIONS_PATH + "/remove",
    PROMOTIONS_PAGE_PATH,
    PROMOTIONS_PAGE_PATH + "/approve",
    PROMOTIONS_PAGE_PATH + "/reject",
)
# The teams and grants pages' forms (the team, owner and grant are fields, never path segments).
ADMIN_PERMISSION_PAGES = (
    ADMIN_TEAMS_PATH,
    ADMIN_TEAMS_PATH + "/members",
    ADMIN_TEAMS_PATH + "/remove-member",
    ADMIN_TEAMS_PATH + "/delete",
    ADMIN_GRANTS_PATH,
    ADMIN_GRANTS_PATH + "/remove",
)
STYLESHEET_PATH = "/assets/hokusai.css"

_PAGE = OwnRoute(Handler.PAGES, methods=None)
_DOCS = OwnRoute(Handler.DOCS, methods=None)
_KEYS = OwnRoute(Handler.KEYS, Caller.OWN_KEYS, methods=None, local_keys_only=True)
# Teams and grants live in MLflow, wherever keys are managed.
_PERMISSIONS = OwnRoute(Handler.KEYS, Caller.ADMIN_KEY, methods=None)
# Protection rules live in the key store's database, wherever keys are managed; promotions are for every
# key (the service decides who may approve).
_PROTECTIONS = OwnRoute(Handler.KEYS, Caller.ADMIN_KEY, methods=None)
_PROMOTIONS = OwnRoute(Handler.KEYS, Caller.HEADER_KEY, methods=None)
# Single-sign-on users live beside the keys.
_USERS = OwnRoute(Handler.KEYS, Caller.ADMIN_KEY, methods=None, local_keys_only=True)
# Webhooks live in the key store's database, whoever validates keys.
_WEBHOOKS = OwnRoute(Handler.KEYS, Caller.ADMIN_KEY, methods=None)

OWN_ROUTES: dict[str, OwnRoute] = {
    "/health": OwnRoute(Handler.LIVENESS),
    "/ready": OwnRoute(Handler.READINESS),
    "/metrics": OwnRoute(Handler.METRICS, Caller.KEY),
    **{path: OwnRoute(Handler.MLFLOW_HEALTH) for path in MLFLOW_HEALTH_PATHS},
    **{
        path + "/detailed": OwnRoute(Handler.MLFLOW_HEALTH_DETAILED, Caller.KEY)
        for path in MLFLOW_HEALTH_PATHS
    },
    KEYS_PATH: _KEYS,
    TEAMS_PATH: _PERMISSIONS,
    GRANTS_PATH: _PERMISSIONS,
    USERS_PATH: _USERS,
    WEBHOOKS_PATH: _WEBHOOKS,
    PROTECTIONS_PATH: _PROTECTIONS,
    PROMOTIONS_PATH: _PROMOTIONS,
    VALIDATE_PATH: OwnRoute(Handler.VALIDATE, methods=None, local_keys_only=True),
    **{path: _DOCS for path in DOCS_PATHS},
    **{
        path: _PAGE
        for path in (
            LOGIN_PATH,
            LOGOUT_PATH,
            ADMIN_KEYS_PATH,
            STYLESHEET_PATH,
            OIDC_LOGIN_PATH,
            OIDC_CALLBACK_PATH,
            MY_KEYS_PATH,
            MY_KEYS_PATH + "/revoke",
            ADMIN_USERS_PATH,
            ADMIN_USERS_PATH + "/disable",
            ADMIN_USERS_PATH + "/enable",
        )
    },
    **{path: _PAGE for path in ADMIN_PERMISSION_PAGES},
    **{path: _PAGE for path in PROTECTION_PAGES},
}
# Checked in order when no exact path matches.
OWN_PREFIXES: tuple[tuple[str, OwnRoute], ...] = (
    (KEYS_PATH + "/", _KEYS),
    (TEAMS_PATH + "/", _PERMISSIONS),
    (GRANTS_PATH + "/", _PERMISSIONS),
    (USERS_PATH + "/", _USERS),
    (WEBHOOKS_PATH + "/", _WEBHOOKS),
    (PROTECTIONS_PATH + "/", _PROTECTIONS),
    (PROMOTIONS_PATH + "/", _PROMOTIONS),
    (ADMIN_API_PREFIX, OwnRoute(Handler.NO_SUCH_API, methods=None)),
    (DOCS_ASSETS + "/", _DOCS),
)
# A key's revocation and rotation forms; key ids as in `keys.py`.
_PAGE_PATTERN = re.compile(rf"{ADMIN_KEYS_PATH}/[A-Za-z0-9]{{12}}/(?:revoke|rotate)")


def own_route(path: str) -> OwnRoute | None:
    """The gateway's own route for a path, or None when the path is for MLflow."""
    route = OWN_ROUTES.get(path)
    if route is not None:
        return route
    for prefix, prefixed in OWN_PREFIXES:
        if path.startswith(prefix):
            return prefixed
    if _PAGE_PATTERN.fullmatch(path):
        return _PAGE
    return None


_FAMILY_PATTERNS: dict[Family, tuple[str, ...]] = {
    Family.REST: (
        rf"{API_ROOT}/mlflow/.+",
        r"/ajax-api/3\.0/jobs(?:/.*)?",
        r"/graphql",
        r"/version",
        r"/health",
        r"/v1/traces",
    ),
    Family.TRANSFER: (
        rf"{API_PREFIX}/2\.0/mlflow-artifacts/(?:artifacts|mpu|presigned)(?:/.*)?",
        r"/(?:model-versions/)?get-artifact",
        r"/gateway/.+",
    ),
    Family.UI: (
        r"/",
        r"/static-files/.+",
        r"/build/.+",
    ),
}

_MATCHER = re.compile(
    "|".join(f"(?P<{family.value}>{'|'.join(patterns)})" for family, patterns in _FAMILY_PATTERNS.items())
)
_BY_GROUP = {family.value: family for family in Family}


def classify(path: str) -> Family | None:
    """The family of a canonical MLflow path (mount removed), or None if it is not forwarded."""
    match = _MATCHER.fullmatch(path)
    if match is None or match.lastgroup is None:
        return None
    return _BY_GROUP[match.lastgroup]
