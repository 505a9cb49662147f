"""The admin REST API's teams and grants (`/api/v1/teams`, `/api/v1/grants`): the same operations and
JSON as `hokusai-registry teams|grants ... --json`, through the same `PermissionAdmin`, audited with the
admin key as the actor. The gateway lets only admin keys (in the headers) reach them."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request, Response

from hokusai_registry.admin.permission_models import (
    Grant,
    GrantSpec,
    GrantTarget,
    MemberSpec,
    Team,
    TeamSpec,
)
from hokusai_registry.admin.permissions import PermissionAdmin


def add_permission_routes(
    app: FastAPI, permissions: PermissionAdmin, _actor: Callable[[Request], str]
) -> None:
    """The routes on `app`; `_actor` names the admin key a request came with (`key:<id>`)."""

    @app.get("/api/v1/teams", response_model=list[Team], summary="List teams and their members")
    async def list_teams() -> list[Team]:
        return await permissions.teams()

    @app.post("/api/v1/teams", response_model=Team, status_code=201, summary="Create a team")
    async def create_team(spec: TeamSpec, request: Request) -> Team:
        return await permissions.create_team(spec, _actor(request))

    @app.get("/api/v1/teams/{team}", response_model=Team, summary="One team")
    async def get_team(team: str) -> Team:
        return await permissions.team(team)

    @app.delete(
        "/api/v1/teams/{team}",
        response_model=Team,
        summary="Delete a team (its members lose its grants; their own grants stay); answers it as it was",
    )
    async def delete_team(team: str, request: Request) -> Team:
        return await permissions.delete_team(team, _actor(request))

    @app.post(
        "/api/v1/teams/{team}/members",
        response_model=Team,
        summary="Add an owner to a team (its MLflow user is created if missing; already there: no change)",
    )
    async def add_member(team: str, spec: MemberSpec, request: Request) -> Team:
        return (await permissions.add_member(team, spec, _actor(request))).team

    @app.post(
        "/api/v1/teams/{team}/members/remove", response_model=Team, summary="Take an owner out of a team"
    )
    async def remove_member(team: str, spec: MemberSpec, request: Request) -> Team:
        return (await permissions.remove_member(team, spec, _actor(request))).team

    @app.get(
        "/api/v1/grants",
        response_model=list[Grant],
        summary="List grants: all, an owner's (its own and its teams'), or a team's",
    )
    async def list_grants(owner: str | None = None, team: str | None = None) -> list[Grant]:
        if owner is not None and team is not None:
            raise ValueError("give at most one of owner and team")
        return await permissions.grants(owner=owner, team=team)

    @app.post(
        "/api/v1/grants",
        response_model=Grant,
        status_code=201,
        summary="Grant an owner or a team a level on one resource (201); change the level of the grant "
        "there is (200)",
        responses={200: {"model": Grant, "description": "The grant there was, with its new (or same) level"}},
    )
    async def add_grant(spec: GrantSpec, request: Request, response: Response) -> Grant:
        change = await permissions.add_grant(spec, _actor(request))
        if change.previous is not None:
            response.status_code = 200
        return change.grant

    @app.post(
        "/api/v1/grants/remove",
        response_model=Grant,
        summary="Remove an owner's or a team's grant on one resource; answers the grant removed",
    )
    async def remove_grant(target: GrantTarget, request: Request) -> Grant:
        return await permissions.remove_grant(target, _actor(request))
