"""Who is calling: the key in the request's headers or, for a browser, the key behind its session cookie;
checked the same way either way (failure throttle, key, service id, rate limit)."""

from __future__ import annotations

from dataclasses import dataclass

from hokusai_registry.auth.authenticator import Authenticator, CredentialCheck, Identity, service_denied
from hokusai_registry.auth.bearer_tokens import BearerTokens
from hokusai_registry.auth.cookies import clear_cookie, cookie_name, read_cookie
from hokusai_registry.auth.credentials import presented_key, sends_key
from hokusai_registry.auth.sessions import Session, Sessions
from hokusai_registry.auth.throttle import Guard
from hokusai_registry.core.asgi import Scope
from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy import keys
from hokusai_registry.policy.routes import LOGIN_PATH
from hokusai_registry.policy.tokens import looks_like_jwt


@dataclass(frozen=True, slots=True)
class Caller:
    identity: Identity
    session: Session | None = None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


class Access:
    def __init__(
        self,
        authenticator: Authenticator,
        guard: Guard,
        sessions: Sessions,
        tokens: BearerTokens,
        *,
        service_id: str,
        public_url: str | None,
    ) -> None:
        self.authenticator = authenticator
        self.tokens = tokens
        authenticator.on_invalidate(tokens.invalidate)
        self.guard = guard
        self.sessions = sessions
        self.service_id = service_id
        self._https_public_url = bool(public_url and public_url.startswith("https:"))

    def secure(self, scope: Scope) -> bool:
        """Whether the browser reached us over https (directly, through a trusted proxy's
        X-Forwarded-Proto, or by the public URL): the session cookie is then `Secure`."""
        return scope.get("scheme") == "https" or self._https_public_url

    def cookie_name(self, scope: Scope) -> str:
        return cookie_name(self.secure(scope))

    def session_id(self, scope: Scope) -> str | None:
        """The session cookie's value, unless the request sends a key (a key in a header always wins)."""
        headers = scope["headers"]
        if sends_key(headers):
            return None
        return read_cookie(headers, self.cookie_name(scope))

    def clear_cookie(self, scope: Scope) -> tuple[bytes, bytes]:
        return clear_cookie(self.cookie_name(scope), self.secure(scope))

    async def refused(
        self, scope: Scope, record: RequestRecord, error: Refusal, *, counted: bool = False
    ) -> None:
        """What happens to every refusal: reported in the access line, audited, counted for the
        failure throttle (unless a failed key check behind it was already: `counted`)."""
        record.auth_failure = error.reason.value if error.reason.caller else None
        await self.guard.refused(
            client_address(scope), scope["method"], scope["path"], record.key_id, error, counted=counted
        )

    async def check_key(self, presented: str, scope: Scope, record: RequestRecord) -> Identity:
        """The identity of a key or bearer token (told apart by shape), if it is valid for this service
        (no rate limit counted)."""
        record.key_id = keys.hint(presented)
        checker: CredentialCheck = self.tokens if looks_like_jwt(presented) else self.authenticator
        identity = await self.guard.authenticate(checker, presented, client_address(scope))
        record.key_id = identity.key_id
        denied = service_denied(identity, self.service_id)
        if denied is not None:
            raise denied
        return identity

    async def identify(self, scope: Scope, record: RequestRecord, *, sessions: bool = True) -> Caller:
        """The caller, checked and counted against its rate limits; Refusal otherwise. Without
        `sessions`, only a key in the headers counts (routes that take no part in the browser's
        same-origin checks)."""
        session_id = self.session_id(scope) if sessions else None
        if session_id is None:
            caller = Caller(await self.check_key(presented_key(scope["headers"]), scope, record))
        else:
            caller = await self._session_caller(session_id, scope, record)
        identity = caller.identity
        exceeded = await self.guard.rate_limits.check_key(identity)
        if exceeded is not None:
            raise exceeded.error(
                f"key {identity.key_id} is over its limit of {exceeded.limit} "
                f"requests per {exceeded.per}; retry after the Retry-After seconds, or ask an admin for a "
                "higher limit."
            )
        return caller

    async def _session_caller(self, session_id: str, scope: Scope, record: RequestRecord) -> Caller:
        session = await self.sessions.find(session_id)
        if session is None:
            # Not a failed authentication for the throttle: a UI whose session just expired fires many
            # calls at once, and its user must still be able to sign in again.
            raise Refusal(
                Reason.SESSION_ENDED,
                f"the browser session has ended (signed out, expired or its key "
                f"revoked). Sign in again at {LOGIN_PATH}.",
                [self.clear_cookie(scope)],
            )
        try:
            identity = await self.check_key(session.key, scope, record)
        except Refusal as error:
            if error.code == "UNAUTHENTICATED":
                # The key was revoked or expired: the session goes with it.
                await self.sessions.end(session_id)
                error.headers = (*error.headers, self.clear_cookie(scope))
            raise
        return Caller(identity, session)
