"""`/keys`, My keys: a single-sign-on user's own keys (`service.OwnKeys`), made and revoked in the browser.

`WebPages` routes, listed in `pages.py`, with its checks: a signed-in session, pages opened only as pages,
form posts from this site with the session's CSRF token. A new key shows its secret once, so making one
steps up as the admin pages do (a sign-in at the provider within minutes), and only a session begun at the
provider makes keys: a key never makes its own successor.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from hokusai_registry.admin.rendering import PageError, page, redirect, render
from hokusai_registry.admin.service import OwnKeys, OwnKeySpec, problems
from hokusai_registry.auth.caller import Access, Caller
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy import keys
from hokusai_registry.policy.navigation import login_location
from hokusai_registry.policy.routes import MY_KEYS_PATH
from hokusai_registry.store.key_store import KeyNameTaken, KeyNotFound

REVOKE_OWN_PATH = MY_KEYS_PATH + "/revoke"
_SCOPES = (
    ("read", "search and download"),
    ("write", "also log runs, artifacts and models"),
    ("admin", "also keys, teams and grants"),
)


class WebPages(Protocol):
    """What these pages use of `pages.WebPages` (which lists them: it cannot be imported here)."""

    access: Access
    own_keys: OwnKeys | None
    sso_name: str

    async def _signed_in(self, request: Request) -> Caller | None: ...

    def _same_origin(self, scope: Any) -> None: ...

    async def _form(self, request: Request) -> dict[str, str]: ...

    @staticmethod
    def _check_csrf(session_id: str, form: dict[str, str]) -> None: ...

    async def _step_up(self, request: Request, caller: Caller, form: dict[str, str]) -> Refusal | None: ...

    def _context(self, caller: Caller) -> dict[str, Any]: ...

    def _public_base(self, scope: Any) -> str: ...


async def _person(pages: WebPages, request: Request) -> tuple[Caller, str, OwnKeys] | Response:
    """The signed-in single-sign-on user (their caller and user id), or the way to sign in."""
    if pages.own_keys is None:
        raise PageError(
            404, "No single sign-on here", "My keys is for people who sign in at an identity provider."
        )
    caller = await pages._signed_in(request)
    if caller is None:
        return redirect(login_location(MY_KEYS_PATH))
    user_id = caller.identity.sso_user_id
    if user_id is None:
        raise PageError(
            403,
            "Not a single-sign-on user",
            f"My keys is for people who sign in with {pages.sso_name}; this session's key was issued by an "
            "admin (keys are managed at /admin/keys).",
        )
    return caller, user_id, pages.own_keys


async def _render(
    pages: WebPages,
    request: Request,
    caller: Caller,
    user_id: str,
    own_keys: OwnKeys,
    *,
    status: int = 200,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    **shown: Any,
) -> Response:
    listed = await asyncio.to_thread(own_keys.list, user_id)
    held = set(caller.identity.scopes)
    body = render(
        "my_keys.html",
        title="My keys",
        caller=pages._context(caller),
        keys=list(reversed(listed)),
        scopes=[choice for choice in _SCOPES if choice[0] in held],
        form=shown.pop("form", {"name": "", "scope": "write", "expires_in": ""}),
        max_days=own_keys.max_lifetime.days,
        tracking_uri=pages._public_base(request.scope) + "/mlflow",
        error=shown.pop("error", None),
        created=shown.pop("created", None),
        revoked=shown.pop("revoked", None),
    )
    return page(status, body, headers)


async def my_keys(pages: WebPages, request: Request) -> Response:
    found = await _person(pages, request)
    if isinstance(found, Response):
        return found
    caller, user_id, own_keys = found
    revoked = request.query_params.get("revoked", "")
    return await _render(
        pages, request, caller, user_id, own_keys, revoked=revoked if keys.is_key_id(revoked) else None
    )


async def _posted(
    pages: WebPages, request: Request
) -> tuple[Caller, str, OwnKeys, dict[str, str]] | Response:
    pages._same_origin(request.scope)
    found = await _person(pages, request)
    if isinstance(found, Response):
        return found
    form = await pages._form(request)
    caller = found[0]
    pages._check_csrf(caller.session.id if caller.session else "", form)
    return (*found, form)


async def create_own_key(pages: WebPages, request: Request) -> Response:
    posted = await _posted(pages, request)
    if isinstance(posted, Response):
        return posted
    caller, user_id, own_keys, form = posted
    values = {name: form.get(name, "").strip() for name in ("name", "scope", "expires_in")}

    async def again(error: str, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
        return await _render(
            pages,
            request,
            caller,
            user_id,
            own_keys,
            form=values,
            error=error,
            status=status,
            headers=headers,
        )

    if not caller.identity.from_provider:
        return await again(
            f"Keys are made by people signed in with {pages.sso_name}, not by another key: sign in there.",
            403,
        )
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await again(refused.plain, refused.http_status, refused.headers)
    try:
        spec = OwnKeySpec.model_validate(
            {
                "name": values["name"],
                "scope": values["scope"] or "write",
                "expires_in": values["expires_in"] or None,
            }
        )
        created = await asyncio.to_thread(own_keys.create, user_id, spec, f"key:{caller.identity.key_id}")
    except ValidationError as exc:
        return await again(problems(exc.errors()), 400)
    except PermissionError as exc:
        return await again(str(exc), 403)
    except (KeyNameTaken, ValueError) as exc:
        return await again(str(exc), 400)
    return await _render(pages, request, caller, user_id, own_keys, created=created)


async def revoke_own_key(pages: WebPages, request: Request) -> Response:
    posted = await _posted(pages, request)
    if isinstance(posted, Response):
        return posted
    caller, user_id, own_keys, form = posted
    key_id = form.get("key_id", "")
    try:
        await asyncio.to_thread(own_keys.revoke, user_id, key_id, f"key:{caller.identity.key_id}")
    except (KeyNotFound, ValueError) as exc:
        raise PageError(404, "No such key", str(exc)) from None
    pages.access.authenticator.invalidate()
    return redirect(f"{MY_KEYS_PATH}?revoked={key_id}")
