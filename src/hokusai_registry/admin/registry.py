"""MLflow's model registry as the gateway itself asks it: what a model or version holds, what a user may
read, and the changes a promotion makes. JSON in, JSON out, through the forwarder's own requests (as
MLflow's administrator unless a user is named), with or without permissions on."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from hokusai_registry.admin.mlflow_admin import MlflowError, first_line
from hokusai_registry.policy.assertions import ADMIN_USER
from hokusai_registry.transport.upstream import UpstreamError

MODEL_GET = "/api/2.0/mlflow/registered-models/get"
VERSION_GET = "/api/2.0/mlflow/model-versions/get"
RUN_GET = "/api/2.0/mlflow/runs/get"
SET_ALIAS = "/api/2.0/mlflow/registered-models/alias"
TRANSITION_STAGE = "/api/2.0/mlflow/model-versions/transition-stage"
SET_VERSION_TAG = "/api/2.0/mlflow/model-versions/set-tag"


class RegistryChannel(Protocol):
    """The gateway's `Forwarder`, as far as these calls use it."""

    async def administer(
        self,
        method: str,
        path: str,
        query: bytes,
        body: bytes | None,
        limit: int = ...,
        *,
        user: str = ...,
    ) -> tuple[int, bytes]: ...


class Unreachable(Exception):
    """MLflow did not answer, or not in JSON."""


class Registry:
    def __init__(self, channel: RegistryChannel) -> None:
        self.channel = channel

    async def call(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        *,
        user: str = ADMIN_USER,
    ) -> dict[str, Any]:
        """MLflow's JSON answer; MlflowError for its error answers, Unreachable for anything else."""
        encoded = urlencode(query or {}, quote_via=quote).encode("ascii")
        payload = json.dumps(body).encode() if body is not None else None
        try:
            status, answer = await self.channel.administer(method, path, encoded, payload, 8 << 20, user=user)
        except UpstreamError as exc:
            raise Unreachable(f"MLflow did not answer ({type(exc).__name__})") from None
        try:
            parsed = json.loads(answer) if answer.strip() else {}
        except ValueError:
            parsed = None
        if status == 200 and isinstance(parsed, dict):
            return parsed
        if isinstance(parsed, dict) and "error_code" in parsed:
            raise MlflowError(status, str(parsed["error_code"]), first_line(str(parsed.get("message", ""))))
        if status in (401, 403):
            raise MlflowError(status, "PERMISSION_DENIED", "permission denied")
        raise Unreachable(f"MLflow answered {method} {path} with {status} and no MLflow error")

    async def model(self, name: str, *, user: str = ADMIN_USER) -> dict[str, Any]:
        return await self.call("GET", MODEL_GET, {"name": name}, user=user)

    async def version(self, name: str, version: str) -> dict[str, Any]:
        return await self.call("GET", VERSION_GET, {"name": name, "version": version})

    async def run(self, run_id: str) -> dict[str, Any]:
        return await self.call("GET", RUN_GET, {"run_id": run_id})

    async def may_read_model(self, name: str, user: str) -> bool:
        """Whether MLflow lets `user` read the model (its permissions decide)."""
        try:
            await self.model(name, user=user)
        except MlflowError as error:
            if error.code in ("PERMISSION_DENIED", "RESOURCE_DOES_NOT_EXIST"):
                return False
            raise
        return True
