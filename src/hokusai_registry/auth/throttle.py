"""What happens to refused requests: an audit line, and failed authentications counted per client
address so that one address guessing keys is throttled (429) for the rest of the window."""

from __future__ import annotations

from hokusai_registry.auth.authenticator import Authenticator, Identity
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.ops.audit import audit

# Refusals of presented credentials. A request without any key is not one: browsers and clients
# routinely try without credentials first.
AUTH_FAILURES = frozenset(
    {
        Reason.MALFORMED_KEY,
        Reason.UNKNOWN_KEY,
        Reason.REVOKED_KEY,
        Reason.EXPIRED_KEY,
        Reason.BAD_BASIC,
        Reason.UNSUPPORTED_SCHEME,
        Reason.STEP_UP_FAILED,
    }
)
PERMISSION_DENIALS = frozenset({Reason.SCOPE, Reason.SERVICE, Reason.TRANSFER_POLICY})


class Guard:
    def __init__(self, rate_limits: RateLimits) -> None:
        self.rate_limits = rate_limits

    async def authenticate(self, authenticator: Authenticator, presented: str, client: str) -> Identity:
        """Checks a key; from an address that is throttled, only keys already checked recently (cached)
        pass, so guesses never reach the key store while users behind a shared address keep working."""
        wait = self.rate_limits.blocked(client)
        if wait is None:
            return await authenticator.authenticate(presented, client)
        identity = authenticator.cached(presented)
        if identity is None:
            raise Refusal(
                Reason.THROTTLED,
                "too many failed authentications from this address; wait "
                f"{wait:.0f} s before trying again, with a valid key.",
                [(b"retry-after", str(max(1, round(wait))).encode())],
            )
        return identity

    async def refused(self, client: str, method: str, path: str, key_id: str, error: Refusal) -> None:
        reason = error.reason
        if reason in AUTH_FAILURES:
            audit("auth.failed", key_id=key_id, client=client, reason=reason.value, method=method, path=path)
            await self.rate_limits.auth_failed(client)
        elif reason in PERMISSION_DENIALS:
            audit(
                "permission.denied",
                key_id=key_id,
                client=client,
                reason=reason.value,
                method=method,
                path=path,
            )
