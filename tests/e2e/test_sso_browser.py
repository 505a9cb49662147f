"""Single sign-on in a real browser: Chromium signs in through the loopback OIDC provider's own login page,
lands in the MLflow UI seeing what its teams may read (Step 11 permissions, on), and signs out at both
ends. Teams follow the provider's groups at each sign-in; members of the admin group are admins; a
disabled user's session ends at once. And the callback's refusals, sent as an attacker would send them."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import mlflow
import pytest
import requests
import sqlalchemy as sa
from mlflow import MlflowClient

from tests.e2e.permission_world import Owner, make_owner
from tests.e2e.test_browser import CHROMIUM_ARGS, UI_TIMEOUT_MS, shot
from tests.e2e.test_mlflow_client import register_and_load
from tests.helpers import HOKUSAI, GatewayProcess, key_store
from tests.support.oidc_provider import AUDIENCE, UI_CLIENT, UI_SECRET, OidcProvider
from tests.support.polling import eventually

playwright_api = pytest.importorskip("playwright.sync_api")
if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

from tests.e2e.test_browser import CHROMIUM  # noqa: E402

SEARCH = "/mlflow/ajax-api/2.0/mlflow/experiments/search"
SET_TAG = "/mlflow/ajax-api/2.0/mlflow/experiments/set-experiment-tag"


@pytest.fixture(scope="module")
def sso_gateway(
    mlflow_server: str, oidc_provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = {
        "HOKUSAI_OIDC_ISSUER": oidc_provider.issuer,
        "HOKUSAI_OIDC_CLIENT_ID": UI_CLIENT,
        "HOKUSAI_OIDC_CLIENT_SECRET": UI_SECRET,
        "HOKUSAI_OIDC_DISPLAY_NAME": "NanoIDP",
        "HOKUSAI_OIDC_ADMIN_GROUPS": "ml-admins",
        # People's access tokens (for the keys API) carry the provider's API audience.
        "HOKUSAI_OIDC_AUDIENCE": AUDIENCE,
        "HOKUSAI_DEFAULT_PERMISSION": "NO_PERMISSIONS",
    }
    process = GatewayProcess(mlflow_server, tmp_path_factory.mktemp("sso-gateway"), env=env)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin(sso_gateway: GatewayProcess) -> Owner:
    return make_owner(sso_gateway, f"sso-admin-{uuid.uuid4().hex[:6]}", admin=True)


def api(admin: Owner, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    answer = requests.request(
        method,
        admin.gateway + path,
        json=body,
        headers={"Authorization": f"Bearer {admin.key}"},
        timeout=10,
    )
    assert answer.status_code in (200, 201), f"{method} {path}: {answer.text[:300]}"
    return answer.json()


@pytest.fixture(scope="module")
def world(admin: Owner) -> dict[str, str]:
    """Teams team-a and team-b, each granted EDIT on an experiment of its own that an outsider owns
    (everyone may read everything here: the session's MLflow has the default permission READ)."""
    outsider = Owner(admin.user, admin.key, admin.gateway)
    experiments = {}
    for team in ("team-a", "team-b"):
        name = f"{team}-experiment-{uuid.uuid4().hex[:6]}"
        created = outsider.json("POST", "/api/2.0/mlflow/experiments/create", json={"name": name})
        requests.post(
            admin.gateway + "/api/v1/teams",
            json={"name": team},
            headers={"Authorization": f"Bearer {admin.key}"},
            timeout=10,
        )
        api(
            admin,
            "POST",
            "/api/v1/grants",
            {"team": team, "experiment": created["experiment_id"], "level": "EDIT"},
        )
        experiments[team] = created["experiment_id"]
    return experiments


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get, as root)")
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def context(browser: Browser, sso_gateway: GatewayProcess) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=sso_gateway.url, viewport={"width": 1400, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    yield context
    context.close()


def sign_in_at_provider(page: Page, provider: OidcProvider, person: str, start: str = "/mlflow/") -> None:
    page.goto(start)
    page.wait_for_url("**/login?**")
    page.get_by_role("link", name="Sign in with NanoIDP").click()
    page.wait_for_url(provider.issuer + "/**")
    form = provider.login_form
    page.fill(form.username, person)
    page.fill(form.password, provider.people[person].password)
    page.click(form.submit)
    page.wait_for_url(lambda url: not url.startswith(provider.issuer) and "/login" not in url)


def editable(page: Page, gateway: GatewayProcess, experiments: dict[str, str]) -> set[str]:
    """The teams whose experiment this browser's session may change (tag), through the UI's own API."""
    changed = set()
    for team, experiment_id in experiments.items():
        answer = page.request.post(
            SET_TAG,
            data={"experiment_id": experiment_id, "key": "touched-by", "value": "sso"},
            headers={"Origin": gateway.url},
        )
        assert answer.status in (200, 403), answer.text()
        if answer.status == 200:
            changed.add(team)
    return changed


def members(admin: Owner, team: str) -> list[str]:
    listed: list[str] = api(admin, "GET", f"/api/v1/teams/{team}")["members"]
    return listed


def test_a_person_signs_in_at_the_provider_sees_their_teams_objects_and_signs_out_at_both_ends(
    context: BrowserContext,
    sso_gateway: GatewayProcess,
    oidc_provider: OidcProvider,
    admin: Owner,
    world: dict[str, str],
) -> None:
    page = context.new_page()
    sign_in_at_provider(page, oidc_provider, "alice")
    shot(page, "sso-signed-in")
    assert "/mlflow/" in page.url
    assert "alice" in members(admin, "team-a") and "alice" not in members(admin, "team-b")
    assert editable(page, sso_gateway, world) == {"team-a"}
    cookies = context.cookies()
    session = next(cookie for cookie in cookies if cookie["name"] == "hokusai_session")

    page.goto("/logout")
    page.get_by_role("region", name="Sign out").get_by_role("button").click()
    page.wait_for_url("**/login?**reason=signed_out**")
    assert "You are signed out." in page.content()
    # Signed out here: the old cookie is no session any more.
    replay = requests.get(sso_gateway.url + SEARCH, cookies={"hokusai_session": session["value"]}, timeout=10)
    assert replay.status_code == 401
    # And at the provider: signing in again asks for the password again.
    page.get_by_role("link", name="Sign in with NanoIDP").click()
    page.wait_for_url(oidc_provider.issuer + "/**")
    assert page.locator(oidc_provider.login_form.password).is_visible()


def test_groups_changed_at_the_provider_change_teams_at_the_next_sign_in(
    context: BrowserContext,
    sso_gateway: GatewayProcess,
    oidc_provider: OidcProvider,
    admin: Owner,
    world: dict[str, str],
) -> None:
    page = context.new_page()
    sign_in_at_provider(page, oidc_provider, "bob")
    assert "bob" in members(admin, "team-b")
    assert editable(page, sso_gateway, world) == {"team-b"}
    oidc_provider.set_groups("bob", ["team-a"])
    try:
        context.clear_cookies()
        sign_in_at_provider(page, oidc_provider, "bob")
        assert "bob" in members(admin, "team-a") and "bob" not in members(admin, "team-b")
        assert editable(page, sso_gateway, world) == {"team-a"}
    finally:
        oidc_provider.set_groups("bob", ["team-b"])


def test_a_member_of_the_admin_group_is_an_admin(
    context: BrowserContext, oidc_provider: OidcProvider
) -> None:
    page = context.new_page()
    sign_in_at_provider(page, oidc_provider, "carol", start="/admin/keys")
    assert page.url.endswith("/admin/keys")
    assert page.get_by_role("heading", name="API keys").is_visible()


def test_disabling_a_user_ends_their_session_keys_and_tokens_at_once(
    context: BrowserContext,
    sso_gateway: GatewayProcess,
    oidc_provider: OidcProvider,
    admin: Owner,
    world: dict[str, str],
) -> None:
    page = context.new_page()
    sign_in_at_provider(page, oidc_provider, "alice")
    assert editable(page, sso_gateway, world) == {"team-a"}
    token = _token(oidc_provider, "alice")
    own = _keys(sso_gateway, token, "POST", name=f"disable-{uuid.uuid4().hex[:6]}")
    assert own.status_code == 201, own.text
    listed = subprocess.run(
        [HOKUSAI, "users", "list", "--json", "--data-dir", str(sso_gateway.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    alice = next(user for user in json.loads(listed.stdout) if user["name"] == "alice")
    assert (alice["kind"], alice["groups"], alice["status"]) == ("person", ["team-a"], "active")
    disabled = api(admin, "POST", "/api/v1/users/alice/disable")
    try:
        assert disabled["status"] == "disabled" and disabled["keys_revoked"] >= 2  # her own key and session's
        eventually(
            lambda: page.request.get(SEARCH, params={"max_results": "1"}).status == 401,
            10,
            0.2,
            "the disabled user's session to end",
        )
        refused = requests.get(
            sso_gateway.url + SEARCH,
            params={"max_results": "1"},
            headers={"Authorization": f"Bearer {own.json()['key']}"},
            timeout=10,
        )
        assert (refused.status_code, refused.json()["reason"]) == (401, "revoked")
        by_token = requests.get(
            sso_gateway.url + SEARCH,
            params={"max_results": "1"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        assert (by_token.status_code, by_token.json()["reason"]) == (401, "user_disabled")
        # Nor can she sign in again until enabled.
        context.clear_cookies()
        page.goto("/login")
        page.get_by_role("link", name="Sign in with NanoIDP").click()
        form = oidc_provider.login_form
        page.fill(form.username, "alice")
        page.fill(form.password, oidc_provider.people["alice"].password)
        page.click(form.submit)
        page.wait_for_url("**/login/oidc/callback**")
        assert "disabled" in page.content()
    finally:
        api(admin, "POST", "/api/v1/users/alice/enable")


# The callback, sent as an attacker would send it


def _started(gateway: GatewayProcess) -> tuple[requests.Session, dict[str, str]]:
    """A browser that began a sign-in: its flow cookie, and the provider's authorization request."""
    browser = requests.Session()
    answer = browser.get(gateway.url + "/login/oidc?next=/mlflow/", allow_redirects=False, timeout=10)
    assert answer.status_code == 303
    query = {name: values[0] for name, values in parse_qs(urlsplit(answer.headers["location"]).query).items()}
    assert query["code_challenge_method"] == "S256" and query["nonce"] and query["state"]
    assert query["redirect_uri"] == gateway.url + "/login/oidc/callback"
    return browser, query


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("no flow cookie", "not started in this browser"),
        ("another state", "not for the sign-in this browser started"),
        ("another issuer", "RFC 9207"),
        ("the provider refused", "access_denied"),
        ("no code", "no authorization code"),
        ("a made-up code", "did not exchange the code"),
    ],
)
def test_the_callback_refuses_what_the_provider_did_not_send_this_browser(
    sso_gateway: GatewayProcess, case: str, said: str
) -> None:
    browser, request = _started(sso_gateway)
    query = {"code": "made-up", "state": request["state"]}
    if case == "no flow cookie":
        browser.cookies.clear()
    elif case == "another state":
        query["state"] = "x" * 43
    elif case == "another issuer":
        query["iss"] = "http://127.0.0.1:9/evil"
    elif case == "the provider refused":
        query = {"error": "access_denied", "state": request["state"]}
    elif case == "no code":
        del query["code"]
    answer = browser.get(
        sso_gateway.url + "/login/oidc/callback", params=query, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 403, answer.text[:300]
    assert said in answer.text
    assert "hokusai_session=" not in answer.headers.get("set-cookie", "")


# Self-service keys: what a person makes for their notebook, and what it may never do


def test_a_new_user_signs_in_makes_a_key_and_registers_a_model_from_a_notebook(
    context: BrowserContext,
    sso_gateway: GatewayProcess,
    oidc_provider: OidcProvider,
    admin: Owner,
    world: dict[str, str],
    tmp_path: Path,
) -> None:
    page = context.new_page()
    sign_in_at_provider(page, oidc_provider, "alice", start="/keys")
    assert page.url.endswith("/keys")
    page.get_by_label("Name").fill("notebook")
    page.get_by_role("button", name="Create key").click()
    key = page.locator("#new-key").input_value()
    shot(page, "sso-my-key")
    assert key.startswith("hk_live_")
    assert "export MLFLOW_TRACKING_TOKEN=" in page.content()
    assert page.get_by_role("cell", name="alice: notebook", exact=True).is_visible()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_TOKEN", key)
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.delenv(name, raising=False)
        model = f"alice-model-{uuid.uuid4().hex[:6]}"
        run_id = register_and_load(sso_gateway.url + "/mlflow", model, tmp_path)
        assert MlflowClient().get_run(run_id).info.user_id == "alice"
        mlflow.set_tracking_uri("")
    # The key is hers: it shows under her name, expiring within the maximum lifetime (90 days).
    listed = {info["name"]: info for info in api(admin, "GET", "/api/v1/keys")}
    mine = listed["alice: notebook"]
    assert mine["owner"] == "alice" and mine["scopes"] == ["read", "write"]
    expires = dt.datetime.fromisoformat(mine["expires_at"])
    assert dt.timedelta(days=89) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(days=90)
    # No sign-in key is ever listed.
    assert not any(name.startswith("sign-in ") for name in listed)


def _token(provider: OidcProvider, person: str, scope: str = "mlflow.write") -> str:
    token: str = provider.password_token(person, scope=f"openid profile email {scope}")["access_token"]
    return token


def _keys(
    gateway: GatewayProcess, credential: str, method: str, path: str = "", **body: Any
) -> requests.Response:
    return requests.request(
        method,
        gateway.url + "/api/v1/keys" + path,
        json=body or None,
        headers={"Authorization": f"Bearer {credential}"},
        timeout=10,
    )


def test_own_keys_through_the_api_act_as_their_user_and_never_above_them(
    sso_gateway: GatewayProcess, oidc_provider: OidcProvider, admin: Owner
) -> None:
    token = _token(oidc_provider, "bob")
    created = _keys(sso_gateway, token, "POST", name="ci", expires_in="7d")
    assert created.status_code == 201, created.text
    key = created.json()
    assert (key["name"], key["owner"], key["scopes"]) == ("bob: ci", "bob", ["read", "write"])

    refusals = {
        "too long": (_keys(sso_gateway, token, "POST", name="x", expires_in="365d"), 400, "at most 90 days"),
        "above the user": (_keys(sso_gateway, token, "POST", name="x", scope="admin"), 403, "above what bob"),
        "admin's fields": (
            _keys(sso_gateway, token, "POST", name="x", owner="alice"),
            400,
            "name, scope and",
        ),
        "a key making keys": (_keys(sso_gateway, key["key"], "POST", name="x"), 403, "never by another key"),
        "rotating": (_keys(sso_gateway, token, "POST", f"/{key['key_id']}/rotate"), 403, "admin key"),
        "another's key": (_keys(sso_gateway, token, "POST", f"/{admin_key_id(admin)}/revoke"), 404, "no key"),
    }
    for case, (answer, status, said) in refusals.items():
        assert (answer.status_code, said in answer.json()["message"]) == (status, True), (case, answer.text)

    listed = _keys(sso_gateway, token, "GET").json()
    assert {info["owner"] for info in listed} == {"bob"}
    # Never above the user as they are now: with bob's scope lowered to read, his write key only reads.
    store = key_store(sso_gateway.data_dir)
    try:
        with store.engine.begin() as connection:
            connection.execute(sa.text("update users set scopes = 'read' where name = 'bob'"))
        store.create("nudge", environment="live", scopes=("read",))  # bumps the revision: caches drop

        def refused_write() -> requests.Response | None:
            answer = requests.post(
                sso_gateway.url + "/api/2.0/mlflow/experiments/create",
                json={"name": f"bob-{uuid.uuid4().hex[:6]}"},
                headers={"Authorization": f"Bearer {key['key']}"},
                timeout=10,
            )
            return answer if answer.status_code == 403 else None

        created_run = eventually(refused_write, 10, 0.2, "bob's key to lose its write scope")
        assert created_run.json()["reason"] == "scope"
    finally:
        with store.engine.begin() as connection:
            connection.execute(sa.text("update users set scopes = 'read write' where name = 'bob'"))
        store.close()
    revoked = _keys(sso_gateway, token, "POST", f"/{key['key_id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"


def admin_key_id(admin: Owner) -> str:
    return admin.key.split("_")[2]


def test_an_admin_disables_and_enables_a_user_on_the_users_page(
    context: BrowserContext, sso_gateway: GatewayProcess, oidc_provider: OidcProvider
) -> None:
    bob = context.new_page()
    sign_in_at_provider(bob, oidc_provider, "bob")
    assert bob.request.get(SEARCH, params={"max_results": "1"}).status == 200
    carol = context.browser.new_context(base_url=sso_gateway.url) if context.browser else None
    assert carol is not None
    try:
        page = carol.new_page()
        sign_in_at_provider(page, oidc_provider, "carol", start="/admin/users")
        row = page.get_by_role("row").filter(has_text="bob")
        assert "active" in row.inner_text()
        page.get_by_role("link", name="Disable bob").click()
        # A session begun at the provider steps up with the sign-in it just made: no key to enter.
        page.get_by_role("button", name="Disable user").click()
        page.wait_for_url("**/admin/users?changed=bob")
        shot(page, "sso-users-page")
        assert "disabled" in page.get_by_role("row").filter(has_text="bob").inner_text()
        assert bob.request.get(SEARCH, params={"max_results": "1"}).status == 401
        page.get_by_role("link", name="Enable bob").click()
        page.get_by_role("button", name="Enable user").click()
        page.wait_for_url("**/admin/users?changed=bob")
        assert "active" in page.get_by_role("row").filter(has_text="bob").inner_text()
    finally:
        carol.close()
