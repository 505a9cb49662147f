"""`/admin/users`: the single-sign-on users (`users.UserAdmin`), disabled and enabled in the browser.

`WebPages` routes, listed in `pages.py`, with the admin pages' checks: a signed-in admin, pages opened only
as pages, form posts from this site with the session's CSRF token, and each change confirmed with a step-up.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from hokusai_registry.admin.rendering import PageError, confirmation_page, page, redirect, render
from hokusai_registry.admin.users import UserAdmin
from hokusai_registry.auth.caller import Access, Caller
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy.routes import ADMIN_USERS_PATH
from hokusai_registry.store.user_store import UserNotFound

DISABLE_USER_PATH = ADMIN_USERS_PATH + "/disable"
ENABLE_USER_PATH = ADMIN_USERS_PATH + "/enable"
# The change each confirmation makes: its button and what it does.
_CHANGES = {
    DISABLE_USER_PATH: (
        "Disable user",
        "Every key of theirs is revoked (not restored by enabling them), their browser sessions end and "
        "their tokens are refused, on every gateway within a second.",
    ),
    ENABLE_USER_PATH: (
        "Enable user",
        "They may sign in and send tokens again; their revoked keys stay revoked.",
    ),
}


class WebPages(Protocol):
    """What these pages use of `pages.WebPages` (which lists them: it cannot be imported here)."""

    access: Access
    users: UserAdmin | None

    async def _admin(self, request: Request, *, keys: bool = ..., back: str = ...) -> Caller | Response: ...

    async def _admin_form(
        self, request: Request, *, keys: bool = ..., back: str = ...
    ) -> tuple[Caller, dict[str, str]] | Response: ...

    async def _step_up(self, request: Request, caller: Caller, form: dict[str, str]) -> Refusal | None: ...

    def _context(self, caller: Caller) -> dict[str, Any]: ...


def _users(pages: WebPages) -> UserAdmin:
    if pages.users is None:
        raise PageError(
            404, "No users here", "Users come with single sign-on, which this gateway does not have."
        )
    return pages.users


async def users_page(pages: WebPages, request: Request) -> Response:
    users = _users(pages)
    caller = await pages._admin(request, back=ADMIN_USERS_PATH)
    if isinstance(caller, Response):
        return caller
    listed = await asyncio.to_thread(users.list)
    notice = request.query_params.get("changed")
    body = render(
        "admin_users.html",
        title="Users",
        caller=pages._context(caller),
        users=listed,
        notice=notice if notice and any(user.name == notice for user in listed) else None,
    )
    return page(200, body)


async def _confirmation(
    pages: WebPages, request: Request, caller: Caller, action: str, name: str, refused: Refusal | None = None
) -> Response:
    try:
        user = await asyncio.to_thread(_users(pages).get, name)
    except UserNotFound as exc:
        raise PageError(404, "No such user", str(exc)) from None
    button, consequence = _CHANGES[action]
    return confirmation_page(
        pages._context(caller),
        title=f"{button} {user.name}",
        summary=f"{user.name} ({user.kind}, {' '.join(user.scopes)}) is {user.status}.",
        consequence=consequence,
        action=action,
        fields=(("name", user.name),),
        button=button,
        cancel=ADMIN_USERS_PATH,
        refused=refused,
    )


async def confirm_change(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, back=ADMIN_USERS_PATH)
    if isinstance(caller, Response):
        return caller
    return await _confirmation(pages, request, caller, request.url.path, request.query_params.get("name", ""))


async def change(pages: WebPages, request: Request) -> Response:
    users = _users(pages)
    posted = await pages._admin_form(request, back=ADMIN_USERS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    action, name = request.url.path, form.get("name", "")
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _confirmation(pages, request, caller, action, name, refused)
    actor = f"key:{caller.identity.key_id}"
    try:
        if action == DISABLE_USER_PATH:
            await asyncio.to_thread(users.disable, name, actor)
        else:
            await asyncio.to_thread(users.enable, name, actor)
    except UserNotFound as exc:
        raise PageError(404, "No such user", str(exc)) from None
    pages.access.authenticator.invalidate()
    return redirect(f"{ADMIN_USERS_PATH}?{urlencode({'changed': name})}")
