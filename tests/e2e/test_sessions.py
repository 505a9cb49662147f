"""Browser sessions on a live gateway where time or the process log matters: idle and maximum-age
endings, a key that expires under its session, and the audit lines and secrets in the gateway's log.
Signing in and out, cookie writes, revocation and the /admin/keys pages are in
tests/inprocess/test_sessions.py."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from hokusai_registry.auth.sessions import csrf_token
from hokusai_registry.store.key_store import DEFAULT_SCOPES
from tests.helpers import GatewayProcess, key_store
from tests.support.cookies import COOKIE, session_cookie_in
from tests.support.polling import eventually

EVIL = "http://evil.example"
SEARCH = "/mlflow/ajax-api/2.0/mlflow/experiments/search"
CREATE = "/mlflow/ajax-api/2.0/mlflow/experiments/create"
API_SEARCH = "/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
GET_BY_NAME = "/mlflow/api/2.0/mlflow/experiments/get-by-name"

# Every key and cookie value this module handles: none may ever appear in the gateway's log.
SECRETS: list[str] = []


# Helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(
    gateway: GatewayProcess,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    origin: str | None = None,
    referer: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> requests.Response:
    """One request as a browser (or client) sends it, cookies and Origin set by hand, redirects not
    followed."""
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    if origin is not None:
        sent["Origin"] = origin
    if referer is not None:
        sent["Referer"] = referer
    return requests.request(
        method, gateway.url + path, headers=sent, allow_redirects=False, timeout=30, **kwargs
    )


def set_cookies(response: requests.Response) -> list[str]:
    return list(response.raw.headers.getlist("Set-Cookie"))


def session_cookie(response: requests.Response) -> tuple[str, dict[str, str]] | None:
    """The session cookie the response sets: its value and attributes (names lower-cased)."""
    return session_cookie_in(set_cookies(response))


def assert_clears_cookie(response: requests.Response) -> None:
    cleared = session_cookie(response)
    assert cleared is not None, set_cookies(response)
    value, attributes = cleared
    assert value == "" and attributes["max-age"] == "0", set_cookies(response)


def login(
    gateway: GatewayProcess, key: str, next_path: str | None = "/mlflow/", **kwargs: Any
) -> requests.Response:
    form = {"key": key}
    if next_path is not None:
        form["next"] = next_path
    kwargs.setdefault("origin", gateway.url)
    return call(gateway, "POST", "/login", data=form, **kwargs)


def sign_in(gateway: GatewayProcess, key: str) -> str:
    """A live session for `key`: the cookie's value."""
    SECRETS.append(key)
    response = login(gateway, key)
    assert response.status_code == 303, response.text
    found = session_cookie(response)
    assert found is not None, set_cookies(response)
    SECRETS.append(found[0])
    return found[0]


def search(gateway: GatewayProcess, cookie: str) -> requests.Response:
    return call(gateway, "POST", SEARCH, cookie=cookie, origin=gateway.url, json={"max_results": 1})


def assert_mlflow_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error_code"] == code


def assert_sent_to_login(response: requests.Response, next_path: str = "/mlflow/") -> dict[str, list[str]]:
    """A 303 to the login page with `next`; returns the location's query."""
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == "/login" and not location.netloc
    query = parse_qs(location.query)
    assert query["next"] == [next_path]
    return query


def new_key(
    gateway: GatewayProcess, name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES, **kwargs: Any
) -> tuple[str, str]:
    store = key_store(gateway.data_dir)
    try:
        record, key = store.create(name, environment="live", scopes=scopes, **kwargs)
    finally:
        store.close()
    SECRETS.append(key)
    return record.key_id, key


def flushed_log(gateway: GatewayProcess) -> str:
    """The gateway's log once everything before this call has been written (a marked request's access
    line is there)."""
    marker = uuid.uuid4().hex
    requests.get(gateway.url + "/health", headers={"X-Request-ID": marker}, timeout=10)
    return eventually(lambda: text if marker in (text := gateway.log()) else None, 10, 0.1, marker)


def audit_events(log: str, event: str) -> list[dict[str, Any]]:
    found = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("audit") == event:
            found.append(entry)
    return found


def own_gateway(mlflow_server: str, data_dir: Path, **env: str) -> GatewayProcess:
    return GatewayProcess(mlflow_server, data_dir, env={"HOKUSAI_AUTH_FAILURE_LIMIT": "0", **env})


def until_refused(gateway: GatewayProcess, cookie: str, deadline_seconds: float = 15) -> requests.Response:
    """Uses the session every half second until it is refused; the refusal."""
    return eventually(
        lambda: response if (response := search(gateway, cookie)).status_code != 200 else None,
        deadline_seconds,
        0.5,
        "the session to be refused",
    )


def test_an_idle_session_ends(mlflow_server: str, tmp_path: Path) -> None:
    idle = own_gateway(mlflow_server, tmp_path / "idle", HOKUSAI_SESSION_IDLE_TIMEOUT="2")
    try:
        cookie = sign_in(idle, idle.create_key("idle"))
        # In use, it outlives the idle timeout.
        until = time.monotonic() + 3
        while time.monotonic() < until:
            assert search(idle, cookie).status_code == 200
            time.sleep(0.5)
        time.sleep(3)
        query = assert_sent_to_login(call(idle, "GET", "/mlflow/", cookie=cookie))
        assert query["reason"] == ["session_ended"]
        assert_mlflow_error(search(idle, cookie), 401, "UNAUTHENTICATED")
    finally:
        idle.stop()
    assert cookie not in idle.log()


def test_a_session_ends_at_its_max_age_however_active(mlflow_server: str, tmp_path: Path) -> None:
    bounded = own_gateway(mlflow_server, tmp_path / "max-age", HOKUSAI_SESSION_MAX_AGE="3")
    try:
        key = bounded.create_key("max-age")
        SECRETS.append(key)
        response = login(bounded, key)
        found = session_cookie(response)
        assert response.status_code == 303 and found is not None
        cookie, attributes = found
        assert 0 <= int(attributes["max-age"]) <= 3
        assert search(bounded, cookie).status_code == 200
        refused = until_refused(bounded, cookie)
        assert_mlflow_error(refused, 401, "UNAUTHENTICATED")
        assert_clears_cookie(refused)
        # The key itself is fine: signing in again works.
        assert search(bounded, sign_in(bounded, key)).status_code == 200
    finally:
        bounded.stop()
    log = bounded.log()
    assert cookie not in log and key not in log


def test_a_session_ends_when_its_key_expires(gateway: GatewayProcess) -> None:
    expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    _, key = new_key(gateway, unique("sessions-expiring"), expires_at=expires_at)
    response = login(gateway, key)
    assert response.status_code == 303, response.text
    found = session_cookie(response)
    assert found is not None
    cookie, attributes = found
    SECRETS.append(cookie)
    assert 0 <= int(attributes["max-age"]) <= 5
    assert search(gateway, cookie).status_code == 200
    refused = until_refused(gateway, cookie)
    assert_mlflow_error(refused, 401, "UNAUTHENTICATED")
    assert dt.datetime.now(dt.UTC) >= expires_at
    assert_sent_to_login(call(gateway, "GET", "/mlflow/", cookie=cookie))


def test_sessions_are_audited_without_secrets(gateway: GatewayProcess) -> None:
    key_id, key = new_key(gateway, unique("sessions-audited"))
    cookie = sign_in(gateway, key)
    assert search(gateway, cookie).status_code == 200
    csrf = csrf_token(cookie)
    assert (
        call(gateway, "POST", "/logout", cookie=cookie, origin=gateway.url, data={"csrf": csrf}).status_code
        == 303
    )

    log = flushed_log(gateway)
    started = [entry for entry in audit_events(log, "session.started") if entry.get("key_id") == key_id]
    ended = [entry for entry in audit_events(log, "session.ended") if entry.get("key_id") == key_id]
    assert len(started) == 1 and len(ended) == 1, log[-4000:]
    assert started[0]["client"] == "127.0.0.1"
    assert key not in log and cookie not in log and csrf not in log


def test_no_key_or_cookie_of_this_module_reaches_the_log(gateway: GatewayProcess) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-last")))
    assert search(gateway, cookie).status_code == 200
    log = flushed_log(gateway)
    assert SECRETS
    leaked = [secret for secret in SECRETS if secret and secret in log]
    assert not leaked, f"{len(leaked)} secrets in the gateway log"
    # Not even the secret part of a key on its own.
    assert not [secret for secret in SECRETS if secret.startswith("hk_") and secret.split("_")[3] in log]
