"""The MLflow UI in a real browser: Debian's headless Chromium driven by Playwright, through a live gateway
and a live MLflow. Screenshots of every step go to test-output/screenshots/ (looked at by people, not
compared by the tests).
"""

from __future__ import annotations

import http.server
import secrets
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from sklearn.linear_model import LinearRegression  # type: ignore[import-untyped]

from hokusai_registry.auth.sessions import csrf_token
from hokusai_registry.policy import keys
from tests.helpers import GatewayProcess, free_port, key_store, stated_requirements
from tests.support.polling import eventually

playwright_api = pytest.importorskip("playwright.sync_api")
if TYPE_CHECKING:  # annotations name the module the skip above imports
    from playwright._impl._api_structures import SetCookieParam
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
# Chromium's own background traffic (updates, sync) is refused on this closed network; turn it off.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 30_000
# The Default experiment's own page, not the experiments list: the list shows one page, and the
# experiments other tests made in the same MLflow push Default off it (seen in CI: 30 s waits).
DEFAULT_EXPERIMENT = "/mlflow/#/experiments/0"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get, as root)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser, gateway: GatewayProcess) -> Iterator[BrowserContext]:
    context = browser.new_context(
        base_url=gateway.url, viewport={"width": 1400, "height": 900}, accept_downloads=True
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    yield context
    context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def sign_in(page: Page, key: str, start: str = "/mlflow/") -> None:
    page.goto(start)
    page.wait_for_url("**/login?**")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def experiment_named(api_key: str, gateway: GatewayProcess, name: str) -> bool:
    response = requests.get(
        gateway.url + "/mlflow/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": name},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    )
    return response.status_code == 200


@pytest.fixture
def tracked(gateway_client: pytest.MonkeyPatch, api_key: str, tmp_path: Path) -> dict[str, str]:
    """An experiment, a run with an artifact and a registered model, made by the MLflow client through
    the gateway with an API key."""
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", api_key)
    suffix = uuid.uuid4().hex[:8]
    experiment = mlflow.set_experiment(f"browser-{suffix}")
    artifact = tmp_path / "notes.txt"
    # Random text: the download must be these bytes, not a cached or generic file.
    artifact.write_text("".join(secrets.token_hex(32) + "\n" for _ in range(512)))
    with mlflow.start_run(run_name=f"browser-run-{suffix}") as run:
        mlflow.log_param("alpha", 0.5)
        mlflow.log_metric("rmse", 0.25)
        mlflow.log_artifact(str(artifact))
        mlflow.sklearn.log_model(
            LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]),
            name="model",
            registered_model_name=f"browser-model-{suffix}",
            pip_requirements=stated_requirements(),
        )
    version = MlflowClient().search_model_versions(f"name = 'browser-model-{suffix}'")[0].version
    return {
        "experiment_id": experiment.experiment_id,
        "experiment": experiment.name,
        "run_id": run.info.run_id,
        "run_name": f"browser-run-{suffix}",
        "model": f"browser-model-{suffix}",
        "version": str(version),
        "artifact": str(artifact),
    }


def test_a_user_signs_in_browses_downloads_and_signs_out(
    context: BrowserContext, tracked: dict[str, str], api_key: str
) -> None:
    page = context.new_page()
    page.goto(f"/mlflow/#/experiments/{tracked['experiment_id']}/runs")
    page.wait_for_url("**/login?**")
    assert page.get_by_role("heading", name="Sign in").is_visible()
    shot(page, "01-login")

    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/mlflow/")
    cookies = context.cookies()
    session = next(cookie for cookie in cookies if cookie["name"] == "hokusai_session")
    assert session["httpOnly"] and session["sameSite"] == "Lax"
    assert keys.parse(api_key).key_id not in session["value"] and api_key not in session["value"]

    page.goto(f"/mlflow/#/experiments/{tracked['experiment_id']}/runs")
    page.get_by_text(tracked["run_name"]).first.wait_for()
    shot(page, "02-experiment-runs")

    page.goto(f"/mlflow/#/models/{tracked['model']}")
    page.get_by_text(f"Version {tracked['version']}").first.wait_for()
    shot(page, "03-registered-model")

    page.goto(f"/mlflow/#/models/{tracked['model']}/versions/{tracked['version']}")
    page.get_by_role("heading", name=f"Version {tracked['version']}").wait_for()
    page.get_by_text(tracked["run_name"]).first.wait_for()  # the source run, fetched through the session
    shot(page, "04-model-version")

    page.goto(f"/mlflow/#/experiments/{tracked['experiment_id']}/runs/{tracked['run_id']}/artifacts")
    page.get_by_text("notes.txt").first.click()
    first_line = Path(tracked["artifact"]).read_text().splitlines()[0]
    page.get_by_text(first_line).first.wait_for()  # the preview, read by the UI through get-artifact
    shot(page, "05-artifact-preview")
    with page.expect_download() as download:
        # MLflow 3.17's artifact view: the icon button beside the file name downloads it.
        page.locator('button[data-component-id*="artifactview"]').first.click()
    assert Path(download.value.path()).read_bytes() == Path(tracked["artifact"]).read_bytes()

    page.goto("/logout")
    page.get_by_role("main").get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login?**reason=signed_out**")
    assert page.get_by_text("You are signed out.").is_visible()
    shot(page, "06-signed-out")
    assert not [cookie for cookie in context.cookies() if cookie["name"] == "hokusai_session"]

    page.goto("/mlflow/")
    page.wait_for_url("**/login?**")
    # The old session id, replayed, opens nothing either.
    replayed: SetCookieParam = {
        "name": session["name"],
        "value": session["value"],
        "domain": session["domain"],
        "path": session["path"],
        "expires": session["expires"],
        "httpOnly": session["httpOnly"],
        "secure": session["secure"],
        "sameSite": session["sameSite"],
    }
    context.add_cookies([replayed])
    page.goto("/mlflow/")
    page.wait_for_url("**/login?**")


def test_a_revoked_key_ends_its_browser_session(context: BrowserContext, gateway: GatewayProcess) -> None:
    key = gateway.create_key(f"browser-revoked-{uuid.uuid4().hex[:6]}")
    page = context.new_page()
    # Signed in on the gateway's own page, and the session proven on MLflow's API with its cookie: a
    # page of the MLflow UI keeps sending requests, even after it is closed (seen: its cookie cleared
    # by a 401 after page.close()), and one that met the revocation first would end the session before
    # the page load this test watches, which then has no session left to explain.
    page.goto("/login?next=%2Fkeys")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/keys")
    api = gateway.url + "/mlflow/ajax-api/2.0/mlflow/experiments/search"
    assert context.request.get(api, params={"max_results": 10}).status == 200
    page.close()

    store = key_store(gateway.data_dir)
    try:
        store.revoke(keys.parse(key).key_id)
    finally:
        store.close()
    # The gateway sees the revocation within the key store's poll interval; asked with the key itself,
    # so that the session is not touched.
    eventually(
        lambda: requests.get(api, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 401,
        message="the gateway refuses the revoked key",
    )
    page = context.new_page()
    page.goto(DEFAULT_EXPERIMENT)
    page.wait_for_url("**/login?**")
    assert page.get_by_role("status").is_visible()  # says why the session ended
    shot(page, "07-revoked-key-session-ended")
    response = context.request.get(gateway.url + "/mlflow/ajax-api/2.0/mlflow/experiments/search")
    assert response.status == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Another origin on the same host (same site for cookies) serving a form aimed at the gateway."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>Win a prize</title>"
            f'<form method="post" action="{self.target}" enctype="text/plain">'
            '<input type="hidden" name=\'{"name":"csrf-victim","x":"\' value=\'"}\'>'
            '<button type="submit">Claim</button></form>'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def attacker_site(gateway: GatewayProcess) -> Iterator[str]:
    handler = type(
        "Attacker",
        (_AttackerPage,),
        {"target": gateway.url + "/mlflow/ajax-api/2.0/mlflow/experiments/create"},
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_a_cross_origin_post_with_the_session_cookie_is_refused(
    context: BrowserContext, gateway: GatewayProcess, api_key: str, attacker_site: str
) -> None:
    page = context.new_page()
    sign_in(page, api_key)
    # Another port on the same host is another origin but the same site: the Lax cookie goes along.
    page.goto(attacker_site)
    with page.expect_response(lambda response: "experiments/create" in response.url) as answer:
        page.get_by_role("button", name="Claim").click()
    response = answer.value
    assert response.status == 403  # not 401: the cookie was sent, and the origin check refused it
    assert response.json()["error_code"] == "PERMISSION_DENIED"
    shot(page, "08-cross-origin-post-refused")
    assert not experiment_named(api_key, gateway, "csrf-victim")
    # The same session still works from the gateway's own pages.
    created = context.request.post(
        gateway.url + "/mlflow/ajax-api/2.0/mlflow/experiments/search",
        data={"max_results": 1},
        headers={"Origin": gateway.url},
    )
    assert created.status == 200


def test_an_admin_creates_rotates_and_revokes_keys_in_the_browser(
    context: BrowserContext, gateway: GatewayProcess
) -> None:
    admin = gateway.create_key(f"browser-admin-{uuid.uuid4().hex[:6]}", admin=True)
    page = context.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security" in message.text else None,
    )
    sign_in(page, admin, start="/admin/keys")
    page.wait_for_url("**/admin/keys")
    page.get_by_role("heading", name="API keys").wait_for()
    shot(page, "09-admin-keys")

    name = f"made-in-browser-{uuid.uuid4().hex[:6]}"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Owner").fill("ada")
    page.get_by_label("Scope").select_option("read")
    page.get_by_label("Expires in").fill("30d")
    # A mistyped admin key: refused, the form comes back with what was typed, the key field empty.
    page.get_by_label("Your admin key").fill(keys.generate("live").text)
    page.get_by_role("button", name="Create key").click()
    assert "entered again" in page.get_by_role("alert").inner_text()
    assert page.get_by_label("Name", exact=True).input_value() == name
    assert page.get_by_label("Your admin key").input_value() == ""
    shot(page, "10-step-up-refused")
    page.get_by_label("Your admin key").fill(admin)
    page.get_by_role("button", name="Create key").click()
    created = page.get_by_label("API key").input_value()
    assert created.startswith("hk_live_")
    shot(page, "11-key-created-shown-once")
    assert experiments_answer(gateway, created) == 200

    page.goto("/admin/keys")
    assert created not in page.content()  # shown once, never again
    row = page.get_by_role("row").filter(has_text=name)
    assert "ada" in row.inner_text() and "read" in row.inner_text()
    row.get_by_role("link", name="Rotate").click()
    page.get_by_role("heading", name=f"Rotate key “{name}”").wait_for()
    page.get_by_label("Your admin key").fill(admin)
    shot(page, "12-rotate-confirm")
    page.get_by_role("button", name="Rotate key").click()
    successor = page.get_by_label("API key").input_value()
    assert successor.startswith("hk_live_") and successor != created
    assert page.get_by_text(f"Key {keys.parse(created).key_id} is revoked").is_visible()
    shot(page, "13-key-rotated-shown-once")
    assert experiments_answer(gateway, successor) == 200
    assert experiments_answer(gateway, created) == 401

    page.goto("/admin/keys")
    successor_id = keys.parse(successor).key_id
    row = page.get_by_role("row").filter(has_text=successor_id)
    row.get_by_role("link", name="Revoke").click()
    page.get_by_label("Your admin key").fill(admin)
    page.get_by_role("button", name="Revoke key").click()
    page.wait_for_url("**/admin/keys?revoked=*")
    assert "revoked" in page.get_by_role("row").filter(has_text=successor_id).inner_text()
    shot(page, "14-key-revoked")
    assert experiments_answer(gateway, successor) == 401
    assert violations == []


def experiments_answer(gateway: GatewayProcess, api_key: str) -> int:
    return requests.get(
        gateway.url + "/mlflow/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=10,
    ).status_code


# What a script injected into the MLflow UI would do with an admin's session: the UI is served from the
# gateway's origin, so its requests carry the cookie and pass the origin check. It reads a signed-in page
# for the CSRF token (by fetch, a window or a frame), then posts a key creation and a revocation.
STEAL_AND_MINT = """async ({name, victim}) => {
  const token = (text) => (text.match(/name="csrf" value="([^"]+)"/) || [])[1] || null;
  const found = {};
  const listing = await fetch("/admin/keys");
  found.fetch_status = listing.status;
  found.fetch_token = token(await listing.text());
  const opened = window.open("/admin/keys");
  await new Promise((done) => setTimeout(done, 3000));
  try { found.window_token = token(opened.document.documentElement.outerHTML); }
  catch (error) { found.window_token = null; }
  const frame = document.createElement("iframe");
  frame.src = "/logout";
  document.body.appendChild(frame);
  await new Promise((done) => setTimeout(done, 3000));
  try { found.frame_token = token(frame.contentDocument.documentElement.outerHTML); }
  catch (error) { found.frame_token = null; }
  const csrf = found.fetch_token || found.window_token || found.frame_token;
  if (csrf) {
    const made = await fetch("/admin/keys", {
      method: "POST", body: new URLSearchParams({csrf, name, scope: "admin"}),
    });
    found.create_status = made.status;
    found.minted = ((await made.text()).match(/id="new-key"[^>]*value="([^"]+)"/) || [])[1] || null;
    const revoked = await fetch(`/admin/keys/${victim}/revoke`, {
      method: "POST", body: new URLSearchParams({csrf}),
    });
    found.revoke_status = revoked.status;
  }
  return found;
}"""

# The same script with the CSRF token already in hand, as if it had leaked: it submits real forms (page
# navigations, not fetches) into a new window, with no admin key and with a guessed one.
SUBMIT_FORM = """({action, fields}) => {
  const form = document.createElement("form");
  form.method = "post";
  form.action = action;
  form.target = "_blank";
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = value;
    form.appendChild(input);
  }
  document.body.appendChild(form);
  form.submit();
}"""


def test_a_script_in_the_mlflow_ui_cannot_change_keys_with_an_admin_session(
    context: BrowserContext, gateway: GatewayProcess
) -> None:
    admin = gateway.create_key(f"browser-xss-admin-{uuid.uuid4().hex[:6]}", admin=True)
    victim = gateway.create_key(f"browser-xss-victim-{uuid.uuid4().hex[:6]}")
    victim_id = keys.parse(victim).key_id
    page = context.new_page()
    sign_in(page, admin)
    page.goto(DEFAULT_EXPERIMENT)
    page.get_by_text("Default").first.wait_for()  # the MLflow UI, signed in as an admin
    name = f"minted-by-script-{uuid.uuid4().hex[:6]}"

    found = page.evaluate(STEAL_AND_MINT, {"name": name, "victim": victim_id})
    shot(page, "15-script-in-mlflow-ui")
    # Before: {'fetch_status': 200, 'fetch_token': '<token>', 'create_status': 200, 'minted': 'hk_live_...'}.
    seen = {step: value for step, value in found.items() if step != "minted"}
    assert found.get("minted") is None, f"a script in the MLflow UI minted an admin key: {seen}"
    assert found["fetch_status"] == 403
    assert found["fetch_token"] is None and found["window_token"] is None and found["frame_token"] is None
    assert not key_exists(gateway, name)
    assert experiments_answer(gateway, victim) == 200

    # Even with the token: real form posts, as page navigations, need the admin key itself.
    session = next(cookie for cookie in context.cookies() if cookie["name"] == "hokusai_session")
    csrf = csrf_token(session["value"])
    attempts = [
        ("/admin/keys", {"csrf": csrf, "name": name, "scope": "admin"}),
        (
            "/admin/keys",
            {"csrf": csrf, "name": name, "scope": "admin", "admin_key": keys.generate("live").text},
        ),
        (f"/admin/keys/{victim_id}/revoke", {"csrf": csrf, "admin_key": ""}),
        (f"/admin/keys/{victim_id}/rotate", {"csrf": csrf}),
    ]
    for number, (action, fields) in enumerate(attempts):
        with context.expect_page() as opened:
            page.evaluate(SUBMIT_FORM, {"action": action, "fields": fields})
        answer = opened.value
        answer.wait_for_load_state()
        assert "entered again" in answer.get_by_role("alert").inner_text(), answer.content()
        assert answer.locator("#new-key").count() == 0
        shot(answer, f"16-step-up-refused-{number}")
        answer.close()
    assert not key_exists(gateway, name)
    assert experiments_answer(gateway, victim) == 200  # neither revoked nor rotated

    # Each refused step-up is an audit line naming the admin's key.
    admin_id = keys.parse(admin).key_id

    def step_up_failures() -> list[str] | None:
        lines = [
            line for line in gateway.log().splitlines() if '"step_up_failed"' in line and admin_id in line
        ]
        return lines if len(lines) >= len(attempts) else None

    eventually(step_up_failures, 10, 0.2, "an audit line per refused step-up")
    log = gateway.log()
    assert admin not in log and csrf not in log


def key_exists(gateway: GatewayProcess, name: str) -> bool:
    store = key_store(gateway.data_dir)
    try:
        return any(record.name == name for record in store.list())
    finally:
        store.close()
