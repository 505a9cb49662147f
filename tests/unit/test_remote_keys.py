"""Remote key checks (`RemoteKeys` behind the `Authenticator`) against a real loopback HTTP server that
plays the auth service, in the test's own event loop.

What is proved: concurrent checks of one key make one validate request and later checks none; the cache
is keyed by an HMAC, never the key; an unavailable service (5xx, closed port, silence) is a 503 with
Retry-After that is never cached and never an invalid key; a 401 is remembered briefly; a 403 is a
PERMISSION_DENIED.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web

from hokusai_registry.auth.authenticator import NEGATIVE_TTL, RETRY_AFTER_SECONDS, Authenticator
from hokusai_registry.auth.remote_keys import RemoteKeys
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy import keys
from hokusai_registry.policy.routes import VALIDATE_PATH
from tests.helpers import free_port

SERVICE_ID = "unit-svc"
CLIENT_IP = "203.0.113.9"
PREFIX = "Hokusai Registry gateway: "


class AuthService:
    """The auth service on loopback: records every validate request and answers `status` + `body`
    (a function of the presented key), or never answers while `hang` is set."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.body: Callable[[str], dict[str, Any]] = valid_answer
        self.hang = False
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _validate(self, request: web.Request) -> web.Response:
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.requests.append(
            {"method": request.method, "path": request.path, "key": presented, "json": await request.json()}
        )
        if self.hang:
            await self._released.wait()
        return web.json_response(self.body(presented), status=self.status)

    async def start(self, port: int = 0) -> AuthService:
        app = web.Application()
        app.router.add_route("*", VALIDATE_PATH, self._validate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        self._released.set()  # let hanging handlers finish so shutdown does not wait for them
        if self._runner is not None:
            await self._runner.cleanup()


def valid_answer(presented: str) -> dict[str, Any]:
    """A 200 body for any key, as `keys_api.validate` writes it."""
    return {
        "valid": True,
        "key_id": keys.parse(presented).key_id,
        "name": "ci",
        "user_id": "alice",
        "scopes": ["read", "write"],
        "service_id": SERVICE_ID,
        "rate_limit_per_minute": 120,
        "rate_limit_per_hour": None,
        "expires_at": None,
    }


@contextlib.asynccontextmanager
async def auth_service(port: int = 0) -> AsyncIterator[AuthService]:
    service = await AuthService().start(port)
    try:
        yield service
    finally:
        await service.stop()


@contextlib.asynccontextmanager
async def remote_auth(
    url: str, *, timeout: float = 5.0, cache_ttl: float = 600.0
) -> AsyncIterator[Authenticator]:
    authenticator = Authenticator(
        RemoteKeys(url, service_id=SERVICE_ID, timeout=timeout), cache_ttl=cache_ttl
    )
    await authenticator.start()
    try:
        yield authenticator
    finally:
        await authenticator.stop()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def new_key() -> str:
    return keys.generate("live").text


async def refusal(auth: Authenticator, key: str) -> Refusal:
    with pytest.raises(Refusal) as raised:
        await auth.authenticate(key, CLIENT_IP)
    return raised.value


def assert_unavailable(error: Refusal) -> None:
    assert (error.code, error.http_status) == ("TEMPORARILY_UNAVAILABLE", 503)
    assert (b"retry-after", str(RETRY_AFTER_SECONDS).encode()) in error.headers
    assert error.reason.value == "auth_service_unavailable"


def cache_deadline(auth: Authenticator) -> float:
    """Seconds until the only cached entry expires."""
    [(deadline, _)] = auth._cache.values()
    return deadline - time.monotonic()


def test_concurrent_checks_share_one_request_and_later_checks_make_none() -> None:
    key = new_key()

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url) as auth:
            identities = await asyncio.gather(*(auth.authenticate(key, CLIENT_IP) for _ in range(50)))
            assert len(service.requests) == 1
            for _ in range(20):
                identities.append(await auth.authenticate(key, CLIENT_IP))
            assert len(service.requests) == 1
        assert service.requests[0] == {
            "method": "POST",
            "path": VALIDATE_PATH,
            "key": key,
            "json": {"service_id": SERVICE_ID, "client_ip": CLIENT_IP},
        }
        assert len(set(identities)) == 1
        identity = identities[0]
        assert identity.key_id == keys.parse(key).key_id
        assert (identity.name, identity.user_id, identity.scopes) == ("ci", "alice", ("read", "write"))
        assert (identity.rate_limit_per_minute, identity.rate_limit_per_hour) == (120, None)

    run(scenario)


def test_cache_is_keyed_by_an_hmac_never_the_key() -> None:
    key = new_key()

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url) as auth:
            await auth.authenticate(key, CLIENT_IP)
            [cache_key] = auth._cache
            assert isinstance(cache_key, bytes) and len(cache_key) == 32
            assert key.encode() not in cache_key and key not in repr(auth._cache)
            # Not the plain SHA-256 the key store keeps either: the HMAC's secret is per process.
            assert cache_key != hashlib.sha256(key.encode()).digest()
            assert not auth._inflight

    run(scenario)


def test_a_check_is_not_cached_beyond_the_keys_expiry() -> None:
    key = new_key()
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url, cache_ttl=600) as auth:
            service.body = lambda presented: {**valid_answer(presented), "expires_at": expires.isoformat()}
            identity = await auth.authenticate(key, CLIENT_IP)
            assert identity.expires_at == expires
            assert cache_deadline(auth) <= 30

    run(scenario)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error_code": "INTERNAL_ERROR", "message": "boom"}),
        (502, {}),
        (503, {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down"}),
        (200, {"valid": True}),  # a 200 without an identity is not a valid key either
    ],
)
def test_a_failing_service_is_503_with_retry_after_and_not_cached(status: int, body: dict[str, Any]) -> None:
    key = new_key()

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url) as auth:
            service.status, service.body = status, lambda _: body
            for attempt in (1, 2):
                assert_unavailable(await refusal(auth, key))
                assert len(service.requests) == attempt  # asked again: failures are never cached
            assert f"HTTP {status}" in (await refusal(auth, key)).message
            assert not auth._cache
            service.status, service.body = 200, valid_answer
            assert (await auth.authenticate(key, CLIENT_IP)).key_id == keys.parse(key).key_id

    run(scenario)


def test_a_closed_port_is_503_and_the_next_check_asks_again() -> None:
    key = new_key()
    port = free_port()  # nothing listens here yet

    async def scenario() -> None:
        async with remote_auth(f"http://127.0.0.1:{port}") as auth:
            error = await refusal(auth, key)
            assert_unavailable(error)
            assert "did not answer" in error.message
            assert not auth._cache
            async with auth_service(port) as service:
                assert (await auth.authenticate(key, CLIENT_IP)).key_id == keys.parse(key).key_id
                assert len(service.requests) == 1

    run(scenario)


def test_a_silent_service_is_503_after_the_timeout() -> None:
    key = new_key()

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url, timeout=0.3) as auth:
            service.hang = True
            assert_unavailable(await refusal(auth, key))
            assert not auth._cache

    run(scenario)


@pytest.mark.parametrize(
    ("reason", "kind"),
    [("revoked", "revoked"), ("expired", "expired"), ("bogus", "unknown"), (None, "unknown")],
)
def test_401_is_unauthenticated_and_remembered_briefly(reason: str | None, kind: str) -> None:
    key = new_key()
    answer = {"error_code": "UNAUTHENTICATED", "message": PREFIX + "the API key X was revoked."}
    if reason is not None:
        answer["reason"] = reason

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url, cache_ttl=600) as auth:
            service.status, service.body = 401, lambda _: answer
            for _ in range(10):
                error = await refusal(auth, key)
                assert (error.code, error.http_status, error.reason.value) == ("UNAUTHENTICATED", 401, kind)
                assert error.message == PREFIX + "the API key X was revoked."  # the prefix once, not twice
            assert len(service.requests) == 1
            assert cache_deadline(auth) <= NEGATIVE_TTL  # briefly: not the 600 s of a valid key
            [cache_key] = auth._cache
            auth._cache[cache_key] = (0.0, auth._cache[cache_key][1])  # as if NEGATIVE_TTL had passed
            await refusal(auth, key)
            assert len(service.requests) == 2

    run(scenario)


def test_403_is_permission_denied() -> None:
    key = new_key()
    message = PREFIX + f"key X is not allowed for service {SERVICE_ID!r}"

    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url) as auth:
            service.status, service.body = (
                403,
                lambda _: {"error_code": "PERMISSION_DENIED", "message": message},
            )
            error = await refusal(auth, key)
            assert (error.code, error.http_status, error.reason.value) == (
                "PERMISSION_DENIED",
                403,
                "service",
            )
            assert error.message == message
            service.body = lambda _: {}
            auth.invalidate()
            assert repr(SERVICE_ID) in (await refusal(auth, key)).message  # no message: it names the service

    run(scenario)


def test_malformed_keys_never_reach_the_service() -> None:
    async def scenario() -> None:
        async with auth_service() as service, remote_auth(service.url) as auth:
            error = await refusal(auth, new_key()[:-1] + "!")
            assert (error.code, error.reason.value) == ("UNAUTHENTICATED", "malformed")
            assert not service.requests

    run(scenario)
