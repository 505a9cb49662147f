"""Signing in with the identity provider: `/login/oidc` sends the browser there, `/login/oidc/callback`
takes its answer (`auth/oidc.py` checks it; `sso.py` makes the user, teams and session key), and starts
the same server-side session a key sign-in starts. `WebPages` routes, listed in `pages.py`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from hokusai_registry.admin.rendering import PageError, page, redirect, render
from hokusai_registry.admin.sso import SingleSignOn
from hokusai_registry.auth.caller import Access, client_address
from hokusai_registry.auth.cookies import clear_cookie, read_cookie, set_cookie
from hokusai_registry.auth.oidc import FLOW_MAX_AGE, Flow, OidcSignIn, SignInFailed
from hokusai_registry.core.asgi import Scope
from hokusai_registry.ops.audit import audit
from hokusai_registry.policy.navigation import safe_next

_FLOW_COOKIE = "hokusai_oidc"
_SECURE_FLOW_COOKIE = "__Host-hokusai_oidc"


class WebPages(Protocol):
    """What these pages use of `pages.WebPages` (which lists them: it cannot be imported here)."""

    access: Access
    oidc: OidcSignIn | None
    sso: SingleSignOn | None
    sso_name: str

    def _public_base(self, scope: Scope) -> str: ...


def _query(request: Request) -> dict[str, str]:
    parsed = parse_qs(request.scope["query_string"].decode("latin-1"), max_num_fields=16)
    return {name: values[0] for name, values in parsed.items()}


def _flow_cookie(pages: WebPages, scope: Scope) -> str:
    return _SECURE_FLOW_COOKIE if pages.access.secure(scope) else _FLOW_COOKIE


def _configured(pages: WebPages) -> tuple[OidcSignIn, SingleSignOn]:
    if pages.oidc is None or pages.sso is None:
        raise PageError(
            404,
            "No single sign-on here",
            "This gateway has no identity provider (HOKUSAI_OIDC_ISSUER is unset): sign in with an API key.",
        )
    return pages.oidc, pages.sso


def _failed(pages: WebPages, scope: Scope, next_path: str, message: str, status: int) -> Response:
    body = render(
        "login.html",
        title="Sign in",
        next=next_path,
        notice=None,
        error=f"Signing in with {pages.sso_name} failed: {message}",
        sso=pages.sso_name if pages.oidc else None,
    )
    return page(status, body, [clear_cookie(_flow_cookie(pages, scope), pages.access.secure(scope))])


async def start(pages: WebPages, request: Request) -> Response:
    """To the provider's login page, with a new flow in its cookie. `fresh=1` asks the provider to ask
    for the person's credentials again (the step-up of the gateway's forms)."""
    oidc, _ = _configured(pages)
    scope = request.scope
    query = _query(request)
    next_path = safe_next(query.get("next"))
    try:
        location, flow = await oidc.start(
            pages._public_base(scope), next_path, fresh=query.get("fresh") == "1"
        )
    except SignInFailed as failed:
        return _failed(pages, scope, next_path, str(failed), 503)
    cookie = set_cookie(
        _flow_cookie(pages, scope), flow.to_cookie(), FLOW_MAX_AGE, pages.access.secure(scope)
    )
    return redirect(location, [cookie])


async def callback(pages: WebPages, request: Request) -> Response:
    """The provider's answer: checked, then the person signed in and sent on to where they were going."""
    oidc, sso = _configured(pages)
    scope = request.scope
    flow = Flow.from_cookie(read_cookie(scope["headers"], _flow_cookie(pages, scope)))
    next_path = flow.next_path if flow else safe_next(None)
    try:
        signed = await oidc.finish(pages._public_base(scope), _query(request), flow)
        sessions = pages.access.sessions
        ends = min(
            dt.datetime.now(dt.UTC) + sessions.max_age,
            dt.datetime.fromtimestamp(signed.expires_at, dt.UTC),
        )
        session_key = await sso.sign_in(signed, ends)
    except SignInFailed as failed:
        audit("sso.refused", client=client_address(scope), reason=str(failed))
        return _failed(pages, scope, next_path, str(failed), 403)
    old = pages.access.session_id(scope)
    if old:
        await sessions.end(old)
    session = await sessions.start(
        session_key.key, session_key.key_id, session_key.expires_at, id_token=signed.id_token
    )
    audit(
        "session.started",
        key_id=session_key.key_id,
        owner=session_key.user.name,
        client=client_address(scope),
        via="sso",
    )
    max_age = int((session.expires_at - dt.datetime.now(dt.UTC)).total_seconds())
    secure = pages.access.secure(scope)
    cookies = [
        set_cookie(pages.access.cookie_name(scope), session.id, max_age, secure),
        clear_cookie(_flow_cookie(pages, scope), secure),
    ]
    return redirect(safe_next(next_path), cookies)


def login_context(pages: WebPages) -> dict[str, Any]:
    """What the sign-in page needs to offer the provider beside the key form."""
    return {"sso": pages.sso_name if pages.oidc else None}
