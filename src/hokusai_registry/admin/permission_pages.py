"""The teams and grants pages: `/admin/teams` and `/admin/grants`, with their forms and confirmations.

They are `WebPages` routes (`pages.py` lists them) and take its checks as the key pages do: a signed-in
admin session, pages opened only as pages (Fetch Metadata), form posts from this site with the session's
CSRF token, and every change with the session's own admin key entered again (the step-up). Changes go
through the same `PermissionAdmin` as the CLI and the REST API, audited with the session's key. Teams,
owners and grants travel as form fields and query parameters, never as path segments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, urlencode

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from hokusai_registry.admin.permission_models import (
    KIND_BY_TYPE,
    KINDS,
    ChangeRefused,
    Grant,
    GrantSpec,
    GrantTarget,
    MemberSpec,
    TeamSpec,
)
from hokusai_registry.admin.permissions import PermissionAdmin
from hokusai_registry.admin.rendering import PageError, confirmation_page, page, render
from hokusai_registry.admin.service import problems
from hokusai_registry.auth.caller import Caller
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy.routes import ADMIN_GRANTS_PATH, ADMIN_TEAMS_PATH


class WebPages(Protocol):
    """What these pages use of `pages.WebPages` (which lists them: it cannot be imported here)."""

    permissions: PermissionAdmin

    async def _admin(self, request: Request, *, keys: bool = ..., back: str = ...) -> Caller | Response: ...

    async def _admin_form(
        self, request: Request, *, keys: bool = ..., back: str = ...
    ) -> tuple[Caller, dict[str, str]] | Response: ...

    async def _step_up(self, request: Request, caller: Caller, form: dict[str, str]) -> Refusal | None: ...

    def _context(self, caller: Caller) -> dict[str, Any]: ...


MEMBERS_PATH = ADMIN_TEAMS_PATH + "/members"
REMOVE_MEMBER_PATH = ADMIN_TEAMS_PATH + "/remove-member"
DELETE_TEAM_PATH = ADMIN_TEAMS_PATH + "/delete"
REMOVE_GRANT_PATH = ADMIN_GRANTS_PATH + "/remove"
KIND_CHOICES = tuple((kind.field, kind.label) for kind in KINDS)
LEVEL_MEANINGS = (
    ("READ", "read"),
    ("USE", "also invoke"),
    ("EDIT", "also change"),
    ("MANAGE", "also delete and grant"),
    ("DENY", "none of it, whatever else is granted"),
)
_GRANT_FIELDS = ("grantee", "name", "kind", "resource", "level")


def _query(request: Request) -> dict[str, str]:
    fields = parse_qs(request.scope["query_string"].decode("latin-1"), max_num_fields=8)
    return {name: values[0].strip() for name, values in fields.items()}


def _actor(caller: Caller) -> str:
    return f"key:{caller.identity.key_id}"


def _unavailable(refused: ChangeRefused) -> PageError:
    return PageError(refused.reason.status, "Not available", refused.message)


# Teams


async def teams_page(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(caller, Response):
        return caller
    return await _render_teams(pages, caller)


async def _render_teams(
    pages: WebPages,
    caller: Caller,
    *,
    form: Mapping[str, str] | None = None,
    error: str | None = None,
    error_form: str = "",
    notice: str | None = None,
    status: int = 200,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Response:
    try:
        teams = await pages.permissions.teams()
    except ChangeRefused as refused:
        raise _unavailable(refused) from None
    rows = [
        {
            "team": team,
            "delete": f"{DELETE_TEAM_PATH}?{urlencode({'team': team.name})}",
            "grants": f"{ADMIN_GRANTS_PATH}?{urlencode({'team': team.name})}",
            "members": [
                (owner, f"{REMOVE_MEMBER_PATH}?{urlencode({'team': team.name, 'owner': owner})}")
                for owner in team.members
            ],
        }
        for team in teams
    ]
    body = render(
        "admin_teams.html",
        title="Teams",
        caller=pages._context(caller),
        rows=rows,
        form={"name": "", "team": "", "owner": "", **(form or {})},
        error=error,
        error_form=error_form,
        notice=notice,
    )
    return page(status, body, headers)


async def create_team(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    values = {"name": form.get("name", "").strip()}

    async def again(error: str, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
        return await _render_teams(
            pages, caller, form=values, error=error, error_form="create", status=status, headers=headers
        )

    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await again(refused.plain, refused.http_status, refused.headers)
    try:
        spec = TeamSpec(name=values["name"])
    except ValidationError as exc:
        return await again(problems(exc.errors()), 400)
    try:
        team = await pages.permissions.create_team(spec, _actor(caller))
    except ChangeRefused as change:
        return await again(_sentence(change.message), change.reason.status)
    return await _render_teams(pages, caller, notice=f"Team {team.name} created.")


async def add_member(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    values = {"team": form.get("team", "").strip(), "owner": form.get("owner", "").strip()}

    async def again(error: str, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
        return await _render_teams(
            pages, caller, form=values, error=error, error_form="add", status=status, headers=headers
        )

    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await again(refused.plain, refused.http_status, refused.headers)
    try:
        spec = MemberSpec(owner=values["owner"])
    except ValidationError as exc:
        return await again(problems(exc.errors()), 400)
    try:
        change = await pages.permissions.add_member(values["team"], spec, _actor(caller))
    except ChangeRefused as failed:
        return await again(_sentence(failed.message), failed.reason.status)
    done = "added to" if change.changed else "was already in"
    return await _render_teams(pages, caller, notice=f"{spec.owner} {done} team {change.team.name}.")


async def confirm_remove_member(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(caller, Response):
        return caller
    query = _query(request)
    return await _member_confirmation(pages, caller, query.get("team", ""), query.get("owner", ""))


async def _member_confirmation(
    pages: WebPages, caller: Caller, team_name: str, owner: str, refused: Refusal | None = None
) -> Response:
    try:
        team = await pages.permissions.team(team_name)
    except ChangeRefused as failed:
        raise PageError(failed.reason.status, "No such team", failed.message) from None
    if owner not in team.members:
        raise PageError(404, "Not a member", f"{owner!r} is not in team {team.name!r}.")
    return _confirmation(
        pages,
        caller,
        title=f"Remove {owner} from team {team.name}",
        summary=f"Team {team.name}: {', '.join(team.members)}.",
        consequence=f"{owner} loses the team's grants at once; {owner}'s own grants stay.",
        action=REMOVE_MEMBER_PATH,
        fields=(("team", team.name), ("owner", owner)),
        button="Remove from team",
        cancel=ADMIN_TEAMS_PATH,
        refused=refused,
    )


async def remove_member(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    team, owner = form.get("team", ""), form.get("owner", "")
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _member_confirmation(pages, caller, team, owner, refused)
    try:
        spec = MemberSpec(owner=owner)
        change = await pages.permissions.remove_member(team, spec, _actor(caller))
    except ValidationError as exc:
        raise PageError(400, "Not an owner", problems(exc.errors())) from None
    except ChangeRefused as failed:
        raise PageError(failed.reason.status, "Not removed", failed.message) from None
    return await _render_teams(pages, caller, notice=f"{spec.owner} removed from team {change.team.name}.")


async def confirm_delete_team(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(caller, Response):
        return caller
    return await _delete_confirmation(pages, caller, _query(request).get("team", ""))


async def _delete_confirmation(
    pages: WebPages, caller: Caller, team_name: str, refused: Refusal | None = None
) -> Response:
    try:
        team = await pages.permissions.team(team_name)
        grants = await pages.permissions.grants(team=team_name)
    except ChangeRefused as failed:
        raise PageError(failed.reason.status, "No such team", failed.message) from None
    return _confirmation(
        pages,
        caller,
        title=f"Delete team {team.name}",
        summary=f"Members: {', '.join(team.members) or 'none'}; {len(grants)} grants.",
        consequence="Its members lose its grants at once (their own grants stay), and its grants are "
        "deleted with it. This cannot be undone.",
        action=DELETE_TEAM_PATH,
        fields=(("team", team.name),),
        button="Delete team",
        cancel=ADMIN_TEAMS_PATH,
        refused=refused,
    )


async def delete_team(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_TEAMS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    team = form.get("team", "")
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _delete_confirmation(pages, caller, team, refused)
    try:
        deleted = await pages.permissions.delete_team(team, _actor(caller))
    except ChangeRefused as failed:
        raise PageError(failed.reason.status, "Not deleted", failed.message) from None
    return await _render_teams(pages, caller, notice=f"Team {deleted.name} deleted.")


# Grants


async def grants_page(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_GRANTS_PATH)
    if isinstance(caller, Response):
        return caller
    query = _query(request)
    owner, team = query.get("owner") or None, query.get("team") or None
    return await _render_grants(pages, caller, owner=owner, team=team)


def _remove_link(grant: Grant) -> str | None:
    """The confirmation of this grant's removal; None for resource types these pages do not grant on
    (MLflow's own client can)."""
    kind = KIND_BY_TYPE.get(grant.resource_type)
    if kind is None:
        return None
    grantee = ("owner", grant.owner) if grant.owner is not None else ("team", grant.team)
    fields = {"grantee": grantee[0], "name": grantee[1] or "", "kind": kind.field, "resource": grant.shown_id}
    return f"{REMOVE_GRANT_PATH}?{urlencode(fields)}"


async def _render_grants(
    pages: WebPages,
    caller: Caller,
    *,
    owner: str | None = None,
    team: str | None = None,
    form: Mapping[str, str] | None = None,
    error: str | None = None,
    notice: str | None = None,
    status: int = 200,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> Response:
    if owner is not None and team is not None:
        raise PageError(400, "One at a time", "Show the grants of one owner or one team, not both.")
    try:
        grants = await pages.permissions.grants(owner=owner, team=team)
    except ValueError as exc:
        raise PageError(400, "Not an owner", str(exc)) from None
    except ChangeRefused as refused:
        raise _unavailable(refused) from None
    shown = f"owner {owner}" if owner else f"team {team}" if team else None
    body = render(
        "admin_grants.html",
        title="Grants",
        caller=pages._context(caller),
        rows=[{"grant": grant, "remove": _remove_link(grant)} for grant in grants],
        shown=shown,
        filter={"owner": owner or "", "team": team or ""},
        form={
            "grantee": "owner",
            "name": "",
            "kind": "experiment",
            "resource": "",
            "level": "READ",
            **(form or {}),
        },
        kinds=KIND_CHOICES,
        levels=LEVEL_MEANINGS,
        error=error,
        notice=notice,
    )
    return page(status, body, headers)


def _target_fields(values: Mapping[str, str]) -> dict[str, str]:
    """The form's grantee and resource as GrantTarget's fields."""
    grantee = values.get("grantee", "")
    kind = values.get("kind", "")
    if grantee not in ("owner", "team"):
        raise PageError(400, "Not a grantee", "Choose an owner or a team.")
    if kind not in {known.field for known in KINDS}:
        raise PageError(400, "Not a resource", "Choose what the grant is on.")
    return {grantee: values.get("name", ""), kind: values.get("resource", "")}


async def add_grant(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_GRANTS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    values = {name: form.get(name, "").strip() for name in _GRANT_FIELDS}

    async def again(error: str, status: int, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Response:
        return await _render_grants(pages, caller, form=values, error=error, status=status, headers=headers)

    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await again(refused.plain, refused.http_status, refused.headers)
    try:
        spec = GrantSpec.model_validate({**_target_fields(values), "level": values["level"]})
    except ValidationError as exc:
        return await again(problems(exc.errors()), 400)
    try:
        change = await pages.permissions.add_grant(spec, _actor(caller))
    except ChangeRefused as failed:
        return await again(_sentence(failed.message), failed.reason.status)
    grant = change.grant
    if not change.changed:
        notice = f"Unchanged: {grant.grantee} already has {grant.level} on {grant.resource}."
    else:
        was = f" (was {change.previous})" if change.previous else ""
        notice = f"Granted {grant.level} on {grant.resource} to {grant.grantee}{was}."
    return await _render_grants(pages, caller, notice=notice)


async def confirm_remove_grant(pages: WebPages, request: Request) -> Response:
    caller = await pages._admin(request, keys=False, back=ADMIN_GRANTS_PATH)
    if isinstance(caller, Response):
        return caller
    return await _grant_confirmation(pages, caller, _query(request))


async def _grant_confirmation(
    pages: WebPages, caller: Caller, values: Mapping[str, str], refused: Refusal | None = None
) -> Response:
    target = _target(values)
    return _confirmation(
        pages,
        caller,
        title=f"Remove a grant of {target.grantee}",
        summary=f"{target.grantee}'s grant on {target.kind.label} {target.value}.",
        consequence="What it allowed (or, for a DENY, refused) is decided again by the other grants and "
        "MLflow's default permission, at once.",
        action=REMOVE_GRANT_PATH,
        fields=tuple((name, values.get(name, "")) for name in ("grantee", "name", "kind", "resource")),
        button="Remove grant",
        cancel=ADMIN_GRANTS_PATH,
        refused=refused,
    )


def _target(values: Mapping[str, str]) -> GrantTarget:
    try:
        return GrantTarget.model_validate(_target_fields(values))
    except ValidationError as exc:
        raise PageError(400, "Not a grant", problems(exc.errors())) from None


async def remove_grant(pages: WebPages, request: Request) -> Response:
    posted = await pages._admin_form(request, keys=False, back=ADMIN_GRANTS_PATH)
    if isinstance(posted, Response):
        return posted
    caller, form = posted
    values = {name: form.get(name, "").strip() for name in _GRANT_FIELDS}
    refused = await pages._step_up(request, caller, form)
    if refused is not None:
        return await _grant_confirmation(pages, caller, values, refused)
    try:
        removed = await pages.permissions.remove_grant(_target(values), _actor(caller))
    except ChangeRefused as failed:
        raise PageError(failed.reason.status, "Not removed", failed.message) from None
    notice = f"Removed {removed.grantee}'s {removed.level} on {removed.resource}."
    return await _render_grants(pages, caller, notice=notice)


# Shared


def _confirmation(pages: WebPages, caller: Caller, **shown: Any) -> Response:
    return confirmation_page(pages._context(caller), **shown)


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:]


Endpoint = Callable[["WebPages", Request], Awaitable[Response]]

# (path, method, endpoint) for `pages.py`'s route list; GET also takes HEAD.
PERMISSION_PAGES: tuple[tuple[str, str, Endpoint], ...] = (
    (ADMIN_TEAMS_PATH, "GET", teams_page),
    (ADMIN_TEAMS_PATH, "POST", create_team),
    (MEMBERS_PATH, "POST", add_member),
    (REMOVE_MEMBER_PATH, "GET", confirm_remove_member),
    (REMOVE_MEMBER_PATH, "POST", remove_member),
    (DELETE_TEAM_PATH, "GET", confirm_delete_team),
    (DELETE_TEAM_PATH, "POST", delete_team),
    (ADMIN_GRANTS_PATH, "GET", grants_page),
    (ADMIN_GRANTS_PATH, "POST", add_grant),
    (REMOVE_GRANT_PATH, "GET", confirm_remove_grant),
    (REMOVE_GRANT_PATH, "POST", remove_grant),
)
