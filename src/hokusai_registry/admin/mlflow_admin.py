"""MLflow's REST API as its administrator, for teams and grants: JSON in, JSON out, through the gateway's
forwarder (its pool, path translation and `hokusai:admin` assertion).

MLflow's error answers become `MlflowError` (its error code, its message's first line) for the caller
to expect or refuse; everything that means MLflow cannot do this at all (permissions off, MLflow
without its auth app or unreachable, a refused signature) is a `ChangeRefused` at once. Messages never
name MLflow's address: the admin API and the pages show them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from hokusai_registry.admin.permission_models import ChangeRefused
from hokusai_registry.core.refusals import Reason
from hokusai_registry.policy.assertions import ASSERTION_REFUSAL_MARK
from hokusai_registry.transport.upstream import UpstreamError

USERS_LIST = "/api/2.0/mlflow/users/list"
USERS_GET = "/api/2.0/mlflow/users/get"
USERS_CREATE = "/api/2.0/mlflow/users/create"
USER_PERMISSIONS = "/api/3.0/mlflow/users/permissions/list"
USER_GRANT = "/api/3.0/mlflow/users/permissions/grant"
USER_REVOKE = "/api/3.0/mlflow/users/permissions/revoke"
ROLES_LIST = "/api/3.0/mlflow/roles/list"
ROLES_CREATE = "/api/3.0/mlflow/roles/create"
ROLES_DELETE = "/api/3.0/mlflow/roles/delete"
ROLES_ASSIGN = "/api/3.0/mlflow/roles/assign"
ROLES_UNASSIGN = "/api/3.0/mlflow/roles/unassign"
ROLE_PERMISSIONS = "/api/3.0/mlflow/roles/permissions/list"
ROLE_PERMISSION_ADD = "/api/3.0/mlflow/roles/permissions/add"
ROLE_PERMISSION_UPDATE = "/api/3.0/mlflow/roles/permissions/update"
ROLE_PERMISSION_REMOVE = "/api/3.0/mlflow/roles/permissions/remove"
EXPERIMENT_GET = "/api/2.0/mlflow/experiments/get"
EXPERIMENT_BY_NAME = "/api/2.0/mlflow/experiments/get-by-name"
MODEL_GET = "/api/2.0/mlflow/registered-models/get"
SCORER_GET = "/api/3.0/mlflow/scorers/get"
ENDPOINT_GET = "/api/3.0/mlflow/gateway/endpoints/get"


class AdminChannel(Protocol):
    """How requests reach MLflow as its administrator: the gateway's `Forwarder`."""

    @property
    def signs(self) -> bool: ...

    async def administer(
        self, method: str, path: str, query: bytes, body: bytes | None
    ) -> tuple[int, bytes]: ...


class MlflowError(Exception):
    """MLflow's error answer: its error code and its message's first line."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def refusal(self) -> ChangeRefused:
        """The answer when the caller expected none of this: MLflow's own words."""
        reason = {
            "RESOURCE_DOES_NOT_EXIST": Reason.NOT_FOUND,
            "RESOURCE_ALREADY_EXISTS": Reason.ALREADY_EXISTS,
        }.get(self.code, Reason.MLFLOW_REFUSED)
        return ChangeRefused(reason, f"MLflow refused it: {self.code}: {self.message}")


def first_line(text: str) -> str:
    """MLflow's message without what follows it: database errors append the SQL, its parameters (a
    password hash, for users/create) and a link."""
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    return first.split(" Error: (", 1)[0][:300]


class MlflowAdmin:
    def __init__(self, channel: AdminChannel) -> None:
        self.channel = channel

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request; the answer's JSON object, or MlflowError with MLflow's error code."""
        if not self.channel.signs:
            raise ChangeRefused(
                Reason.PERMISSIONS_OFF,
                "permissions are off (HOKUSAI_PERMISSIONS=off): MLflow runs without its auth app, so there "
                "are no teams or grants. Turn them on for MLflow and every gateway to use them.",
            )
        encoded = urlencode(query or {}, quote_via=quote).encode("ascii")
        payload = json.dumps(body).encode() if body is not None else None
        try:
            status, answer = await self.channel.administer(method, path, encoded, payload)
        except UpstreamError as exc:
            raise ChangeRefused(
                Reason.UPSTREAM_REFUSED, f"MLflow did not answer ({type(exc).__name__}); nothing was changed."
            ) from None
        if status == 401 and ASSERTION_REFUSAL_MARK in answer:
            raise ChangeRefused(
                Reason.ASSERTION_REFUSED,
                "MLflow refused the gateway's signature: HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE must hold "
                "MLflow's secret here too, and the clocks must agree within seconds.",
            )
        try:
            parsed = json.loads(answer) if answer.strip() else {}
        except ValueError:
            parsed = None
        if status == 200 and isinstance(parsed, dict):
            return parsed
        if isinstance(parsed, dict) and "error_code" in parsed:
            raise MlflowError(status, str(parsed["error_code"]), first_line(str(parsed.get("message", ""))))
        if status == 404:  # Flask's page for a route it does not have
            raise ChangeRefused(
                Reason.PERMISSIONS_OFF,
                "MLflow runs without its auth app (it has no users and roles API): start it with "
                "`hokusai-registry mlflow` (or `serve`) with HOKUSAI_PERMISSIONS on.",
            )
        if status == 403:  # MLflow's bare refusal: it does not take hokusai:admin for its administrator
            raise ChangeRefused(
                Reason.MLFLOW_REFUSED,
                "MLflow does not take hokusai:admin for its administrator (admin_username of its auth "
                "configuration): start it with `hokusai-registry mlflow` (or `serve`).",
            )
        raise ChangeRefused(
            Reason.MLFLOW_REFUSED, f"MLflow answered {method} {path} with {status} and no MLflow error."
        )

    async def ensure_user(self, owner: str) -> None:
        """The owner's MLflow user, created as the gateway creates it on the owner's first request: with
        a random password nobody ever presents (the gateway authenticates)."""
        try:
            await self.call("GET", USERS_GET, {"username": owner})
            return
        except MlflowError as error:
            if error.code != "RESOURCE_DOES_NOT_EXIST":
                raise error.refusal() from None
        try:
            await self.call(
                "POST", USERS_CREATE, body={"username": owner, "password": secrets.token_urlsafe(32)}
            )
        except MlflowError as error:
            if error.code != "RESOURCE_ALREADY_EXISTS":  # made meanwhile (its first request)
                raise error.refusal() from None
