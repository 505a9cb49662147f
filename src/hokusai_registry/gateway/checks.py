"""The checks a request for MLflow passes before it is forwarded, in order (pure functions).

Each takes the parsed request (and, after authentication, the caller's identity) with this gateway's
`Policy`, and returns the refusal or None. The gateway runs `BEFORE_TARGET`, then answers a mount
without its trailing slash with a redirect, then runs `ON_TARGET`, identifies the caller, and runs
`ON_CALLER`. To add a check, write the function here and put it in its list where it belongs: a
refusal that needs no key comes before authentication, so it costs no key lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.assertions import RESERVED_PREFIX, reserved_user
from hokusai_registry.policy.headers import LOOP_MARK, is_cross_origin_write
from hokusai_registry.policy.paths import Target, unsafe_path_parameter
from hokusai_registry.policy.request import Request
from hokusai_registry.policy.routes import API_ROOT, FORWARDED_METHODS
from hokusai_registry.policy.scopes import grants, required_scope
from hokusai_registry.policy.transfers import mints_urls


@dataclass(frozen=True, slots=True)
class Policy:
    """What the checks need to know about this gateway."""

    loop_mark: bytes  # the mark this gateway (and its replicas) put on what they forward
    public_url: str | None
    direct_transfers: bool  # HOKUSAI_DIRECT_ARTIFACT_TRANSFERS
    graphql_max_tokens: int  # HOKUSAI_GRAPHQL_MAX_TOKENS


# MLflow's auth routes that change who is an administrator or how one signs in to MLflow itself.
GATEWAY_DECIDED = re.compile(rf"{API_ROOT}/mlflow/users/update-(?:admin|password)")

Check = Callable[[Request, Policy], Refusal | None]
CallerCheck = Callable[[Request, Target, Identity, Policy], Refusal | None]


def method_refusal(method: str) -> Refusal:
    return Refusal(Reason.METHOD_NOT_ALLOWED, f" does not accept {method[:16]} requests here.")


def permission_refusal(
    key_id: str, held: tuple[str, ...], method: str, path: str, needed: str | None
) -> Refusal:
    fix = (
        f": that needs the '{needed}' scope. Ask an admin for a key with --scope {needed}." if needed else "."
    )
    return Refusal(Reason.SCOPE, f"key {key_id} (scopes: {' '.join(held)}) may not {method} {path}{fix}")


# Before the path is known to be MLflow's


def not_looped(request: Request, policy: Policy) -> Refusal | None:
    if request.header(LOOP_MARK) != policy.loop_mark:
        return None
    return Refusal(
        Reason.LOOP,
        " received a request it had forwarded itself: MLFLOW_SERVER_URL points "
        "back at the gateway (directly or through a load balancer). Set it to the internal MLflow address.",
    )


def path_resolved(request: Request, policy: Policy) -> Refusal | None:
    """A path that cannot be forwarded: not canonical (see `paths.py`) or not MLflow's."""
    return request.target if isinstance(request.target, Refusal) else None


# On an MLflow path


def method_forwarded(request: Request, policy: Policy) -> Refusal | None:
    return None if request.method in FORWARDED_METHODS else method_refusal(request.method)


def no_key_in_url(request: Request, policy: Policy) -> Refusal | None:
    """A key anywhere in the URL, percent-encoded or not (URLs end up in logs and histories)."""
    query = request.query
    found = False
    if b"hk_" in query or b"%" in query:
        decoded = unquote_to_bytes(query).lower()
        found = b"hk_live_" in decoded or b"hk_test_" in decoded
    target = request.target
    path = target.path if isinstance(target, Target) else request.path
    if not (found or "hk_live_" in path or "hk_test_" in path):
        return None
    return Refusal(
        Reason.KEY_IN_URL,
        "API keys are not accepted in the URL (URLs end up in logs). "
        "Send the key in the Authorization header and revoke the one that was in the URL.",
    )


def same_origin(request: Request, policy: Policy) -> Refusal | None:
    via_session = request.via_session
    if not is_cross_origin_write(
        request.method,
        request.header(b"origin"),
        request.header(b"referer"),
        request.header(b"host"),
        policy.public_url,
        origin_required=via_session,
    ):
        return None
    return Refusal(
        Reason.CROSS_ORIGIN,
        " blocked a cross-origin write: "
        + (
            "a write with a browser session must come from this site (Origin or Referer naming it)."
            if via_session
            else "the Origin header names another site."
        ),
    )


def safe_path_parameter(request: Request, policy: Policy) -> Refusal | None:
    if b"path=" not in request.query or not unsafe_path_parameter(request.query):
        return None
    return Refusal(
        Reason.UNSAFE_PATH_PARAMETER,
        " rejected the 'path' parameter: it climbs out with '..' or is "
        "absolute. Nothing was forwarded to MLflow.",
    )


# Once the caller is known


def scope_granted(request: Request, target: Target, identity: Identity, policy: Policy) -> Refusal | None:
    needed = required_scope(request.method, target.path)
    if needed is not None and grants(identity.scopes, needed):
        return None
    return permission_refusal(identity.key_id, identity.scopes, request.method, target.path, needed)


def owner_not_reserved(
    request: Request, target: Target, identity: Identity, policy: Policy
) -> Refusal | None:
    """An owner named like MLflow's administrator would act as it; such keys are refused (the admin API
    does not create them, a remote auth service might)."""
    if not reserved_user(identity.user_id):
        return None
    return Refusal(
        Reason.SCOPE,
        f"key {identity.key_id} has the owner {identity.user_id!r}, a name reserved for the gateway "
        f"(it starts with {RESERVED_PREFIX!r}). Ask an admin for a key with another owner.",
    )


def admins_by_scope(request: Request, target: Target, identity: Identity, policy: Policy) -> Refusal | None:
    """Who is MLflow's administrator follows from key scopes, and nobody signs in to MLflow with a
    password: MLflow's update-admin and update-password are refused."""
    if not GATEWAY_DECIDED.fullmatch(target.path):
        return None
    return Refusal(
        Reason.IDENTITY_BY_GATEWAY,
        f" decides identities: {target.path.rsplit('/', 1)[-1]} does not apply. Administrators are the "
        "keys with the 'admin' scope, and nobody signs in to MLflow with a password.",
    )


def transfers_allowed(request: Request, target: Target, identity: Identity, policy: Policy) -> Refusal | None:
    if policy.direct_transfers or not mints_urls(target.path):
        return None
    return Refusal(
        Reason.TRANSFER_POLICY,
        "direct (presigned) artifact transfers are off here; every "
        "artifact byte goes through the gateway. Unset MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD and "
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD, or ask the operator to set "
        "HOKUSAI_DIRECT_ARTIFACT_TRANSFERS.",
    )


BEFORE_TARGET: tuple[Check, ...] = (not_looped, path_resolved)
ON_TARGET: tuple[Check, ...] = (method_forwarded, no_key_in_url, same_origin, safe_path_parameter)
ON_CALLER: tuple[CallerCheck, ...] = (scope_granted, owner_not_reserved, admins_by_scope, transfers_allowed)


def first_refusal(checks: tuple[Check, ...], request: Request, policy: Policy) -> Refusal | None:
    for check in checks:
        refusal = check(request, policy)
        if refusal is not None:
            return refusal
    return None
