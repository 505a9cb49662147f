"""What happens to refused requests: an audit line, and failed authentications counted per client
address so that one address guessing keys is throttled (429) for the rest of the window. Key checks are
counted before they start, so the bound holds however many guesses arrive at once."""

from __future__ import annotations

import asyncio

from hokusai_registry.auth.authenticator import CredentialCheck, Identity, unavailable
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.ops.audit import audit

# Outcomes of a key check that failed (counted before the check starts: `Guard.authenticate`).
KEY_CHECK_FAILURES = frozenset(
    {
        Reason.MALFORMED_KEY,
        Reason.UNKNOWN_KEY,
        Reason.REVOKED_KEY,
        Reason.EXPIRED_KEY,
        # Bearer tokens, checked the same way (auth/bearer_tokens.py).
        Reason.TOKENS_NOT_ACCEPTED,
        Reason.TOKEN_MALFORMED,
        Reason.TOKEN_ALGORITHM,
        Reason.TOKEN_ISSUER,
        Reason.TOKEN_SIGNATURE,
        Reason.TOKEN_EXPIRED,
        Reason.TOKEN_NOT_YET_VALID,
        Reason.TOKEN_AUDIENCE,
        Reason.TOKEN_CLAIMS,
        Reason.USER_DISABLED,
    }
)
# Refusals of presented credentials, audited: failed key checks, and credentials sent so that no key
# could be read (counted when refused). A request without any key is not one: browsers and clients
# routinely try without credentials first.
AUTH_FAILURES = KEY_CHECK_FAILURES | {Reason.BAD_BASIC, Reason.UNSUPPORTED_SCHEME, Reason.STEP_UP_FAILED}
PERMISSION_DENIALS = frozenset(
    {
        Reason.SCOPE,
        Reason.SERVICE,
        Reason.TRANSFER_POLICY,
        Reason.PERMISSION,
        Reason.IDENTITY_BY_GATEWAY,
        Reason.PROTECTED,
    }
)


class Guard:
    def __init__(self, rate_limits: RateLimits) -> None:
        self.rate_limits = rate_limits
        # Checks under way, by address and presented key: concurrent requests with one key (a UI
        # loading, a client after a restart) are one check, counted once.
        self._checks: dict[tuple[str, str], asyncio.Future[Identity | Refusal]] = {}

    async def authenticate(self, authenticator: CredentialCheck, presented: str, client: str) -> Identity:
        """Checks a key. Keys that passed a check recently (cached) always pass, so users behind a shared
        address keep working; any other check is counted as a failure before it starts and counted back
        if the key is valid, so at most the limit of guesses per window reach the key store, however
        many arrive at once; from a throttled address none do."""
        identity = authenticator.cached(presented)
        if identity is not None:
            return identity
        wait = self.rate_limits.blocked(client)
        if wait is not None:
            raise _throttled(wait)
        check = (client, presented)
        running = self._checks.get(check)
        if running is not None:
            return _identity_or_raise(await asyncio.shield(running))
        running = self._checks[check] = asyncio.get_running_loop().create_future()
        result: Identity | Refusal = unavailable("the key check was interrupted")
        try:
            result = await self._counted_check(authenticator, presented, client)
        finally:
            del self._checks[check]
            running.set_result(result)  # waiters never hang, even if this request was cancelled
        return _identity_or_raise(result)

    async def _counted_check(
        self, authenticator: CredentialCheck, presented: str, client: str
    ) -> Identity | Refusal:
        wait = await self.rate_limits.start_check(client)
        if wait is not None:
            return _throttled(wait)
        result: Identity | Refusal = unavailable("the key check was interrupted")
        try:
            result = await authenticator.authenticate(presented, client)
        except Refusal as error:
            result = error
        finally:
            failed = isinstance(result, Refusal) and result.reason in KEY_CHECK_FAILURES
            await self.rate_limits.end_check(client, failed=failed)
        return result

    async def refused(
        self, client: str, method: str, path: str, key_id: str, error: Refusal, *, counted: bool = False
    ) -> None:
        """Audits `error` and counts it as a failure unless its key check already did (`counted`)."""
        reason = error.reason
        if reason in AUTH_FAILURES:
            audit("auth.failed", key_id=key_id, client=client, reason=reason.value, method=method, path=path)
            if not counted and reason not in KEY_CHECK_FAILURES:  # those were counted before their check
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


def _throttled(wait: float) -> Refusal:
    return Refusal(
        Reason.THROTTLED,
        f"too many failed authentications from this address; wait {wait:.0f} s before trying again, "
        "with a valid key.",
        [(b"retry-after", str(max(1, round(wait))).encode())],
    )


def _identity_or_raise(result: Identity | Refusal) -> Identity:
    if isinstance(result, Refusal):
        raise result.copy()  # a fresh exception for each request that shares the check
    return result
