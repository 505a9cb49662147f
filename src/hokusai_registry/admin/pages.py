"""The gateway's pages: `/login`, `/logout`, `/admin/keys`, their stylesheet, and the teams and grants
pages (`/admin/teams`, `/admin/grants`: `permission_pages.py`).

Routed by Starlette, the framework FastAPI (the admin REST API) is built on: `PAGE_ROUTES` says which
path takes which methods, any other method is the "Not allowed" page, and a `PageError` raised anywhere
becomes its message page. Every form post must come from this site (`Origin`, else `Referer`) and, once
signed in, carry the session's CSRF token. Keys are checked exactly as for API calls (`Access.check_key`:
failure throttle, service id), and key administration goes through the same `KeyAdmin` as the CLI and
the REST API.

The MLflow UI is served from the same origin, so a script running in it (any XSS there) is "this site":
it passes the origin check and could read a page's CSRF token. Two things stop it from changing keys with
an admin's session: signed-in pages open only as top-level pages (Fetch Metadata, `loaded_by_script`),
and every change (keys created, rotated or revoked; teams and grants changed) needs the session's own
admin key entered again in the same form (`_step_up`), which such a script does not know.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qs

from pydantic import ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router

from hokusai_registry.admin import own_key_pages, sign_in, user_pages
from hokusai_registry.admin.permission_pages import PERMISSION_PAGES
from hokusai_registry.admin.permissions import PermissionAdmin
from hokusai_registry.admin.promotion_pages import PROMOTION_PAGES
from hokusai_registry.admin.promotions import Promotions
from hokusai_registry.admin.rendering import PageError, page, redirect, render, stylesheet_response
from hokusai_registry.admin.service import KeyAdmin, KeySpec, OwnKeys, problems
from hokusai_registry.admin.sso import SingleSignOn
from hokusai_registry.admin.users import UserAdmin
from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.auth.caller import Access, Caller, client_address
from hokusai_registry.auth.cookies import set_cookie
from hokusai_registry.auth.oidc import OidcSignIn, authenticated_at
from hokusai_registry.auth.sessions import csrf_token, csrf_valid
from hokusai_registry.auth.throttle import KEY_CHECK_FAILURES
from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.bodies import read_body
from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.ops.audit import audit
from hokusai_registry.policy import keys
from hokusai_registry.policy.headers import header_value, is_cross_origin_write
from hokusai_registry.policy.navigation import loaded_by_script, login_location, notice, safe_next
from hokusai_registry.policy.routes import (
    ADMIN_KEYS_PATH,
    ADMIN_USERS_PATH,
    LOGIN_PATH,
    LOGOUT_PATH,
    MY_KEYS_PATH,
    OIDC_CALLBACK_PATH,
    OIDC_LOGIN_PATH,
    STYLESHEET_PATH,
)
from hokusai_registry.store.key_store import KeyNameTaken, KeyNotFound

REVOKE_PATH = ADMIN_KEYS_PATH + "/{key_id:key_id}/revoke"
ROTATE_PATH = ADMIN_KEYS_PATH + "/{key_id:key_id}/rotate"
# The form field that carries the session's admin key again (a password field: never stored or shown).
STEP_UP_FIELD = "admin_key"
# A session begun at the identity provider steps up with a sign-in there at most this long ago.
STEP_UP_WINDOW = dt.timedelta(minutes=5)
# Refusals of a step-up's key that are said as they are: they say nothing about the key entered.
_NOT_A_FAILED_STEP_UP = frozenset({Reason.THROTTLED, Reason.STORE_UNAVAILABLE})
RECORD = "hokusai.record"  # the request's RequestRecord, in the scope the routes see
MAX_FORM_BYTES = 16 * 1024
_KEY_FORM_FIELDS = (
    "name",
    "owner",
    "scope",
    "expires_in",
    "service_ids",
    "rate_limit_per_minute",
    "rate_limit_per_hour",
)
SCOPE_CHOICES = (
    ("read", "search and download"),
    ("write", "also log runs, artifacts and models"),
    ("admin", "also server settings and keys"),
)
# The changes to one key the pages offer: the confirmation's button and what it does.
KEY_ACTIONS = {
    "revoke": (
        "Revoke key",
        "The key stops working at once and its browser sessions end. This cannot be undone.",
    ),
    "rotate": (
        "Rotate key",
        "A new key replaces it, with the same name, owner, scopes, limits and expiry, and is shown once. "
        "The old key stops working at once and its browser sessions end.",
    ),
}


class _KeyId(Convertor[str]):
    """`{key_id:key_id}`: a key id's shape, so any other path under /admin/keys is no page at all."""

    regex = "[A-Za-z0-9]{12}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("key_id", _KeyId())


class WebPages:
    def __init__(
        self,
        access: Access,
        key_admin: KeyAdmin | None,
        permissions: PermissionAdmin,
        promotions: Promotions,
        *,
        public_url: str | None,
        oidc: OidcSignIn | None = None,
        sso: SingleSignOn | None = None,
        sso_name: str = "",
        own_keys: OwnKeys | None = None,
        users: UserAdmin | None = None,
    ) -> None:
        self.access = access
        # None when keys live in a remote auth service: they are managed there.
        self.key_admin = key_admin
        # Teams and grants live in MLflow, wherever keys are managed.
        self.permissions = permissions
        # Protection rules and promotion requests (`promotion_pages.py`).
        self.promotions = promotions
        self.public_url = public_url
        # Single sign-on, when an identity provider is configured.
        self.oidc = oidc
        self.sso = sso
        self.sso_name = sso_name
        self.own_keys = own_keys
        self.users = users
        # No slash redirects: the gateway sends only page paths here (its route table). Anything
        # else a route raises propagates to the gateway as before (no ServerErrorMiddleware here).
        self._app = ExceptionMiddleware(
            Router(list(PAGE_ROUTES), redirect_slashes=False),
            handlers={PageError: _message_page, 405: _not_allowed},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        record.family = "gateway"
        # `app`, as Starlette's own apps set it: it is the routes' `request.app`, and with it a method a
        # path does not take raises HTTPException(405) for `_not_allowed` instead of a plain-text answer.
        await self._app({**scope, "app": self, RECORD: record}, receive, send)

    async def stylesheet(self, _: Request) -> Response:
        return stylesheet_response()

    # Signing in and out

    async def login_form(self, request: Request) -> Response:
        scope = request.scope
        query = parse_qs(scope["query_string"].decode("latin-1"))
        next_path = safe_next((query.get("next") or [None])[0])
        session_id = self.access.session_id(scope)
        if session_id and await self.access.sessions.find(session_id):
            return redirect(next_path)
        body = render(
            "login.html",
            title="Sign in",
            next=next_path,
            notice=notice((query.get("reason") or [None])[0]),
            error=None,
            **sign_in.login_context(self),
        )
        return page(200, body)

    async def login(self, request: Request) -> Response:
        scope, record = request.scope, _record(request)
        self._same_origin(scope)
        form = await self._form(request)
        key = form.get("key", "").strip()
        next_path = safe_next(form.get("next"))
        if not key:
            return self._login_again(next_path, "Paste an API key to sign in.", 400)
        try:
            identity = await self.access.check_key(key, scope, record)
        except Refusal as error:
            await self.access.refused(scope, record, error)
            return self._login_again(next_path, error.plain, error.http_status, error.headers)
        old = self.access.session_id(scope)
        if old:
            await self.access.sessions.end(old)
        session = await self.access.sessions.start(key, identity.key_id, identity.expires_at)
        audit("session.started", key_id=identity.key_id, owner=identity.user_id, client=client_address(scope))
        max_age = int((session.expires_at - dt.datetime.now(dt.UTC)).total_seconds())
        cookie = set_cookie(self.access.cookie_name(scope), session.id, max_age, self.access.secure(scope))
        return redirect(next_path, [cookie])

    def _login_again(
        self, next_path: str, error: str, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()
    ) -> Response:
        body = render(
            "login.html",
            title="Sign in",
            next=next_path,
            notice=None,
            error=error,
            **sign_in.login_context(self),
        )
        return page(status, body, headers)

    async def logout_form(self, request: Request) -> Response:
        caller = await self._signed_in(request)
        if caller is None:
            return redirect(login_location("/mlflow/", "signed_out"))
        return page(200, render("logout.html", title="Sign out", caller=self._context(caller)))

    async def logout(self, request: Request) -> Response:
        scope = request.scope
        self._same_origin(scope)
        form = await self._form(request)
        session_id = self.access.session_id(scope)
        signed_out = login_location("/mlflow/", "signed_out")
        at_provider = None
        if session_id:
            self._check_csrf(session_id, form)
            session = await self.access.sessions.find(session_id)
            await self.access.sessions.end(session_id)
            if session is not None:
                audit("session.ended", key_id=session.key_id, client=client_address(scope))
            if session is not None and session.id_token is not None and self.oidc and self.sso:
                # Signed out at both ends: the session's key goes, then the provider's session.
                await self.sso.signed_out(session.key_id)
                self.access.authenticator.invalidate()
                at_provider = await self.oidc.logout_url(
                    session.id_token, self._public_base(scope) + signed_out
                )
        if at_provider is not None:
            body = render(
                "signing_out.html", title="Signing out", location=at_provider, provider=self.sso_name
            )
            return page(200, body, [self.access.clear_cookie(scope)])
        return redirect(signed_out, [self.access.clear_cookie(scope)])

    # Key administration

    async def keys_page(self, request: Request) -> Response:
        caller = await self._admin(request)
        if isinstance(caller, Response):
            return caller
        query = parse_qs(request.scope["query_string"].decode("latin-1"))
        revoked = (query.get("revoked") or [""])[0]
        shown = revoked if keys.is_key_id(revoked) else None
        return await self._render_keys(request, caller, revoked=shown)

    async def _admin_form(
        self, request: Request, *, keys: bool = True, back: str = ADMIN_KEYS_PATH
    ) -> tuple[Caller, dict[str, str]] | Response:
        """An administration form post: from this site, by a signed-in admin, with the session's CSRF
        token. A Response when the browser is sent to sign in (and then on to `back`)."""
        self._same_origin(request.scope)
        caller = await self._admin(request, keys=keys, back=back)
        if isinstance(caller, Response):
            return caller
        form = await self._form(request)
        self._check_csrf(caller.session.id if caller.session else "", form)
        return caller, form

    async def create_key(self, request: Request) -> Response:
        posted = await self._admin_form(request)
        if isinstance(posted, Response):
            return posted
        caller, form = posted
        values = {name: form.get(name, "").strip() for name in _KEY_FORM_FIELDS}
        refused = await self._step_up(request, caller, form)
        if refused is not None:
            return await self._render_keys(
                request,
                caller,
                form=values,
                error=refused.plain,
                status=refused.http_status,
                headers=refused.headers,
            )
        spec: dict[str, Any] = {"name": values["name"], "scope": values["scope"] or "write"}
        for optional in ("owner", "expires_in", "rate_limit_per_minute", "rate_limit_per_hour"):
            if values[optional]:
                spec[optional] = values[optional]
        spec["service_ids"] = values["service_ids"].replace(",", " ").split()
        try:
            created = await asyncio.to_thread(
                self._managed_keys().create, KeySpec.model_validate(spec), f"key:{caller.identity.key_id}"
            )
        except ValidationError as exc:
            error = problems(exc.errors())
            return await self._render_keys(request, caller, form=values, error=error, status=400)
        except (KeyNameTaken, ValueError) as exc:
            return await self._render_keys(request, caller, form=values, error=str(exc), status=400)
        return await self._render_keys(request, caller, created=created)

    async def confirm_revoke(self, request: Request) -> Response:
        return await self._confirm(request, "revoke")

    async def confirm_rotate(self, request: Request) -> Response:
        return await self._confirm(request, "rotate")

    async def _confirm(self, request: Request, action: str) -> Response:
        caller = await self._admin(request)
        if isinstance(caller, Response):
            return caller
        return await self._confirm_page(request, caller, action)

    async def _confirm_page(
        self, request: Request, caller: Caller, action: str, refused: Refusal | None = None
    ) -> Response:
        """The form that confirms a change to one key with the admin key entered again."""
        key_id: str = request.path_params["key_id"]
        try:
            key = await asyncio.to_thread(self._managed_keys().get, key_id)
        except (KeyNotFound, ValueError) as exc:
            raise PageError(404, "No such key", str(exc)) from None
        if key.status != "active":
            raise PageError(
                409, "Nothing to do", f"Key {key_id} is {key.status}: it can no longer be revoked or rotated."
            )
        button, consequence = KEY_ACTIONS[action]
        body = render(
            "confirm_key.html",
            title=f"{button} {key.name}",
            caller=self._context(caller),
            key=key,
            action=action,
            button=button,
            consequence=consequence,
            own=key_id == caller.identity.key_id,
            error=refused.plain if refused else None,
        )
        return page(refused.http_status if refused else 200, body, refused.headers if refused else ())

    async def _confirmed(self, request: Request, action: str) -> tuple[Caller, str] | Response:
        """A posted confirmation of `action`: the caller and the key id, or the answer (the confirmation
        again after a failed step-up, or the way to sign in)."""
        posted = await self._admin_form(request)
        if isinstance(posted, Response):
            return posted
        caller, form = posted
        refused = await self._step_up(request, caller, form)
        if refused is not None:
            return await self._confirm_page(request, caller, action, refused)
        return caller, request.path_params["key_id"]

    async def revoke_key(self, request: Request) -> Response:
        confirmed = await self._confirmed(request, "revoke")
        if isinstance(confirmed, Response):
            return confirmed
        caller, key_id = confirmed
        try:
            await asyncio.to_thread(self._managed_keys().revoke, key_id, f"key:{caller.identity.key_id}")
        except (KeyNotFound, ValueError) as exc:
            raise PageError(404, "No such key", str(exc)) from None
        # At once on this gateway; the others notice the store's revision within their poll interval.
        self.access.authenticator.invalidate()
        return redirect(f"{ADMIN_KEYS_PATH}?revoked={key_id}")

    async def rotate_key(self, request: Request) -> Response:
        confirmed = await self._confirmed(request, "rotate")
        if isinstance(confirmed, Response):
            return confirmed
        caller, key_id = confirmed
        try:
            created = await asyncio.to_thread(
                self._managed_keys().rotate, key_id, f"key:{caller.identity.key_id}"
            )
        except KeyNameTaken as exc:  # the key is revoked
            raise PageError(409, "Nothing to do", str(exc)) from None
        except (KeyNotFound, ValueError) as exc:
            raise PageError(404, "No such key", str(exc)) from None
        self.access.authenticator.invalidate()
        # The new key is shown once, in this answer (no redirect: it must not be in a URL).
        return await self._render_keys(
            request, caller, created=created, rotated=key_id, own=key_id == caller.identity.key_id
        )

    async def _render_keys(
        self,
        request: Request,
        caller: Caller,
        *,
        form: dict[str, str] | None = None,
        error: str | None = None,
        created: Any = None,
        revoked: str | None = None,
        rotated: str | None = None,
        own: bool = False,
        status: int = 200,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> Response:
        listed = await asyncio.to_thread(self._managed_keys().list)
        body = render(
            "admin_keys.html",
            title="API keys",
            caller=self._context(caller),
            keys=list(reversed(listed)),
            form=form or {name: "" for name in _KEY_FORM_FIELDS},
            scopes=SCOPE_CHOICES,
            error=error,
            created=created,
            revoked=revoked,
            rotated=rotated,
            own=own,
            tracking_uri=self._public_base(request.scope) + "/mlflow",
        )
        return page(status, body, headers)

    # Shared checks

    async def _signed_in(self, request: Request) -> Caller | None:
        """The signed-in caller, or None when the browser has no live session. Pages for a signed-in
        caller (they carry its CSRF token) open only as pages: never for a script or in a frame."""
        scope, record = request.scope, _record(request)
        headers = scope["headers"]
        if loaded_by_script(
            header_value(headers, b"sec-fetch-mode"), header_value(headers, b"sec-fetch-dest")
        ):
            raise PageError(
                403,
                "Open this page yourself",
                "The browser says a script or a frame asked for this page: the gateway's signed-in pages "
                "open only as pages of their own. Open it from the address bar or a link.",
            )
        if self.access.session_id(scope) is None:
            return None
        try:
            return await self.access.identify(scope, record)
        except Refusal as error:
            await self.access.refused(scope, record, error)
            if error.code == "UNAUTHENTICATED":
                return None
            raise PageError(error.http_status, "Not now", error.plain, error.headers) from None

    def _managed_keys(self) -> KeyAdmin:
        """The key store's admin, or a 404 page where keys live in a remote auth service."""
        if self.key_admin is None:
            raise PageError(
                404,
                "Keys are managed elsewhere",
                # Not its address: this is shown before anyone signs in.
                "This gateway validates keys through an auth service (its AUTH_SERVICE_URL); manage keys "
                "there.",
            )
        return self.key_admin

    async def _admin(
        self, request: Request, *, keys: bool = True, back: str = ADMIN_KEYS_PATH
    ) -> Caller | Response:
        """The signed-in admin; otherwise the browser is sent to sign in (a Response, then on to `back`)
        or refused. Key pages (`keys`) only where keys are managed here."""
        if keys:
            self._managed_keys()
        caller = await self._signed_in(request)
        if caller is None:
            scope = request.scope
            headers = [self.access.clear_cookie(scope)] if self.access.session_id(scope) else []
            return redirect(login_location(back, _record(request).auth_failure), headers)
        if "admin" not in caller.identity.scopes:
            raise PageError(
                403,
                "Admins only",
                f"Key {caller.identity.key_id} (scopes: {' '.join(caller.identity.scopes)}) is not an admin "
                "key. Sign in with an admin key to manage keys, teams and grants.",
            )
        return caller

    def _login_redirect(self, request: Request, back: str) -> Response:
        """To the sign-in page, then on to `back` (an ended session's cookie cleared)."""
        scope = request.scope
        headers = [self.access.clear_cookie(scope)] if self.access.session_id(scope) else []
        return redirect(login_location(back, _record(request).auth_failure), headers)

    async def _keyed_form(self, request: Request, back: str) -> tuple[Caller, dict[str, str]] | Response:
        """A form post by any signed-in key (not only admins): from this site, with the session's CSRF
        token. A Response when the browser is sent to sign in."""
        self._same_origin(request.scope)
        caller = await self._signed_in(request)
        if caller is None:
            return self._login_redirect(request, back)
        form = await self._form(request)
        self._check_csrf(caller.session.id if caller.session else "", form)
        return caller, form

    def _same_origin(self, scope: Scope) -> None:
        headers = scope["headers"]
        if is_cross_origin_write(
            scope["method"],
            header_value(headers, b"origin"),
            header_value(headers, b"referer"),
            header_value(headers, b"host"),
            self.public_url,
            origin_required=True,
        ):
            raise PageError(
                403,
                "Refused",
                "This form was not sent from this site (its Origin or Referer names another site, or "
                "neither was sent). Open the page on this site and submit it again.",
            )

    async def _step_up(self, request: Request, caller: Caller, form: dict[str, str]) -> Refusal | None:
        """None when the form carries the session's own key again (checked as any key is: throttle,
        store). Anything else, an empty field included, is a failed step-up: refused, audited and
        counted as a failed authentication. Not another admin key, even of the same owner: owners are
        free text, and the change must be made by the key the audit line names."""
        scope, record = request.scope, _record(request)
        session_key_id = caller.identity.key_id
        if caller.session is not None and caller.session.id_token is not None:
            return await self._fresh_sign_in(request, caller)
        presented = form.get(STEP_UP_FIELD, "").strip()
        checked: Identity | Refusal | None = None
        if presented:
            try:
                checked = await self.access.check_key(presented, scope, record)
            except Refusal as error:
                checked = error
        # Lines about this request name the session's key, never the one entered.
        record.key_id = session_key_id
        if isinstance(checked, Refusal) and checked.reason in _NOT_A_FAILED_STEP_UP:
            await self.access.refused(scope, record, checked)
            return checked
        if isinstance(checked, Identity) and checked.key_id == session_key_id:
            return None
        failed = Refusal(
            Reason.STEP_UP_FAILED,
            f"every change made on these pages (keys, teams, grants, protections, promotion decisions) needs "
            f"the key this session signed in with (key {session_key_id}) entered again in the form, and the "
            "key entered is not it. Failed attempts "
            "count towards the failed-authentication throttle (HOKUSAI_AUTH_FAILURE_LIMIT).",
        )
        # A key that failed its own check was counted by it: one failed step-up counts once.
        counted = isinstance(checked, Refusal) and checked.reason in KEY_CHECK_FAILURES
        await self.access.refused(scope, record, failed, counted=counted)
        return failed

    async def _fresh_sign_in(self, request: Request, caller: Caller) -> Refusal | None:
        """The step-up of a session begun at the identity provider: the person entered their
        credentials there within STEP_UP_WINDOW (the ID token's `auth_time`). A script cannot do that
        for them; a silent sign-in at the provider keeps the old `auth_time`."""
        assert caller.session is not None and caller.session.id_token is not None  # nosec B101
        at = authenticated_at(caller.session.id_token)
        if at is not None and dt.datetime.now(dt.UTC) - at <= STEP_UP_WINDOW:
            return None
        scope, record = request.scope, _record(request)
        back = request.url.path
        failed = Refusal(
            Reason.STEP_UP_FAILED,
            f"changes need a sign-in at {self.sso_name} within the last {STEP_UP_WINDOW.seconds // 60} "
            f"minutes. Sign in again at {OIDC_LOGIN_PATH}?fresh=1&next={back}, then make the change.",
        )
        # Not a guessed credential: not counted towards the failure throttle.
        await self.access.refused(scope, record, failed, counted=True)
        return failed

    @staticmethod
    def _check_csrf(session_id: str, form: dict[str, str]) -> None:
        if not csrf_valid(session_id, form.get("csrf", "")):
            raise PageError(
                403,
                "Refused",
                "The form's security token does not match your session (it is from an older session or "
                "another site). Reload the page and submit it again.",
            )

    @staticmethod
    async def _form(request: Request) -> dict[str, str]:
        # Read here rather than by `request.form()`: that needs python-multipart, and has its own limits.
        content_type = (header_value(request.scope["headers"], b"content-type") or b"").split(b";")[0].strip()
        if content_type.lower() != b"application/x-www-form-urlencoded":
            raise PageError(415, "Not a form", "Send the form as application/x-www-form-urlencoded.")
        try:
            body = await read_body(request.receive, MAX_FORM_BYTES)
        except Refusal as error:
            raise PageError(413, "Too large", error.plain) from None
        if body is None:
            raise PageError(400, "Incomplete", "The form was not received completely.")
        try:
            fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
        except (UnicodeDecodeError, ValueError):
            raise PageError(
                400, "Not a form", "The form could not be read (not UTF-8, or too many fields)."
            ) from None
        return {name: values[0] for name, values in fields.items()}

    def _context(self, caller: Caller) -> dict[str, Any]:
        identity = caller.identity
        return {
            "name": identity.user_id or identity.name,
            "key_id": identity.key_id,
            "admin": "admin" in identity.scopes,
            "csrf": csrf_token(caller.session.id) if caller.session else "",
            # Signed in at the identity provider: forms step up with a fresh sign-in there, not a key.
            "sso": bool(caller.session and caller.session.id_token),
            "own_keys": identity.sso_user_id is not None and self.own_keys is not None,
        }

    def _public_base(self, scope: Scope) -> str:
        if self.public_url:
            return self.public_url
        host = (header_value(scope["headers"], b"host") or b"localhost").decode("latin-1")
        return f"{scope.get('scheme', 'http')}://{host}"


def _record(request: Request) -> RequestRecord:
    return cast(RequestRecord, request.scope[RECORD])


def _message_page(_: Request, error: Exception) -> Response:
    """A PageError (the only exception it is registered for) as its message page."""
    shown = cast(PageError, error)
    body = render("message.html", title=shown.title, message=shown.message, back=LOGIN_PATH)
    return page(shown.status, body, shown.headers)


def _not_allowed(request: Request, _: Exception) -> Response:
    method, path = request.scope["method"], request.scope["path"]
    return _message_page(request, PageError(405, "Not allowed", f"{method[:16]} is not accepted at {path}."))


Endpoint = Callable[[Request], Awaitable[Response]]


def _on(endpoint: Callable[[WebPages, Request], Awaitable[Response]]) -> Endpoint:
    """A WebPages method as a Starlette endpoint, called on the WebPages the request came to."""

    async def route(request: Request) -> Response:
        return await endpoint(request.app, request)

    return route


# Every page: its path and the methods it takes (GET also takes HEAD). Which paths are pages at all is
# the gateway's route table (`policy/routes.py`); a unit test keeps the two in step.
PAGE_ROUTES = (
    Route(STYLESHEET_PATH, _on(WebPages.stylesheet), methods=["GET"]),
    Route(LOGIN_PATH, _on(WebPages.login_form), methods=["GET"]),
    Route(LOGIN_PATH, _on(WebPages.login), methods=["POST"]),
    Route(OIDC_LOGIN_PATH, _on(sign_in.start), methods=["GET"]),
    Route(OIDC_CALLBACK_PATH, _on(sign_in.callback), methods=["GET"]),
    Route(MY_KEYS_PATH, _on(own_key_pages.my_keys), methods=["GET"]),
    Route(MY_KEYS_PATH, _on(own_key_pages.create_own_key), methods=["POST"]),
    Route(own_key_pages.REVOKE_OWN_PATH, _on(own_key_pages.revoke_own_key), methods=["POST"]),
    Route(ADMIN_USERS_PATH, _on(user_pages.users_page), methods=["GET"]),
    *(
        Route(path, _on(endpoint), methods=[method])
        for path in (user_pages.DISABLE_USER_PATH, user_pages.ENABLE_USER_PATH)
        for method, endpoint in (("GET", user_pages.confirm_change), ("POST", user_pages.change))
    ),
    Route(LOGOUT_PATH, _on(WebPages.logout_form), methods=["GET"]),
    Route(LOGOUT_PATH, _on(WebPages.logout), methods=["POST"]),
    Route(ADMIN_KEYS_PATH, _on(WebPages.keys_page), methods=["GET"]),
    Route(ADMIN_KEYS_PATH, _on(WebPages.create_key), methods=["POST"]),
    Route(REVOKE_PATH, _on(WebPages.confirm_revoke), methods=["GET"]),
    Route(REVOKE_PATH, _on(WebPages.revoke_key), methods=["POST"]),
    Route(ROTATE_PATH, _on(WebPages.confirm_rotate), methods=["GET"]),
    Route(ROTATE_PATH, _on(WebPages.rotate_key), methods=["POST"]),
    *(Route(path, _on(endpoint), methods=[method]) for path, method, endpoint in PERMISSION_PAGES),
    *(Route(path, _on(endpoint), methods=[method]) for path, method, endpoint in PROMOTION_PAGES),
)
