"""The gateway's pages: `/login`, `/logout`, `/admin/keys` and their stylesheet.

Every form post must come from this site (`Origin`, else `Referer`) and, once signed in, carry the
session's CSRF token. Keys are checked exactly as for API calls (`Access.check_key`: failure throttle,
service id), and key administration goes through the same `KeyAdmin` as the CLI and the REST API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from hokusai_registry.admin.rendering import render, send_page, send_redirect, send_stylesheet
from hokusai_registry.admin.service import KeyAdmin, KeySpec, problems
from hokusai_registry.auth.caller import Access, Caller, client_address
from hokusai_registry.auth.cookies import set_cookie
from hokusai_registry.auth.sessions import csrf_token, csrf_valid
from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.bodies import read_body
from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.ops.audit import audit
from hokusai_registry.policy import keys
from hokusai_registry.policy.headers import header_value, is_cross_origin_write
from hokusai_registry.policy.navigation import login_location, notice, safe_next
from hokusai_registry.policy.routes import ADMIN_KEYS_PATH, LOGIN_PATH, LOGOUT_PATH, STYLESHEET_PATH
from hokusai_registry.store.key_store import KeyNameTaken, KeyNotFound

_REVOKE = re.compile(r"/admin/keys/([A-Za-z0-9]{12})/revoke")
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


class PageError(Exception):
    """A refusal shown as a page (the gateway's pages answer in HTML, not MLflow JSON)."""

    def __init__(self, status: int, title: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.headers = headers


class WebPages:
    def __init__(
        self,
        access: Access,
        key_admin: KeyAdmin | None,
        *,
        keys_managed_by: str | None,
        public_url: str | None,
    ) -> None:
        self.access = access
        # None when keys live in a remote auth service: they are managed there.
        self.key_admin = key_admin
        self.keys_managed_by = keys_managed_by
        self.public_url = public_url

    async def __call__(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        record.family = "gateway"
        try:
            await self._route(scope, receive, send, record)
        except PageError as error:
            body = render("message.html", title=error.title, message=error.message, back=LOGIN_PATH)
            await send_page(send, error.status, body, error.headers)

    async def _route(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        path, method = scope["path"], scope["method"]
        reading = method in ("GET", "HEAD")
        if not reading and method != "POST":
            raise PageError(405, "Not allowed", f"{method[:16]} is not accepted at {path}.")
        if path == STYLESHEET_PATH and reading:
            await send_stylesheet(send)
        elif path == LOGIN_PATH:
            await (self._login_form(scope, send) if reading else self._login(scope, receive, send, record))
        elif path == LOGOUT_PATH:
            if reading:
                await self._logout_form(scope, send, record)
            else:
                await self._logout(scope, receive, send, record)
        elif path == ADMIN_KEYS_PATH:
            if reading:
                await self._keys_page(scope, send, record)
            else:
                await self._create_key(scope, receive, send, record)
        elif (match := _REVOKE.fullmatch(path)) and not reading:
            await self._revoke_key(scope, receive, send, record, match.group(1))
        else:
            raise PageError(405, "Not allowed", f"{method[:16]} is not accepted at {path}.")

    # Signing in and out

    async def _login_form(self, scope: Scope, send: Send) -> None:
        query = parse_qs(scope["query_string"].decode("latin-1"))
        next_path = safe_next((query.get("next") or [None])[0])
        session_id = self.access.session_id(scope)
        if session_id and await self.access.sessions.find(session_id):
            await send_redirect(send, next_path)
            return
        body = render(
            "login.html",
            title="Sign in",
            next=next_path,
            notice=notice((query.get("reason") or [None])[0]),
            error=None,
        )
        await send_page(send, 200, body)

    async def _login(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        self._same_origin(scope)
        form = await self._form(scope, receive)
        key = form.get("key", "").strip()
        next_path = safe_next(form.get("next"))
        if not key:
            await self._login_again(scope, send, next_path, "Paste an API key to sign in.", 400)
            return
        try:
            identity = await self.access.check_key(key, scope, record)
        except Refusal as error:
            await self.access.refused(scope, record, error)
            await self._login_again(scope, send, next_path, error.plain, error.http_status, error.headers)
            return
        old = self.access.session_id(scope)
        if old:
            await self.access.sessions.end(old)
        session = await self.access.sessions.start(key, identity.key_id, identity.expires_at)
        audit("session.started", key_id=identity.key_id, owner=identity.user_id, client=client_address(scope))
        max_age = int((session.expires_at - dt.datetime.now(dt.UTC)).total_seconds())
        cookie = set_cookie(self.access.cookie_name(scope), session.id, max_age, self.access.secure(scope))
        await send_redirect(send, next_path, [cookie])

    async def _login_again(
        self,
        scope: Scope,
        send: Send,
        next_path: str,
        error: str,
        status: int,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        body = render("login.html", title="Sign in", next=next_path, notice=None, error=error)
        await send_page(send, status, body, headers)

    async def _logout_form(self, scope: Scope, send: Send, record: RequestRecord) -> None:
        caller = await self._signed_in(scope, record)
        if caller is None:
            return await send_redirect(send, login_location("/mlflow/", "signed_out"))
        await send_page(send, 200, render("logout.html", title="Sign out", caller=self._context(caller)))

    async def _logout(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        self._same_origin(scope)
        form = await self._form(scope, receive)
        session_id = self.access.session_id(scope)
        if session_id:
            self._check_csrf(session_id, form)
            session = await self.access.sessions.find(session_id)
            await self.access.sessions.end(session_id)
            if session is not None:
                audit("session.ended", key_id=session.key_id, client=client_address(scope))
        await send_redirect(send, login_location("/mlflow/", "signed_out"), [self.access.clear_cookie(scope)])

    # Key administration

    async def _keys_page(self, scope: Scope, send: Send, record: RequestRecord) -> None:
        caller = await self._admin(scope, record, send)
        if caller is None:
            return
        query = parse_qs(scope["query_string"].decode("latin-1"))
        revoked = (query.get("revoked") or [""])[0]
        shown = revoked if keys.is_key_id(revoked) else None
        await self._render_keys(scope, send, caller, revoked=shown)

    async def _admin_form(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> tuple[Caller, dict[str, str]] | None:
        """A key-administration form post: from this site, by a signed-in admin, with the session's CSRF
        token. None when the browser was sent to sign in."""
        self._same_origin(scope)
        caller = await self._admin(scope, record, send)
        if caller is None:
            return None
        form = await self._form(scope, receive)
        self._check_csrf(caller.session.id if caller.session else "", form)
        return caller, form

    async def _create_key(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        posted = await self._admin_form(scope, receive, send, record)
        if posted is None:
            return
        caller, form = posted
        values = {name: form.get(name, "").strip() for name in _KEY_FORM_FIELDS}
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
            await self._render_keys(scope, send, caller, form=values, error=error, status=400)
            return
        except (KeyNameTaken, ValueError) as exc:
            await self._render_keys(scope, send, caller, form=values, error=str(exc), status=400)
            return
        await self._render_keys(scope, send, caller, created=created)

    async def _revoke_key(
        self, scope: Scope, receive: Receive, send: Send, record: RequestRecord, key_id: str
    ) -> None:
        posted = await self._admin_form(scope, receive, send, record)
        if posted is None:
            return
        caller, _ = posted
        try:
            await asyncio.to_thread(self._managed_keys().revoke, key_id, f"key:{caller.identity.key_id}")
        except (KeyNotFound, ValueError) as exc:
            raise PageError(404, "No such key", str(exc)) from None
        # At once on this gateway; the others notice the store's revision within their poll interval.
        self.access.authenticator.invalidate()
        await send_redirect(send, f"{ADMIN_KEYS_PATH}?revoked={key_id}")

    async def _render_keys(
        self,
        scope: Scope,
        send: Send,
        caller: Caller,
        *,
        form: dict[str, str] | None = None,
        error: str | None = None,
        created: Any = None,
        revoked: str | None = None,
        status: int = 200,
    ) -> None:
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
            tracking_uri=self._public_base(scope) + "/mlflow",
        )
        await send_page(send, status, body)

    # Shared checks

    async def _signed_in(self, scope: Scope, record: RequestRecord) -> Caller | None:
        """The signed-in caller, or None when the browser has no live session."""
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
                "This gateway validates keys through the auth service at "
                f"{self.keys_managed_by} (AUTH_SERVICE_URL); manage keys there.",
            )
        return self.key_admin

    async def _admin(self, scope: Scope, record: RequestRecord, send: Send) -> Caller | None:
        """The signed-in admin; otherwise the browser is sent to sign in (None) or refused."""
        self._managed_keys()
        caller = await self._signed_in(scope, record)
        if caller is None:
            headers = [self.access.clear_cookie(scope)] if self.access.session_id(scope) else []
            await send_redirect(send, login_location(ADMIN_KEYS_PATH, record.auth_failure), headers)
            return None
        if "admin" not in caller.identity.scopes:
            raise PageError(
                403,
                "Admins only",
                f"Key {caller.identity.key_id} (scopes: {' '.join(caller.identity.scopes)}) is not an admin "
                "key. Sign in with an admin key to manage keys.",
            )
        return caller

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

    @staticmethod
    def _check_csrf(session_id: str, form: dict[str, str]) -> None:
        if not csrf_valid(session_id, form.get("csrf", "")):
            raise PageError(
                403,
                "Refused",
                "The form's security token does not match your session (it is from an older session or "
                "another site). Reload the page and submit it again.",
            )

    async def _form(self, scope: Scope, receive: Receive) -> dict[str, str]:
        content_type = (header_value(scope["headers"], b"content-type") or b"").split(b";")[0].strip()
        if content_type.lower() != b"application/x-www-form-urlencoded":
            raise PageError(415, "Not a form", "Send the form as application/x-www-form-urlencoded.")
        try:
            body = await read_body(receive, MAX_FORM_BYTES)
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
        }

    def _public_base(self, scope: Scope) -> str:
        if self.public_url:
            return self.public_url
        host = (header_value(scope["headers"], b"host") or b"localhost").decode("latin-1")
        return f"{scope.get('scheme', 'http')}://{host}"
