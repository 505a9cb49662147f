"""Bearer tokens (signed JWTs) of machines and people: told apart from keys by their shape, and their
claims mapped to an owner and scopes (pure; verification is `auth/issuers.py`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from hokusai_registry.policy.assertions import RESERVED_PREFIX
from hokusai_registry.policy.scopes import expand

# A compact JWS: three base64url segments, the first a JSON object (`{"` encodes as `eyJ`); the signature
# may be empty (`alg: none`), so such a token is refused for its algorithm, by name. Keys start `hk_`, so
# the two never overlap.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# Asymmetric signatures only: `none` is no signature, and an HMAC could be forged with a published key.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SCOPE_PREFIX = "mlflow."
_RANK = {"read": 1, "write": 2, "admin": 3}
# Where a machine's token names it when it has no user name: OAuth's client id, the authorized party,
# the subject (a Kubernetes service account's `system:serviceaccount:NAMESPACE:NAME`).
_MACHINE_CLAIMS = ("client_id", "azp", "sub")
MAX_OWNER_LENGTH = 200


class TokenClaimsRefused(ValueError):
    """The token verified, but its claims give no owner or no scope this gateway accepts."""


def looks_like_jwt(text: str) -> bool:
    return _JWT.fullmatch(text) is not None


def scopes_of(claim: Any, *, default: str, allow_admin: bool) -> tuple[str, ...]:
    """The gateway scopes a token holds: the highest `mlflow.read|write|admin` in its scope claim (a
    space-separated string or a list), `admin` only when allowed (else `write`), otherwise `default`
    (`none` refuses)."""
    values = claim.split() if isinstance(claim, str) else claim if isinstance(claim, list) else []
    named = {value[len(SCOPE_PREFIX) :] for value in values if isinstance(value, str)}
    held = [scope for scope in _RANK if scope in named]
    if not allow_admin:
        held = ["write" if scope == "admin" else scope for scope in held]
    if held:
        return expand(max(held, key=_RANK.__getitem__))
    if default == "none":
        raise TokenClaimsRefused(
            f"the token carries no {SCOPE_PREFIX}read or {SCOPE_PREFIX}write scope; ask for one when "
            "requesting the token (or an admin sets HOKUSAI_JWT_DEFAULT_SCOPE)"
        )
    return expand(default)


def owner_of(claims: Mapping[str, Any], username_claim: str) -> tuple[str, bool]:
    """Who the token acts as, and whether that is a person rather than a machine: the username claim or
    `email` (a person); else, for a token a client got on a person's behalf (its subject is not the client,
    RFC 9068), the subject (a person); else the machine's client id, authorized party or subject (a
    Kubernetes service account's `system:serviceaccount:NAMESPACE:NAME`)."""
    client = claims.get("client_id") or claims.get("azp")
    subject = claims.get("sub")
    delegated = isinstance(client, str) and isinstance(subject, str) and subject.strip() not in ("", client)
    named = [(username_claim, True), ("email", True)]
    if delegated:
        named.append(("sub", True))
    for name, person in (*named, *((c, False) for c in _MACHINE_CLAIMS)):
        value = claims.get(name)
        if isinstance(value, str) and value.strip():
            owner = value.strip()
            if owner.startswith(RESERVED_PREFIX):
                raise TokenClaimsRefused(
                    f"the token's {name} {owner[:40]!r} is a name reserved for the gateway"
                )
            if len(owner) > MAX_OWNER_LENGTH:
                raise TokenClaimsRefused(f"the token's {name} is longer than {MAX_OWNER_LENGTH} characters")
            return owner, person
    raise TokenClaimsRefused("the token names nobody: it has no user name, client id or subject")
