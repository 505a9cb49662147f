"""MLflow's REST API as its administrator, for commands (never on the gateway's request path).

Each request carries the assertion the forwarder would add for `hokusai:admin` (`policy/assertions.py`),
so it works against an MLflow that accepts only signed requests, and MLflow itself decides everything.
JSON in, JSON out; a refusal becomes `MlflowError` with MLflow's error code.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests

from hokusai_registry.core.net import redact_url
from hokusai_registry.policy.assertions import (
    ADMIN_USER,
    ASSERTION_HEADER,
    ASSERTION_REFUSAL_MARK,
    body_digest,
    sign,
)
from hokusai_registry.policy.paths import upstream_path
from hokusai_registry.transport.nonces import new_nonce


class MlflowError(Exception):
    """MLflow refused a request, or could not be asked; `error_code` is MLflow's (or UNREACHABLE)."""

    def __init__(self, status: int | None, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


class SignedMlflow:
    def __init__(self, url: str, secret: bytes, *, api_prefix: str = "api", timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        self._origin = f"{parts.scheme}://{parts.netloc}"  # credentials in it are sent as Basic
        self._base_path = parts.path.rstrip("/")
        self._api_prefix = api_prefix
        self._secret = secret
        self._timeout = timeout
        self.display = redact_url(url)
        self._session = requests.Session()
        self._session.trust_env = False  # MLflow's private address, never through a shell's proxy

    def close(self) -> None:
        self._session.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request as MLflow's administrator; the answer's JSON object."""
        target = self._base_path + upstream_path(path, self._api_prefix)
        encoded = urlencode(query or {})
        # Serialized here: the assertion binds the bytes sent.
        data = json.dumps(body).encode() if body is not None else b""
        assertion = sign(
            self._secret,
            ADMIN_USER,
            method,
            target,
            encoded,
            now=time.time(),
            nonce=new_nonce(),
            body=body_digest(data),
        )
        headers = {ASSERTION_HEADER.decode(): assertion.decode()}
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = self._origin + target + ("?" + encoded if encoded else "")
        try:
            response = self._session.request(
                method,
                url,
                data=data or None,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise MlflowError(
                None, "UNREACHABLE", f"MLflow at {self.display} does not answer ({type(exc).__name__})"
            ) from None
        if response.status_code == 401 and ASSERTION_REFUSAL_MARK in response.content:
            raise MlflowError(
                401,
                "UNAUTHENTICATED",
                f"MLflow at {self.display} refused the signature: HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE (or "
                "HOKUSAI_MLFLOW_ASSERTION_SECRET) here must hold MLflow's secret, and the clocks agree",
            )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict):
            code = answer.get("error_code") if isinstance(answer, dict) else None
            message = answer.get("message") if isinstance(answer, dict) else response.text
            # MLflow's messages can quote SQL and its parameters: the first line, cut short, is enough.
            first = str(message or "").strip().splitlines()[0][:200] if message else ""
            raise MlflowError(
                response.status_code,
                str(code or f"HTTP_{response.status_code}"),
                f"{method} {path} answered {response.status_code}" + (f": {first}" if first else ""),
            )
        return answer

    def pages(
        self,
        method: str,
        path: str,
        field: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every item of a paged MLflow search (`next_page_token`), from the answer's `field`."""
        token: str | None = None
        while True:
            page_query = dict(query or {})
            page_body = dict(body) if body is not None else None
            if token:
                if page_body is not None:
                    page_body["page_token"] = token
                else:
                    page_query["page_token"] = token
            answer = self.call(method, path, query=page_query, body=page_body)
            yield from answer.get(field) or []
            token = answer.get("next_page_token")
            if not token:
                return
