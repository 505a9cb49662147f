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

from hokusai_registry.policy import keys
from tests.helpers import GatewayProcess, free_port, key_store

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
    sign_in(page, key)
    page.goto("/mlflow/#/experiments")
    page.get_by_text("Default").first.wait_for()

    store = key_store(gateway.data_dir)
    try:
        store.revoke(keys.parse(key).key_id)
    finally:
        store.close()
    page.reload()
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


def test_an_admin_creates_and_revokes_a_key_in_the_browser(
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
    page.get_by_role("button", name="Create key").click()
    created = page.get_by_label("API key").input_value()
    assert created.startswith("hk_live_")
    shot(page, "10-key-created-shown-once")
    search = requests.get(
        gateway.url + "/mlflow/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers={"Authorization": f"Bearer {created}"},
        timeout=10,
    )
    assert search.status_code == 200

    page.goto("/admin/keys")
    assert created not in page.content()  # shown once, never again
    row = page.get_by_role("row").filter(has_text=name)
    assert "ada" in row.inner_text() and "read" in row.inner_text()
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_url("**/admin/keys?revoked=*")
    assert "revoked" in page.get_by_role("row").filter(has_text=name).inner_text()
    shot(page, "11-key-revoked")
    revoked = requests.get(
        gateway.url + "/mlflow/api/2.0/mlflow/experiments/search",
        headers={"Authorization": f"Bearer {created}"},
        timeout=10,
    )
    assert revoked.status_code == 401
    assert violations == []
