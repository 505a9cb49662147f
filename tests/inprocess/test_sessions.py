"""Browser sessions in process: /login, the session cookie in front of the UI and ajax API, the
same-origin rule for cookie writes, /logout, revocation, and the /admin/keys pages, against the real
gateway and a stub MLflow that records what reached it (a refused write is one that never arrived).
Idle, maximum-age and key-expiry endings, and the audit lines in a gateway's log, stay in
tests/e2e/test_sessions.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import httpx
import pytest

from hokusai_registry.auth.sessions import csrf_token
from hokusai_registry.ops.audit import AUDIT_LOGGER, AuditFormatter
from hokusai_registry.ops.logs import TextFormatter
from hokusai_registry.policy import keys
from hokusai_registry.policy.scopes import expand
from hokusai_registry.store.key_store import DEFAULT_SCOPES
from tests.helpers import clear_of_minute_edge, key_store
from tests.support.cookies import COOKIE, session_cookie_in
from tests.support.inprocess import InProcessGateway
from tests.support.logs import Lines, captured
from tests.support.loop import LoopThread
from tests.support.polling import eventually
from tests.support.stub import StubUpstream

EVIL = "http://evil.example"
SEARCH = "/mlflow/ajax-api/2.0/mlflow/experiments/search"
CREATE = "/mlflow/ajax-api/2.0/mlflow/experiments/create"
API_SEARCH = "/mlflow/api/2.0/mlflow/experiments/search?max_results=1"
JSON = "application/json"
# What the UI page and the calls these tests make get from MLflow.
ANSWERS = {
    "/": (200, "text/html", b"<!doctype html><html><body>MLflow</body></html>"),
    "/ajax-api/2.0/mlflow/experiments/search": (200, JSON, b'{"experiments": []}'),
    "/api/2.0/mlflow/experiments/search": (200, JSON, b'{"experiments": []}'),
    "/ajax-api/2.0/mlflow/experiments/create": (200, JSON, b'{"experiment_id": "1"}'),
}

# Every key and cookie value this module handles: none may ever appear in the gateway's log.
SECRETS: list[str] = []


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[StubUpstream]:
    stub = StubUpstream(ANSWERS)
    loop.run(stub.start())
    yield stub
    loop.run(stub.stop())


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(TextFormatter())  # the gateway's own formatter, as its log file gets lines
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module", autouse=True)
def gateway_log() -> Iterator[_Lines]:
    """Every line the gateway logs while this module runs, at the level it runs with (INFO)."""
    handler = _Lines()
    gateway_logger = logging.getLogger("hokusai_registry")
    level = gateway_logger.level
    gateway_logger.setLevel(logging.INFO)
    gateway_logger.addHandler(handler)
    yield handler
    gateway_logger.removeHandler(handler)
    gateway_logger.setLevel(level)


@pytest.fixture(scope="module")
def api_key(gateway: InProcessGateway) -> str:
    return gateway.create_key(unique("sessions-api"))


# Helpers


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def call(
    gateway: InProcessGateway,
    method: str,
    path: str,
    *,
    cookie: str | None = None,
    origin: str | None = None,
    referer: str | None = None,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """One request as a browser (or client) sends it, cookies and Origin set by hand, redirects not
    followed."""
    sent = dict(headers or {})
    if cookie is not None:
        sent["Cookie"] = f"{COOKIE}={cookie}"
    if origin is not None:
        sent["Origin"] = origin
    if referer is not None:
        sent["Referer"] = referer
    return gateway.request(method, path, headers=sent, **kwargs)


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def refusal(response: httpx.Response) -> httpx.Response | None:
    return response if response.status_code != 200 else None


def experiment_exists(upstream: StubUpstream, name: str) -> bool:
    """Whether a creation of experiment `name` reached MLflow."""
    return any(
        arrival.target.endswith("/experiments/create") and json.loads(arrival.body).get("name") == name
        for arrival in upstream.requests
    )


def session_cookie(response: httpx.Response) -> tuple[str, dict[str, str]] | None:
    """The session cookie the response sets: its value and attributes (names lower-cased)."""
    return session_cookie_in(set_cookies(response))


def assert_clears_cookie(response: httpx.Response) -> None:
    cleared = session_cookie(response)
    assert cleared is not None, set_cookies(response)
    value, attributes = cleared
    assert value == "" and attributes["max-age"] == "0", set_cookies(response)


def login(
    gateway: InProcessGateway, key: str, next_path: str | None = "/mlflow/", **kwargs: Any
) -> httpx.Response:
    form = {"key": key}
    if next_path is not None:
        form["next"] = next_path
    kwargs.setdefault("origin", gateway.url)
    return call(gateway, "POST", "/login", data=form, **kwargs)


def sign_in(gateway: InProcessGateway, key: str) -> str:
    """A live session for `key`: the cookie's value."""
    SECRETS.append(key)
    response = login(gateway, key)
    assert response.status_code == 303, response.text
    found = session_cookie(response)
    assert found is not None, set_cookies(response)
    SECRETS.append(found[0])
    return found[0]


def csrf_in(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]*)"', page)
    assert match, page
    return match.group(1)


def search(gateway: InProcessGateway, cookie: str) -> httpx.Response:
    return call(gateway, "POST", SEARCH, cookie=cookie, origin=gateway.url, json={"max_results": 1})


def create_experiment(gateway: InProcessGateway, name: str, **kwargs: Any) -> httpx.Response:
    return call(gateway, "POST", CREATE, json={"name": name}, **kwargs)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


def assert_mlflow_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error_code"] == code


def assert_sent_to_login(response: httpx.Response, next_path: str = "/mlflow/") -> dict[str, list[str]]:
    """A 303 to the login page with `next`; returns the location's query."""
    assert response.status_code == 303, response.text
    location = urlsplit(response.headers["location"])
    assert location.path == "/login" and not location.netloc
    query = parse_qs(location.query)
    assert query["next"] == [next_path]
    return query


def new_key(
    gateway: InProcessGateway, name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES, **kwargs: Any
) -> tuple[str, str]:
    store = key_store(gateway.data_dir)
    try:
        record, key = store.create(name, environment="live", scopes=scopes, **kwargs)
    finally:
        store.close()
    SECRETS.append(key)
    return record.key_id, key


def revoke(data_dir: Path, key_id: str) -> None:
    store = key_store(data_dir)
    try:
        store.revoke(key_id)
    finally:
        store.close()


def key_names(gateway: InProcessGateway) -> set[str]:
    store = key_store(gateway.data_dir)
    try:
        return {record.name for record in store.list()}
    finally:
        store.close()


def key_status(gateway: InProcessGateway, key_id: str) -> str:
    store = key_store(gateway.data_dir)
    try:
        record = store.get(key_id)
        assert record is not None
        return record.status(dt.datetime.now(dt.UTC))
    finally:
        store.close()


@pytest.fixture(scope="module")
def admin_key(gateway: InProcessGateway) -> str:
    key = gateway.create_key(unique("sessions-admin"), admin=True)
    SECRETS.append(key)
    return key


def test_login_page_has_strict_security_headers_and_no_script(gateway: InProcessGateway) -> None:
    response = call(gateway, "GET", "/login?next=%2Fmlflow%2F")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert "script-src" not in policy and "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] in ("same-origin", "no-referrer")
    assert "no-store" in response.headers["cache-control"]
    assert "<script" not in response.text.lower()
    assert 'name="key"' in response.text and 'type="password"' in response.text
    assert not set_cookies(response)

    stylesheet = call(gateway, "GET", "/assets/hokusai.css")
    assert stylesheet.status_code == 200 and stylesheet.headers["content-type"].startswith("text/css")


def test_login_sets_a_session_cookie_that_works_for_the_ui(
    gateway: InProcessGateway, api_key: str, upstream: StubUpstream
) -> None:
    key = gateway.create_key(unique("sessions-login"))
    SECRETS.append(key)
    response = login(gateway, key, "/mlflow/#/experiments")
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/mlflow/#/experiments"
    found = session_cookie(response)
    assert found is not None, set_cookies(response)
    cookie, attributes = found
    SECRETS.append(cookie)
    raw = next(header for header in set_cookies(response) if header.startswith(COOKIE + "="))
    assert "httponly" in attributes and attributes["samesite"] == "Lax" and attributes["path"] == "/"
    assert "secure" not in attributes, raw  # plain http: a Secure cookie would never be sent back
    assert 0 < int(attributes["max-age"]) <= 43200
    # The cookie is a random id, not the key or any piece of it.
    parsed = keys.parse(key)
    secret = key.split("_")[3]
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", cookie)
    assert key not in cookie and parsed.key_id not in cookie
    assert not any(secret[i : i + 8] in cookie for i in range(len(secret) - 7))

    page = call(gateway, "GET", "/mlflow/", cookie=cookie)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")

    found_experiments = search(gateway, cookie)
    assert found_experiments.status_code == 200, found_experiments.text
    assert found_experiments.headers["content-type"].startswith("application/json")
    assert "experiments" in found_experiments.json()

    name = unique("session-created")
    created = create_experiment(gateway, name, cookie=cookie, origin=gateway.url)
    assert created.status_code == 200, created.text
    assert created.json()["experiment_id"]
    assert experiment_exists(upstream, name)


def test_login_with_an_unknown_key_is_refused_without_a_cookie(gateway: InProcessGateway) -> None:
    unknown = keys.generate("live").text
    SECRETS.append(unknown)
    response = login(gateway, unknown)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "not recognised" in response.text
    assert unknown not in response.text
    assert session_cookie(response) is None


def test_login_with_an_empty_key_is_400(gateway: InProcessGateway) -> None:
    response = login(gateway, "  ")
    assert response.status_code == 400
    assert "<script" not in response.text.lower()
    assert session_cookie(response) is None


def test_login_from_another_site_is_refused(gateway: InProcessGateway) -> None:
    key = gateway.create_key(unique("sessions-csrf-login"))
    SECRETS.append(key)
    foreign = login(gateway, key, origin=EVIL)
    assert foreign.status_code == 403 and session_cookie(foreign) is None
    foreign_referer = login(gateway, key, origin=None, referer=EVIL + "/login")
    assert foreign_referer.status_code == 403 and session_cookie(foreign_referer) is None
    nowhere = login(gateway, key, origin=None)
    assert nowhere.status_code == 403 and session_cookie(nowhere) is None
    # The same site's Referer, when a browser leaves Origin out, is enough.
    same_site = login(gateway, key, origin=None, referer=gateway.url + "/login")
    assert same_site.status_code == 303
    assert session_cookie(same_site) is not None


@pytest.mark.parametrize(
    "next_path", ["//evil.example/x", "http://evil.example/x", "/\\evil.example", "/logout"]
)
def test_login_never_sends_the_browser_to_another_site(gateway: InProcessGateway, next_path: str) -> None:
    key = gateway.create_key(unique("sessions-next"))
    SECRETS.append(key)
    response = login(gateway, key, next_path)
    assert response.status_code == 303
    assert response.headers["location"] == "/mlflow/"


def test_login_page_escapes_what_the_url_carries(gateway: InProcessGateway) -> None:
    response = call(
        gateway,
        "GET",
        "/login?" + urlencode({"next": '/"><script>alert(1)</script>', "reason": "<b>owned</b>"}),
    )
    assert response.status_code == 200
    assert "<script" not in response.text.lower()
    assert "<b>owned" not in response.text and "owned" not in response.text  # notices are fixed texts
    assert "&#34;&gt;&lt;script&gt;" in response.text or "&quot;&gt;&lt;script&gt;" in response.text


@pytest.mark.parametrize("character", ["\u2603", "\u00e9", "\u65e5"])
def test_login_with_a_non_ascii_next_path_still_signs_in(gateway: InProcessGateway, character: str) -> None:
    """The `next` path becomes a Location header: non-ASCII text in it must not break signing in (it
    once answered 500 after storing the session, and gave the browser no cookie)."""
    key = gateway.create_key(unique("sessions-unicode-next"))
    SECRETS.append(key)
    form = urlencode({"key": key, "next": f"/mlflow/{character}"}).encode()
    headers = {"Origin": gateway.url, "Content-Type": "application/x-www-form-urlencoded"}
    status, answer, _ = gateway.raw("POST", "/login", headers, form)
    assert status == 303
    assert answer.get("set-cookie", "").startswith(COOKIE + "=")
    location = answer["location"]
    assert location.isascii() and location.startswith("/mlflow/")
    assert unquote(location) in ("/mlflow/", f"/mlflow/{character}")


def test_login_page_while_signed_in_with_a_non_ascii_next_path(gateway: InProcessGateway) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-unicode-form")))
    target = "/login?" + urlencode({"next": "/mlflow/\u2603"})
    status, answer, _ = gateway.raw("GET", target, {"Cookie": f"{COOKIE}={cookie}"})
    assert status == 303
    location = answer["location"]
    assert location.isascii() and unquote(location) in ("/mlflow/", "/mlflow/\u2603")


def test_login_page_sends_a_signed_in_browser_on(gateway: InProcessGateway) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-already")))
    response = call(gateway, "GET", "/login?next=%2Fadmin%2Fkeys", cookie=cookie)
    assert response.status_code == 303 and response.headers["location"] == "/admin/keys"


def test_signing_in_again_ends_the_previous_session(gateway: InProcessGateway) -> None:
    key = gateway.create_key(unique("sessions-fixation"))
    old = sign_in(gateway, key)
    response = login(gateway, key, cookie=old)
    assert response.status_code == 303
    found = session_cookie(response)
    assert found is not None and found[0] != old
    SECRETS.append(found[0])
    assert search(gateway, found[0]).status_code == 200
    assert_mlflow_error(search(gateway, old), 401, "UNAUTHENTICATED")


def test_an_unknown_or_forged_cookie_is_sent_to_sign_in(gateway: InProcessGateway) -> None:
    for forged in ("garbage", "A" * 43, "../../etc/passwd"):
        page = call(gateway, "GET", "/mlflow/", cookie=forged)
        assert assert_sent_to_login(page)["reason"] == ["session_ended"]
        assert_clears_cookie(page)
        assert_mlflow_error(search(gateway, forged), 401, "UNAUTHENTICATED")


def test_a_key_for_another_service_cannot_sign_in(gateway: InProcessGateway) -> None:
    _, key = new_key(gateway, unique("sessions-other-service"), service_ids=("other-service",))
    response = login(gateway, key)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert session_cookie(response) is None


def test_a_session_counts_against_its_keys_rate_limit(gateway: InProcessGateway) -> None:
    _, key = new_key(gateway, unique("sessions-limited"), rate_limit_per_minute=2, rate_limit_per_hour=0)
    clear_of_minute_edge()
    cookie = sign_in(gateway, key)  # signing in checks the key without counting a request
    assert search(gateway, cookie).status_code == 200
    assert search(gateway, cookie).status_code == 200
    limited = search(gateway, cookie)
    assert_mlflow_error(limited, 429, "RESOURCE_EXHAUSTED")
    assert "retry-after" in limited.headers


def test_cookie_writes_must_come_from_this_site(
    gateway: InProcessGateway, api_key: str, upstream: StubUpstream
) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-writes")))

    name = unique("cross-site")
    refused = create_experiment(gateway, name, cookie=cookie, origin=EVIL)
    assert_mlflow_error(refused, 403, "PERMISSION_DENIED")
    assert not experiment_exists(upstream, name)

    no_origin = create_experiment(gateway, name, cookie=cookie)
    assert_mlflow_error(no_origin, 403, "PERMISSION_DENIED")
    assert not experiment_exists(upstream, name)

    foreign_referer = create_experiment(gateway, name, cookie=cookie, referer=EVIL + "/page")
    assert_mlflow_error(foreign_referer, 403, "PERMISSION_DENIED")
    assert not experiment_exists(upstream, name)

    same_site = create_experiment(gateway, name, cookie=cookie, referer=gateway.url + "/mlflow/")
    assert same_site.status_code == 200, same_site.text
    assert experiment_exists(upstream, name)


def test_api_key_clients_need_no_origin(
    gateway: InProcessGateway, api_key: str, upstream: StubUpstream
) -> None:
    name = unique("key-client")
    created = create_experiment(gateway, name, headers=bearer(api_key))
    assert created.status_code == 200, created.text
    assert experiment_exists(upstream, name)


def test_a_key_in_the_headers_wins_over_the_cookie(gateway: InProcessGateway, api_key: str) -> None:
    _, reader = new_key(gateway, unique("sessions-reader"), expand("read"))
    cookie = sign_in(gateway, reader)
    # A write key in the header: its scopes count and no Origin is needed, whatever the cookie says.
    name = unique("key-wins")
    created = create_experiment(gateway, name, cookie=cookie, headers=bearer(api_key))
    assert created.status_code == 200, created.text
    # A bad key in the header is refused even with a live session next to it.
    refused = call(gateway, "GET", API_SEARCH, cookie=cookie, headers=bearer(keys.generate("live").text))
    assert_mlflow_error(refused, 401, "UNAUTHENTICATED")


def test_a_read_only_session_cannot_write(
    gateway: InProcessGateway, api_key: str, upstream: StubUpstream
) -> None:
    _, reader = new_key(gateway, unique("sessions-read"), expand("read"))
    cookie = sign_in(gateway, reader)
    assert search(gateway, cookie).status_code == 200
    name = unique("read-only")
    refused = create_experiment(gateway, name, cookie=cookie, origin=gateway.url)
    assert_mlflow_error(refused, 403, "PERMISSION_DENIED")
    assert not experiment_exists(upstream, name)


def test_logout_ends_the_session(gateway: InProcessGateway) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-logout")))
    page = call(gateway, "GET", "/logout", cookie=cookie)
    assert page.status_code == 200
    assert "<script" not in page.text.lower()
    csrf = csrf_in(page.text)
    assert csrf == csrf_token(cookie)

    response = call(gateway, "POST", "/logout", cookie=cookie, origin=gateway.url, data={"csrf": csrf})
    assert response.status_code == 303
    location = urlsplit(response.headers["location"])
    assert location.path == "/login" and parse_qs(location.query)["reason"] == ["signed_out"]
    assert_clears_cookie(response)

    query = assert_sent_to_login(call(gateway, "GET", "/mlflow/", cookie=cookie))
    assert query["reason"] == ["session_ended"]
    assert_mlflow_error(search(gateway, cookie), 401, "UNAUTHENTICATED")


def test_logout_with_a_wrong_token_changes_nothing(gateway: InProcessGateway) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-logout-csrf")))
    other = csrf_token("A" * 43)
    for form in ({"csrf": other}, {"csrf": ""}, {"next": "/"}):
        response = call(gateway, "POST", "/logout", cookie=cookie, origin=gateway.url, data=form)
        assert response.status_code == 403
        assert session_cookie(response) is None
    foreign = call(gateway, "POST", "/logout", cookie=cookie, origin=EVIL, data={"csrf": csrf_token(cookie)})
    assert foreign.status_code == 403
    assert search(gateway, cookie).status_code == 200
    assert call(gateway, "GET", "/mlflow/", cookie=cookie).status_code == 200


def test_revoking_the_key_ends_its_session_at_once(gateway: InProcessGateway) -> None:
    key_id, key = new_key(gateway, unique("sessions-revoked"))
    cookie = sign_in(gateway, key)
    other_cookie = sign_in(gateway, key)
    assert search(gateway, cookie).status_code == 200
    revoke(gateway.data_dir, key_id)

    refused = search(gateway, cookie)
    assert_mlflow_error(refused, 401, "UNAUTHENTICATED")
    assert_clears_cookie(refused)

    page = call(gateway, "GET", "/mlflow/", cookie=other_cookie)
    query = assert_sent_to_login(page)
    assert query.get("reason"), page.headers["location"]
    assert_clears_cookie(page)


def test_admin_page_needs_a_session(gateway: InProcessGateway) -> None:
    response = call(gateway, "GET", "/admin/keys")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fadmin%2Fkeys"


def test_admin_page_refuses_a_non_admin_session(gateway: InProcessGateway) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-not-admin")))
    response = call(gateway, "GET", "/admin/keys", cookie=cookie)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "not an admin key" in response.text
    created = call(
        gateway,
        "POST",
        "/admin/keys",
        cookie=cookie,
        origin=gateway.url,
        data={"name": unique("by-non-admin"), "csrf": csrf_token(cookie)},
    )
    assert created.status_code == 403


def test_admin_page_lists_keys(gateway: InProcessGateway, admin_key: str) -> None:
    name = unique("listed")
    key_id, key = new_key(gateway, name, expand("read"), owner="carol@example.com")
    cookie = sign_in(gateway, admin_key)
    response = call(gateway, "GET", "/admin/keys", cookie=cookie)
    assert response.status_code == 200
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert "no-store" in response.headers["cache-control"]
    assert "<script" not in response.text.lower()
    row = next(row for row in response.text.split("<tr") if key_id in row)
    assert name in row and "carol@example.com" in row and ">read<" in row and "active" in row
    assert key not in response.text and admin_key not in response.text
    assert csrf_in(response.text) == csrf_token(cookie)


def test_admin_page_creates_a_key_shown_once(gateway: InProcessGateway, admin_key: str) -> None:
    cookie = sign_in(gateway, admin_key)
    csrf = csrf_in(call(gateway, "GET", "/admin/keys", cookie=cookie).text)
    name = unique("page-created")
    form = {
        "name": name,
        "owner": "dave@example.com",
        "scope": "read",
        "expires_in": "30d",
        "service_ids": "",
        "rate_limit_per_minute": "",
        "rate_limit_per_hour": "",
        "csrf": csrf,
        "admin_key": admin_key,
    }
    response = call(gateway, "POST", "/admin/keys", cookie=cookie, origin=gateway.url, data=form)
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    match = re.search(r'id="new-key"[^>]*value="([^"]+)"', response.text)
    assert match, response.text
    key = match.group(1)
    SECRETS.append(key)
    assert key.startswith("hk_live_")
    parsed = keys.parse(key)
    assert key_status(gateway, parsed.key_id) == "active"

    assert call(gateway, "GET", API_SEARCH, headers=bearer(key)).status_code == 200
    listing = call(gateway, "GET", "/admin/keys", cookie=cookie)
    assert listing.status_code == 200
    assert name in listing.text and parsed.key_id in listing.text and "dave@example.com" in listing.text
    assert key not in listing.text


@pytest.mark.parametrize(
    ("change", "origin"),
    [
        ({"csrf": None}, "same"),
        ({"csrf": "0" * 64}, "same"),
        ({}, "foreign"),
        ({}, "none"),
    ],
    ids=["no-csrf", "wrong-csrf", "foreign-origin", "no-origin"],
)
def test_admin_create_refuses_forged_forms(
    gateway: InProcessGateway, admin_key: str, change: dict[str, str | None], origin: str
) -> None:
    cookie = sign_in(gateway, admin_key)
    name = unique("forged")
    # With the admin key entered again: these forms are refused for their token or origin alone.
    form = {"name": name, "scope": "admin", "csrf": csrf_token(cookie), "admin_key": admin_key}
    for field, value in change.items():
        if value is None:
            form.pop(field)
        else:
            form[field] = value
    sent_origin = {"same": gateway.url, "foreign": EVIL, "none": None}[origin]
    response = call(gateway, "POST", "/admin/keys", cookie=cookie, origin=sent_origin, data=form)
    assert response.status_code == 403
    assert "hk_live_" not in response.text
    assert name not in key_names(gateway)


def test_admin_create_explains_bad_fields(gateway: InProcessGateway, admin_key: str) -> None:
    cookie = sign_in(gateway, admin_key)
    csrf = csrf_token(cookie)
    name = unique("bad-fields")

    lifetime = call(
        gateway,
        "POST",
        "/admin/keys",
        cookie=cookie,
        origin=gateway.url,
        data={"name": name, "expires_in": "1y", "csrf": csrf, "admin_key": admin_key},
    )
    assert lifetime.status_code == 400
    assert "expires_in" in lifetime.text and "not a lifetime" in lifetime.text
    assert 'id="new-key"' not in lifetime.text
    assert name not in key_names(gateway)

    limit = call(
        gateway,
        "POST",
        "/admin/keys",
        cookie=cookie,
        origin=gateway.url,
        data={"name": name, "rate_limit_per_minute": "-1", "csrf": csrf, "admin_key": admin_key},
    )
    assert limit.status_code == 400 and "rate_limit_per_minute" in limit.text
    assert name not in key_names(gateway)

    taken_name = unique("taken")
    new_key(gateway, taken_name)
    before = len(key_names(gateway))
    duplicate = call(
        gateway,
        "POST",
        "/admin/keys",
        cookie=cookie,
        origin=gateway.url,
        data={"name": taken_name, "csrf": csrf, "admin_key": admin_key},
    )
    assert duplicate.status_code == 400
    assert "already exists" in duplicate.text
    assert 'id="new-key"' not in duplicate.text
    assert len(key_names(gateway)) == before


def test_admin_page_revokes_a_key(gateway: InProcessGateway, admin_key: str) -> None:
    key_id, key = new_key(gateway, unique("page-revoked"))
    assert call(gateway, "GET", API_SEARCH, headers=bearer(key)).status_code == 200
    cookie = sign_in(gateway, admin_key)
    path = f"/admin/keys/{key_id}/revoke"

    forged = call(
        gateway, "POST", path, cookie=cookie, origin=gateway.url, data={"csrf": "x", "admin_key": admin_key}
    )
    assert forged.status_code == 403
    foreign = call(
        gateway,
        "POST",
        path,
        cookie=cookie,
        origin=EVIL,
        data={"csrf": csrf_token(cookie), "admin_key": admin_key},
    )
    assert foreign.status_code == 403
    assert key_status(gateway, key_id) == "active"

    listing = call(gateway, "GET", "/admin/keys", cookie=cookie)
    assert f'href="{path}"' in listing.text  # a link to the confirmation, not a form
    page = call(gateway, "GET", path, cookie=cookie)
    assert page.status_code == 200 and f'action="{path}"' in page.text
    assert 'name="admin_key" type="password"' in page.text
    response = call(
        gateway,
        "POST",
        path,
        cookie=cookie,
        origin=gateway.url,
        data={"csrf": csrf_in(page.text), "admin_key": admin_key},
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/keys?revoked={key_id}"
    assert key_status(gateway, key_id) == "revoked"

    # The key check cache follows the store's revision (1 s poll).
    refused = eventually(lambda: refusal(call(gateway, "GET", API_SEARCH, headers=bearer(key))))
    assert_mlflow_error(refused, 401, "UNAUTHENTICATED")

    shown = call(gateway, "GET", response.headers["location"], cookie=cookie)
    assert shown.status_code == 200 and key_id in shown.text and "revoked" in shown.text


# Step-up: a key change from the browser needs the session's own admin key entered again. A script
# running in the MLflow UI (same origin) passes the origin check and can read the CSRF token; it does not
# know the key.

# Fetch Metadata as Chromium sends it: a script's fetch, a form aimed at a frame, a page the user opens.
SCRIPT_FETCH = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty", "Sec-Fetch-Site": "same-origin"}
FRAME = {"Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "iframe", "Sec-Fetch-Site": "same-origin"}
PAGE_LOAD = {
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "same-origin",
    "Sec-Fetch-User": "?1",
}


@pytest.fixture
def audit_log() -> Iterator[Lines]:
    with captured(AUDIT_LOGGER, AuditFormatter()) as lines:
        yield lines


def audited(log: Lines, event: str, **match: Any) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.lines]
    return [
        line for line in lines if line["audit"] == event and all(line.get(k) == v for k, v in match.items())
    ]


def key_change(
    gateway: InProcessGateway,
    action: str,
    cookie: str,
    target: str,
    *,
    admin_key: str | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A key change posted as the page posts it (this site's Origin, the session's CSRF token), with
    `admin_key` in the step-up field (None: no such field): `create` makes a key named `target`,
    `rotate` and `revoke` act on key id `target`."""
    form = {"csrf": csrf_token(cookie)}
    if admin_key is not None:
        form["admin_key"] = admin_key
    path = f"/admin/keys/{target}/{action}"
    if action == "create":
        form.update(name=target, scope="admin")
        path = "/admin/keys"
    return call(gateway, "POST", path, cookie=cookie, origin=gateway.url, headers=headers, data=form)


def keys_named(gateway: InProcessGateway, name: str) -> int:
    store = key_store(gateway.data_dir)
    try:
        return sum(record.name == name for record in store.list())
    finally:
        store.close()


def unchanged(gateway: InProcessGateway, action: str, target: str, target_name: str) -> bool:
    """Whether the change was not made: no key `target` created, or key `target` still active and alone
    under its name (a rotation adds a successor of the same name)."""
    if action == "create":
        return keys_named(gateway, target) == 0
    return key_status(gateway, target) == "active" and keys_named(gateway, target_name) == 1


@pytest.mark.parametrize("action", ["create", "rotate", "revoke"])
@pytest.mark.parametrize(
    "entered", ["none", "empty", "unknown", "markup", "other-admin-same-owner", "read-key", "target-key"]
)
def test_a_key_change_needs_the_sessions_own_key_again(
    gateway: InProcessGateway, audit_log: Lines, action: str, entered: str
) -> None:
    owner = unique("owner")
    admin_id, admin = new_key(gateway, unique("step-up-admin"), expand("admin"), owner=owner)
    target_name = unique("step-up-target")
    target_id, target_key = new_key(gateway, target_name, expand("read"))
    _, other_admin = new_key(gateway, unique("step-up-other"), expand("admin"), owner=owner)
    _, reader = new_key(gateway, unique("step-up-reader"), expand("read"))
    cookie = sign_in(gateway, admin)
    presented = {
        "none": None,
        "empty": "",
        "unknown": keys.generate("live").text,
        "markup": '"><b>x</b>',
        "other-admin-same-owner": other_admin,
        "read-key": reader,
        "target-key": target_key,
    }[entered]
    if presented:
        SECRETS.append(presented)
    target = unique("step-up-made") if action == "create" else target_id

    response = key_change(gateway, action, cookie, target, admin_key=presented)
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "entered again" in response.text and admin_id in response.text
    assert 'id="new-key"' not in response.text
    assert 'name="admin_key"' in response.text and 'type="password"' in response.text  # asked again
    if presented:
        assert presented not in response.text  # never echoed
    assert unchanged(gateway, action, target, target_name)
    # Audited as a failed authentication of the session's key, never naming the key entered.
    failed = audited(audit_log, "auth.failed", reason="step_up_failed", key_id=admin_id)
    assert len(failed) == 1, audit_log.lines
    assert failed[0]["client"] == "127.0.0.1" and failed[0]["method"] == "POST"
    assert not audited(audit_log, "key.created") and not audited(audit_log, "key.revoked")
    assert all(secret not in audit_log.text() for secret in (admin, other_admin, reader, target_key))

    # The same form with the session's key goes through.
    done = key_change(gateway, action, cookie, target, admin_key=admin)
    assert done.status_code in (200, 303), done.text
    assert not unchanged(gateway, action, target, target_name)


def test_failed_step_ups_count_towards_the_failure_throttle(
    new_gateway: Callable[..., InProcessGateway], upstream: StubUpstream
) -> None:
    limited = new_gateway(upstream.url, auth_failure_limit=3)
    admin = limited.create_key(unique("throttled-admin"), admin=True)
    cookie = sign_in(limited, admin)
    for _ in range(3):
        guess = keys.generate("live").text
        SECRETS.append(guess)
        assert key_change(limited, "create", cookie, unique("guessed"), admin_key=guess).status_code == 403
    guess = keys.generate("live").text
    SECRETS.append(guess)
    name = unique("guessed")
    throttled = key_change(limited, "create", cookie, name, admin_key=guess)
    assert throttled.status_code == 429, throttled.text
    assert int(throttled.headers["retry-after"]) >= 1
    assert "too many failed authentications" in throttled.text.lower()
    assert keys_named(limited, name) == 0
    # One throttle for the address: a new key at the sign-in page is refused too.
    assert login(limited, keys.generate("live").text).status_code == 429
    # The session's own key, checked moments ago, still passes, as known keys do from a throttled
    # address: a script failing on purpose cannot lock the admin out.
    assert key_change(limited, "create", cookie, name, admin_key=admin).status_code == 200
    assert keys_named(limited, name) == 1


@pytest.mark.parametrize("fetch", [SCRIPT_FETCH, FRAME], ids=["script", "frame"])
def test_signed_in_pages_open_only_as_pages(
    gateway: InProcessGateway, admin_key: str, fetch: dict[str, str]
) -> None:
    target_id, _ = new_key(gateway, unique("fetched"))
    cookie = sign_in(gateway, admin_key)
    for path in (
        "/admin/keys",
        "/logout",
        f"/admin/keys/{target_id}/revoke",
        f"/admin/keys/{target_id}/rotate",
    ):
        refused = call(gateway, "GET", path, cookie=cookie, headers=fetch)
        assert refused.status_code == 403, (path, refused.text)
        assert "script or a frame" in refused.text
        assert csrf_token(cookie) not in refused.text and target_id not in refused.text
        assert refused.headers["x-frame-options"] == "DENY"
        opened = call(gateway, "GET", path, cookie=cookie, headers=PAGE_LOAD)
        assert opened.status_code == 200, (path, opened.text)
        assert csrf_in(opened.text) == csrf_token(cookie)
    # Even with the token and the key, a script's post changes nothing.
    name = unique("scripted")
    posted = key_change(gateway, "create", cookie, name, headers=fetch, admin_key=admin_key)
    assert posted.status_code == 403 and 'id="new-key"' not in posted.text
    assert keys_named(gateway, name) == 0
    revoked = key_change(gateway, "revoke", cookie, target_id, headers=fetch, admin_key=admin_key)
    assert revoked.status_code == 403
    assert key_status(gateway, target_id) == "active"


def test_admin_page_rotates_a_key(gateway: InProcessGateway, admin_key: str) -> None:
    name = unique("page-rotated")
    key_id, key = new_key(gateway, name, expand("read"), owner="erin@example.com")
    cookie = sign_in(gateway, admin_key)
    path = f"/admin/keys/{key_id}/rotate"
    assert f'href="{path}"' in call(gateway, "GET", "/admin/keys", cookie=cookie).text
    page = call(gateway, "GET", path, cookie=cookie)
    assert page.status_code == 200 and key_id in page.text and "erin@example.com" in page.text
    assert f'action="{path}"' in page.text and "your own session" not in page.text

    response = call(
        gateway,
        "POST",
        path,
        cookie=cookie,
        origin=gateway.url,
        data={"csrf": csrf_in(page.text), "admin_key": admin_key},
    )
    assert response.status_code == 200, response.text
    assert "no-store" in response.headers["cache-control"]
    match = re.search(r'id="new-key"[^>]*value="([^"]+)"', response.text)
    assert match, response.text
    successor = match.group(1)
    SECRETS.append(successor)
    successor_id = keys.parse(successor).key_id
    assert successor_id != key_id and "rotated" in response.text and key_id in response.text
    assert key_status(gateway, key_id) == "revoked" and key_status(gateway, successor_id) == "active"
    assert keys_named(gateway, name) == 2
    assert call(gateway, "GET", API_SEARCH, headers=bearer(successor)).status_code == 200
    refused = eventually(lambda: refusal(call(gateway, "GET", API_SEARCH, headers=bearer(key))))
    assert_mlflow_error(refused, 401, "UNAUTHENTICATED")
    assert successor not in call(gateway, "GET", "/admin/keys", cookie=cookie).text  # shown once

    # A revoked key has nothing left to rotate or revoke.
    assert call(gateway, "GET", path, cookie=cookie).status_code == 409
    again = call(
        gateway,
        "POST",
        path,
        cookie=cookie,
        origin=gateway.url,
        data={"csrf": csrf_token(cookie), "admin_key": admin_key},
    )
    assert again.status_code == 409 and 'id="new-key"' not in again.text
    assert keys_named(gateway, name) == 2


def test_rotating_the_sessions_own_key_ends_the_session(gateway: InProcessGateway) -> None:
    own_id, own = new_key(gateway, unique("rotates-itself"), expand("admin"))
    cookie = sign_in(gateway, own)
    path = f"/admin/keys/{own_id}/rotate"
    page = call(gateway, "GET", path, cookie=cookie)
    assert page.status_code == 200 and "your own session" in page.text
    response = call(
        gateway,
        "POST",
        path,
        cookie=cookie,
        origin=gateway.url,
        data={"csrf": csrf_in(page.text), "admin_key": own},
    )
    assert response.status_code == 200, response.text
    assert "sign in again" in response.text
    match = re.search(r'id="new-key"[^>]*value="([^"]+)"', response.text)
    assert match
    successor = match.group(1)
    SECRETS.append(successor)
    assert_mlflow_error(search(gateway, cookie), 401, "UNAUTHENTICATED")
    assert search(gateway, sign_in(gateway, successor)).status_code == 200


def test_the_rest_admin_api_ignores_the_session_cookie(gateway: InProcessGateway, admin_key: str) -> None:
    cookie = sign_in(gateway, admin_key)
    assert call(gateway, "GET", "/api/v1/keys", headers=bearer(admin_key)).status_code == 200
    listed = call(gateway, "GET", "/api/v1/keys", cookie=cookie)
    assert_mlflow_error(listed, 401, "UNAUTHENTICATED")
    name = unique("api-by-cookie")
    created = call(
        gateway,
        "POST",
        "/api/v1/keys",
        cookie=cookie,
        origin=gateway.url,
        json={"name": name, "scope": "admin"},
    )
    assert created.status_code == 401
    assert name not in key_names(gateway)


def test_no_key_or_cookie_of_this_module_reaches_the_log(
    gateway: InProcessGateway, gateway_log: _Lines
) -> None:
    cookie = sign_in(gateway, gateway.create_key(unique("sessions-last")))
    assert search(gateway, cookie).status_code == 200
    log = "\n".join(gateway_log.lines)
    assert "POST /login" in log  # access lines were captured: the check below looks at something
    assert SECRETS
    leaked = [secret for secret in SECRETS if secret and secret in log]
    assert not leaked, f"{len(leaked)} secrets in the gateway log"
    # Not even the secret part of a key on its own.
    assert not [secret for secret in SECRETS if secret.startswith("hk_") and secret.split("_")[3] in log]
