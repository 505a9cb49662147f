"""Teams and grants: the one implementation behind `hokusai-registry teams|grants ...`, `/api/v1/teams`,
`/api/v1/grants` and the `/admin/teams` and `/admin/grants` pages.

Nothing is stored here. Teams are MLflow roles in workspace `default` (same name), members are MLflow
users assigned to them, and grants are MLflow's own: an owner's in MLflow's per-user role
(`users/permissions/grant|revoke`), a team's in its role (`roles/permissions/*`). MLflow decides what a
user may do from them (DENY wins, else the highest grant, else the default permission). Every request
goes to MLflow as its administrator (`admin/mlflow_admin.py`), and every change is written to the audit
log with who made it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from hokusai_registry.admin.grant_resources import resolve
from hokusai_registry.admin.mlflow_admin import (
    ROLE_PERMISSION_ADD,
    ROLE_PERMISSION_REMOVE,
    ROLE_PERMISSION_UPDATE,
    ROLE_PERMISSIONS,
    ROLES_ASSIGN,
    ROLES_CREATE,
    ROLES_DELETE,
    ROLES_LIST,
    ROLES_UNASSIGN,
    USER_GRANT,
    USER_PERMISSIONS,
    USER_REVOKE,
    USERS_LIST,
    AdminChannel,
    MlflowAdmin,
    MlflowError,
)
from hokusai_registry.admin.permission_models import (
    OWN_ROLE,
    WILDCARD,
    WORKSPACE,
    ChangeRefused,
    Grant,
    GrantChange,
    GrantSpec,
    GrantTarget,
    MemberChange,
    MemberSpec,
    Team,
    TeamSpec,
    owner_name,
)
from hokusai_registry.core.refusals import Reason
from hokusai_registry.ops.audit import audit


class PermissionAdmin:
    """Team and grant changes for an actor (`cli:<user>` or `key:<admin key id>`), each audited."""

    def __init__(self, channel: AdminChannel) -> None:
        self.mlflow = MlflowAdmin(channel)

    async def _roles(self) -> list[Mapping[str, Any]]:
        """The teams' roles: every role in the workspace but MLflow's per-user ones."""
        answer = await self.mlflow.call("GET", ROLES_LIST, {"workspace": WORKSPACE})
        return [role for role in answer.get("roles") or [] if not OWN_ROLE.fullmatch(str(role["name"]))]

    async def _role(self, team: str) -> Mapping[str, Any]:
        for role in await self._roles():
            if role["name"] == team:
                return role
        raise ChangeRefused(
            Reason.NOT_FOUND, f"there is no team {team!r} (see `hokusai-registry teams list`)."
        )

    async def _users(self) -> list[Mapping[str, Any]]:
        answer = await self.mlflow.call("GET", USERS_LIST)
        return list(answer.get("users") or [])

    # Teams

    async def teams(self) -> list[Team]:
        roles = await self._roles()
        users = await self._users()
        return sorted((_team(role, users) for role in roles), key=lambda team: team.name)

    async def team(self, name: str) -> Team:
        return _team(await self._role(name), await self._users())

    async def create_team(self, spec: TeamSpec, actor: str) -> Team:
        try:
            await self.mlflow.call("POST", ROLES_CREATE, body={"name": spec.name, "workspace": WORKSPACE})
        except MlflowError as error:
            if error.code == "RESOURCE_ALREADY_EXISTS":
                raise ChangeRefused(Reason.ALREADY_EXISTS, f"team {spec.name!r} already exists.") from None
            raise error.refusal() from None
        audit("team.created", actor=actor, team=spec.name)
        return Team(name=spec.name, members=[])

    async def delete_team(self, name: str, actor: str) -> Team:
        """Deletes the team's role: its members lose its grants at once (their own grants stay)."""
        role = await self._role(name)
        team = _team(role, await self._users())
        try:
            await self.mlflow.call("DELETE", ROLES_DELETE, {"role_id": int(role["id"])})
        except MlflowError as error:
            raise error.refusal() from None
        audit(
            "team.deleted",
            actor=actor,
            team=name,
            members=team.members,
            grants=len(role.get("permissions") or []),
        )
        return team

    async def add_member(self, team: str, spec: MemberSpec, actor: str) -> MemberChange:
        role = await self._role(team)
        owner = spec.owner
        assignment = {"username": owner, "role_id": int(role["id"])}
        try:
            await self.mlflow.call("POST", ROLES_ASSIGN, body=assignment)
        except MlflowError as error:
            if error.code == "RESOURCE_ALREADY_EXISTS":
                return MemberChange(await self.team(team), changed=False)
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise error.refusal() from None
            # No MLflow user yet (the owner never made a request): made, then assigned.
            await self.mlflow.ensure_user(owner)
            try:
                await self.mlflow.call("POST", ROLES_ASSIGN, body=assignment)
            except MlflowError as again:
                raise again.refusal() from None
        audit("team.member_added", actor=actor, team=team, owner=owner)
        return MemberChange(await self.team(team), changed=True)

    async def remove_member(self, team: str, spec: MemberSpec, actor: str) -> MemberChange:
        role = await self._role(team)
        try:
            await self.mlflow.call(
                "DELETE", ROLES_UNASSIGN, {"username": spec.owner, "role_id": int(role["id"])}
            )
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                raise ChangeRefused(Reason.NOT_FOUND, f"{spec.owner!r} is not in team {team!r}.") from None
            raise error.refusal() from None
        audit("team.member_removed", actor=actor, team=team, owner=spec.owner)
        return MemberChange(await self.team(team), changed=True)

    # Grants

    async def grants(self, owner: str | None = None, team: str | None = None) -> list[Grant]:
        """Every grant; an owner's own and those of the owner's teams (what MLflow combines for them);
        or a team's."""
        if owner is not None:
            return _sorted(await self._owner_grants(owner_name(owner)))
        if team is not None:
            return _sorted(_team_grants(await self._role(team)))
        found = [grant for role in await self._roles() for grant in _team_grants(role)]
        for user in await self._users():
            for role in user.get("roles") or []:
                if OWN_ROLE.fullmatch(str(role["name"])) and role.get("workspace") == WORKSPACE:
                    found += _rows(role.get("permissions") or [], owner=str(user["username"]))
        return _sorted(found)

    async def _owner_grants(self, owner: str) -> list[Grant]:
        try:
            answer = await self.mlflow.call("GET", USER_PERMISSIONS, {"username": owner})
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                return []  # no MLflow user yet: nothing granted
            raise error.refusal() from None
        found = []
        for row in answer.get("permissions") or []:
            if row.get("workspace") != WORKSPACE:
                continue
            name = str(row["role_name"])
            own = OWN_ROLE.fullmatch(name) is not None
            found += _rows([row], owner=owner if own else None, team=None if own else name)
        return found

    async def add_grant(self, spec: GrantSpec, actor: str) -> GrantChange:
        """Grants `spec.level`, or changes the level of the grant there is."""
        resource_type, pattern = await resolve(self.mlflow, spec, check=True)
        if spec.owner is not None:
            change = await self._grant_owner(spec.owner, resource_type, pattern, spec.level)
        else:
            change = await self._grant_team(str(spec.team), resource_type, pattern, spec.level)
        if change.changed:
            audit(
                "grant.added",
                actor=actor,
                owner=spec.owner,
                team=spec.team,
                resource_type=resource_type,
                resource_id=pattern,
                permission=spec.level,
                previous=change.previous,
            )
        return change

    async def _grant_owner(self, owner: str, resource_type: str, pattern: str, level: str) -> GrantChange:
        grant = Grant(owner=owner, team=None, resource_type=resource_type, resource_id=pattern, level=level)
        try:
            answer = await self.mlflow.call("GET", USER_PERMISSIONS, {"username": owner})
        except MlflowError as error:
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise error.refusal() from None
            await self.mlflow.ensure_user(owner)
            answer = {}
        for row in answer.get("permissions") or []:
            if (
                OWN_ROLE.fullmatch(str(row["role_name"]))
                and row.get("workspace") == WORKSPACE
                and (row["resource_type"], row["resource_pattern"]) == (resource_type, pattern)
            ):
                if row["permission"] == level:
                    return GrantChange(grant, previous=level, changed=False)
                await self._update(int(row["role_id"]), resource_type, pattern, level)
                return GrantChange(grant, previous=str(row["permission"]))
        body = {
            "username": owner,
            "resource_type": resource_type,
            "resource_id": pattern,
            "permission": level,
        }
        try:
            await self.mlflow.call("POST", USER_GRANT, body=body)
        except MlflowError as error:
            raise error.refusal() from None
        return GrantChange(grant, previous=None)

    async def _grant_team(self, team: str, resource_type: str, pattern: str, level: str) -> GrantChange:
        grant = Grant(owner=None, team=team, resource_type=resource_type, resource_id=pattern, level=level)
        role = await self._role(team)
        for row in role.get("permissions") or []:
            if (row["resource_type"], row["resource_pattern"]) == (resource_type, pattern):
                if row["permission"] == level:
                    return GrantChange(grant, previous=level, changed=False)
                await self._update(int(role["id"]), resource_type, pattern, level)
                return GrantChange(grant, previous=str(row["permission"]))
        body = {
            "role_id": int(role["id"]),
            "resource_type": resource_type,
            "resource_pattern": pattern,
            "permission": level,
        }
        try:
            await self.mlflow.call("POST", ROLE_PERMISSION_ADD, body=body)
        except MlflowError as error:
            raise error.refusal() from None
        return GrantChange(grant, previous=None)

    async def _update(self, role_id: int, resource_type: str, pattern: str, level: str) -> None:
        """A grant's new level, in place (one change: never revoked in between)."""
        try:
            answer = await self.mlflow.call("GET", ROLE_PERMISSIONS, {"role_id": role_id})
            for row in answer.get("role_permissions") or []:
                if (row["resource_type"], row["resource_pattern"]) == (resource_type, pattern):
                    body = {"role_permission_id": int(row["id"]), "permission": level}
                    await self.mlflow.call("PATCH", ROLE_PERMISSION_UPDATE, body=body)
                    return
        except MlflowError as error:
            raise error.refusal() from None
        raise ChangeRefused(Reason.NOT_FOUND, "the grant was removed meanwhile; nothing was changed.")

    async def remove_grant(self, target: GrantTarget, actor: str) -> Grant:
        role = await self._role(str(target.team)) if target.team is not None else None
        if role is not None:
            own = _team_grants(role)
        else:
            own = [grant for grant in await self._owner_grants(str(target.owner)) if grant.owner is not None]
        existing = {(grant.resource_type, grant.resource_id): grant for grant in own}
        resource_type, pattern = await resolve(self.mlflow, target, check=False)
        grant = existing.get((resource_type, pattern))
        if (
            grant is None
            and target.value != WILDCARD
            and target.kind.field in ("experiment", "scorer", "gateway_endpoint")
        ):
            # Named rather than by id: the name's id.
            try:
                resource_type, pattern = await resolve(self.mlflow, target, check=True)
            except ChangeRefused as refused:
                if refused.reason is not Reason.NOT_FOUND:
                    raise
            else:
                grant = existing.get((resource_type, pattern))
        if grant is None:
            through = " (a team's grants are removed from the team)" if target.owner is not None else ""
            raise ChangeRefused(
                Reason.NOT_FOUND,
                f"{target.grantee} has no grant on {target.kind.label} {target.value!r}{through}; see "
                "`hokusai-registry grants list`.",
            )
        try:
            if role is None:
                body = {"username": target.owner, "resource_type": resource_type, "resource_id": pattern}
                await self.mlflow.call("POST", USER_REVOKE, body=body)
            else:
                (row_id,) = [
                    int(row["id"])
                    for row in role.get("permissions") or []
                    if (row["resource_type"], row["resource_pattern"]) == (resource_type, pattern)
                ]
                await self.mlflow.call("DELETE", ROLE_PERMISSION_REMOVE, {"role_permission_id": row_id})
        except MlflowError as error:
            raise error.refusal() from None
        audit(
            "grant.removed",
            actor=actor,
            owner=target.owner,
            team=target.team,
            resource_type=resource_type,
            resource_id=pattern,
            permission=grant.level,
        )
        return grant


def _rows(
    rows: Iterable[Mapping[str, Any]], *, owner: str | None = None, team: str | None = None
) -> list[Grant]:
    return [
        Grant(
            owner=owner,
            team=team,
            resource_type=str(row["resource_type"]),
            resource_id=str(row["resource_pattern"]),
            level=str(row["permission"]),
        )
        for row in rows
    ]


def _team(role: Mapping[str, Any], users: Iterable[Mapping[str, Any]]) -> Team:
    role_id = int(role["id"])
    members = [
        str(user["username"])
        for user in users
        if any(int(assigned["id"]) == role_id for assigned in user.get("roles") or [])
    ]
    return Team(name=str(role["name"]), members=sorted(members))


def _team_grants(role: Mapping[str, Any]) -> list[Grant]:
    return _rows(role.get("permissions") or [], team=str(role["name"]))


def _sorted(grants: list[Grant]) -> list[Grant]:
    def order(grant: Grant) -> tuple[int, str, str, int, str]:
        number = int(grant.resource_id) if grant.resource_id.isdigit() else -1
        return (
            grant.owner is None,
            grant.owner or grant.team or "",
            grant.resource_type,
            number,
            grant.resource_id,
        )

    return sorted(grants, key=order)
