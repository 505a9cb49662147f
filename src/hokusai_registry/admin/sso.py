"""What a single sign-on makes of a person the identity provider vouched for: their user (created at first
sign-in), their scopes (admin for members of `HOKUSAI_OIDC_ADMIN_GROUPS`), their teams (the provider's
groups that name a team), and the key behind their browser session.

A session stands for a key (`auth/sessions.py`), so a sign-in mints one: purpose `sign-in`, owned by the
user, their scopes, expiring with the provider's tokens (or the session's maximum age, if sooner). It is
never shown to anyone; it dies at logout, at its expiry, and with every other key of the user when the
user is disabled. Teams follow the groups: on each sign-in the user joins every team named by one of
their groups, and leaves the teams that a group gave them at an earlier sign-in and no longer does (a
membership an admin added by hand stays).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hokusai_registry.admin.mlflow_admin import MlflowError
from hokusai_registry.admin.permission_models import ChangeRefused, MemberSpec
from hokusai_registry.admin.permissions import PermissionAdmin
from hokusai_registry.auth.oidc import SignedIn, SignInFailed
from hokusai_registry.ops.audit import audit
from hokusai_registry.policy import keys as key_format
from hokusai_registry.policy.scopes import expand
from hokusai_registry.policy.tokens import TokenClaimsRefused, owner_of
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.user_store import UserNotAllowed, UserRecord, UserStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SsoRules:
    username_claim: str
    groups_claim: str
    admin_groups: tuple[str, ...]
    user_scope: str
    create_users: bool
    environment: key_format.Environment


@dataclass(frozen=True, slots=True)
class SessionKey:
    user: UserRecord
    key: str
    key_id: str
    expires_at: dt.datetime


def groups_of(claims: dict[str, Any], claim: str) -> tuple[str, ...]:
    """The groups a provider's claim lists (a list of names, or one name), in order, without repeats."""
    value = claims.get(claim)
    listed = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    return tuple(dict.fromkeys(str(group).strip() for group in listed if str(group).strip()))


def team_changes(
    teams: dict[str, list[str]], owner: str, groups: Iterable[str], before: Iterable[str]
) -> tuple[list[str], list[str]]:
    """The teams `owner` joins and leaves, given every team's members, the groups now and the groups
    synced at the previous sign-in (pure)."""
    now, earlier = set(groups), set(before)
    joins = [team for team, members in teams.items() if team in now and owner not in members]
    leaves = [team for team, members in teams.items() if team in earlier - now and owner in members]
    return joins, leaves


class SingleSignOn:
    def __init__(
        self, users: UserStore, keys: KeyStore, permissions: PermissionAdmin, rules: SsoRules
    ) -> None:
        self.users = users
        self.keys = keys
        self.permissions = permissions
        self.rules = rules

    async def sign_in(self, signed: SignedIn, session_ends: dt.datetime) -> SessionKey:
        """The user and their new session key; SignInFailed when they may not sign in."""
        rules = self.rules
        try:
            owner, person = owner_of(signed.claims, rules.username_claim)
        except TokenClaimsRefused as refused:
            raise SignInFailed(str(refused)) from None
        if not person:
            raise SignInFailed(
                f"the identity provider names no user: its ID token and userinfo carry neither "
                f"{rules.username_claim!r} (HOKUSAI_OIDC_USERNAME_CLAIM) nor 'email'"
            )
        groups = groups_of(signed.claims, rules.groups_claim)
        admin = any(group in rules.admin_groups for group in groups)
        scopes = expand("admin" if admin else rules.user_scope)
        email = signed.claims.get("email")
        before = await asyncio.to_thread(self.users.find, signed.issuer, signed.subject)
        try:
            user = await asyncio.to_thread(
                self.users.seen,
                issuer=signed.issuer,
                subject=signed.subject,
                name=owner,
                email=email if isinstance(email, str) else None,
                kind="person",
                scopes=scopes,
                groups=groups,
                create=rules.create_users,
            )
        except UserNotAllowed as refused:
            raise SignInFailed(str(refused)) from None
        await self._sync_teams(user, before.groups if before else ())
        record, key = await asyncio.to_thread(
            self.keys.create_sign_in_key,
            f"sign-in {secrets.token_hex(6)}",
            environment=rules.environment,
            scopes=user.scopes,
            expires_at=session_ends,
            owner=user.name,
            sso_user_id=user.id,
        )
        audit(
            "sso.signed_in",
            user=user.name,
            issuer=signed.issuer,
            key_id=record.key_id,
            scopes=" ".join(user.scopes),
            groups=list(groups),
            created=before is None,
        )
        return SessionKey(user, key, record.key_id, session_ends)

    async def _sync_teams(self, user: UserRecord, before: tuple[str, ...]) -> None:
        """Team membership after the groups; a team that cannot be changed now is logged, and the
        sign-in goes on (the next one tries again)."""
        if not before and not user.groups:
            return
        try:
            teams = {team.name: team.members for team in await self.permissions.teams()}
        except (MlflowError, ChangeRefused) as error:
            log.warning("teams could not be read at sign-in of %s: %s", user.name, error)
            return
        joins, leaves = team_changes(teams, user.name, user.groups, before)
        actor = f"sso:{user.name}"
        for team in joins:
            try:
                await self.permissions.add_member(team, MemberSpec(owner=user.name), actor)
            except (MlflowError, ChangeRefused) as error:
                log.warning("%s could not join team %s at sign-in: %s", user.name, team, error)
        for team in leaves:
            try:
                await self.permissions.remove_member(team, MemberSpec(owner=user.name), actor)
            except (MlflowError, ChangeRefused) as error:
                log.warning("%s could not leave team %s at sign-in: %s", user.name, team, error)

    async def signed_out(self, key_id: str) -> None:
        """The session's key dies with the session."""
        await asyncio.to_thread(self.keys.end_sign_in_key, key_id)
