"""Keys checked by a remote auth service (`AUTH_SERVICE_URL`), e.g. another Hokusai gateway.

The contract is `POST <url>/api/v1/keys/validate` with `Authorization: Bearer <key>` and
`{"service_id", "client_ip"}` (see `admin/api.py` for the server side). 200 is an identity, 401 a
refused key, 403 a key not allowed for this service id; anything else, or no answer in time, means
the service is unavailable, which the gateway reports as 503 with Retry-After and never as an invalid
key; the 503 does not name the service (whoever gets it has no valid key yet), the log line does.
Keys validated within the cache TTL keep working while the service is down. The service uses
`client_ip` only when this gateway's address is one of its trusted proxies (HOKUSAI_FORWARDED_ALLOW_IPS).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from hokusai_registry.auth.authenticator import Identity, unavailable
from hokusai_registry.core.net import redact_url
from hokusai_registry.core.refusals import PRODUCT, Reason, Refusal
from hokusai_registry.policy import keys
from hokusai_registry.policy.routes import VALIDATE_PATH
from hokusai_registry.transport.request import UpstreamRequest
from hokusai_registry.transport.upstream import UpstreamError, UpstreamPool

log = logging.getLogger(__name__)

# Reasons a validating service may give for a 401; anything else is reported as "unknown".
UNAVAILABLE = Reason.AUTH_SERVICE_UNAVAILABLE
# The remote's `reason`s this gateway passes on (metrics, audit, login notices); others count as unknown.
KNOWN_REASONS = {
    reason.value: reason
    for reason in (Reason.UNKNOWN_KEY, Reason.REVOKED_KEY, Reason.EXPIRED_KEY, Reason.MALFORMED_KEY)
}


class RemoteKeys:
    def __init__(self, url: str, *, service_id: str, timeout: float, pool_size: int = 32) -> None:
        self.display = redact_url(url)
        self._path = (urlsplit(url).path.rstrip("/") + VALIDATE_PATH).encode("latin-1")
        self._service_id = service_id
        self._timeout = timeout
        self._pool = UpstreamPool.for_url(url, limit=pool_size, connect_timeout=timeout, pool_timeout=timeout)

    async def start(self, invalidate: Callable[[], None]) -> None:
        """Nothing to watch: remote revocations take effect when cached checks expire (the TTL)."""

    async def stop(self) -> None:
        self._pool.close()

    def record_use(self, key_id: str) -> None:
        """The auth service records use when it validates."""

    async def check(self) -> None:
        status, _ = await self._pool.exchange(
            UpstreamRequest("GET", b"/health", idempotent=True, read_timeout=self._timeout)
        )
        if status != 200:
            raise RuntimeError(f"the auth service at {self.display} answered /health with {status}")

    async def lookup(self, parsed: keys.ParsedKey, client_ip: str) -> Identity | Refusal:
        body = json.dumps({"service_id": self._service_id, "client_ip": client_ip}).encode()
        try:
            status, answer = await asyncio.wait_for(
                self._pool.exchange(
                    UpstreamRequest(
                        "POST",
                        self._path,
                        (
                            (b"authorization", b"Bearer " + parsed.text.encode("latin-1")),
                            (b"content-type", b"application/json"),
                        ),
                        body,
                        # A key check changes nothing: safe to send again on a fresh connection.
                        idempotent=True,
                        read_timeout=self._timeout,
                    )
                ),
                self._timeout * 2,
            )
        except (UpstreamError, TimeoutError) as exc:
            log.warning("auth service %s did not answer: %s", self.display, exc or type(exc).__name__)
            return unavailable("the auth service did not answer", UNAVAILABLE)
        return self._verdict(status, answer)

    def _verdict(self, status: int, answer: bytes) -> Identity | Refusal:
        try:
            data: dict[str, Any] = json.loads(answer)
        except ValueError:
            data = {}
        message = str(data.get("message", ""))[:500]
        if status == 200 and data.get("valid") is True:
            try:
                return _identity(data)
            except (KeyError, TypeError, ValueError):
                pass
        elif status == 401:
            return Refusal(
                KNOWN_REASONS.get(str(data.get("reason")), Reason.UNKNOWN_KEY),
                _strip_origin(message) or "the auth service did not recognise the API key.",
            )
        elif status == 403:
            return Refusal(
                Reason.SERVICE,
                _strip_origin(message) or f"the key is not allowed for service {self._service_id!r}.",
            )
        log.warning("auth service %s answered %d to a key check", self.display, status)
        if status == 404:
            return unavailable(
                f"the auth service has no {VALIDATE_PATH} (HTTP 404): check that AUTH_SERVICE_URL is a "
                "Hokusai Registry gateway",
                UNAVAILABLE,
            )
        return unavailable(f"the auth service failed (HTTP {status})", UNAVAILABLE)


def _strip_origin(message: str) -> str:
    # The remote says "Hokusai Registry gateway: ..." too; the refusal adds it again.
    return message.removeprefix(PRODUCT + ": ")


def _identity(data: dict[str, Any]) -> Identity:
    expires = data.get("expires_at")
    return Identity(
        key_id=str(data["key_id"]),
        name=str(data.get("name") or data["key_id"]),
        scopes=tuple(str(scope) for scope in data["scopes"]),
        expires_at=dt.datetime.fromisoformat(expires) if expires else None,
        user_id=str(data.get("user_id") or data["key_id"]),
        rate_limit_per_minute=_optional_int(data.get("rate_limit_per_minute")),
        rate_limit_per_hour=_optional_int(data.get("rate_limit_per_hour")),
    )


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
