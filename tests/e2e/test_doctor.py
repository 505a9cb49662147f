"""`hokusai-registry doctor` against real deployments, healthy and broken on purpose.

Each broken deployment is built for real (a second MLflow with other flags, a gateway in front of a closed
port, of itself, of a silent server, a front proxy with a body limit or an untrusted certificate, keys
revoked, read-only or expired, a name that does not resolve) and the doctor, run as users run it (a
subprocess with --json), must fail the right step and name the cause. Causes are matched on stable key
phrases, not whole sentences.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.tracking import MlflowClient

from hokusai_registry.run.mlflow_process import mlflow_command
from hokusai_registry.settings import Settings
from tests.e2e.conftest import without_serve_artifacts
from tests.helpers import (
    HOKUSAI,
    FrontProxy,
    GatewayProcess,
    TcpServer,
    free_port,
    key_store,
    running_mlflow,
    running_mlflows,
    signed,
)

STEPS = ["reach", "auth", "permissions", "tracking", "artifacts", "registry", "cleanup"]
CREDENTIALS = (
    "HOKUSAI_API_KEY",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


@dataclass
class Checkup:
    """One doctor run: exit code, its JSON document, and everything it printed."""

    code: int
    document: dict[str, Any]
    printed: str

    def step(self, name: str) -> dict[str, Any]:
        return next(step for step in self.document["steps"] if step["name"] == name)

    def statuses(self) -> dict[str, str]:
        return {step["name"]: step["status"] for step in self.document["steps"]}

    def cause(self, name: str) -> str:
        diagnosis = self.step(name)["diagnosis"]
        assert diagnosis is not None, f"step {name} has no diagnosis: {self.step(name)}"
        return str(diagnosis["cause"])

    def next_check(self, name: str) -> str:
        return str(self.step(name)["diagnosis"]["next_check"])


def run_doctor(url: str, key: str, *args: str, key_from: str = "--api-key") -> Checkup:
    """The doctor as a subprocess with --json; the key from the option or the named variable. Checks what
    holds for every run: the key is never printed, and the exit code agrees with `passed`."""
    env = {name: value for name, value in os.environ.items() if name not in CREDENTIALS}
    command = [HOKUSAI, "doctor", "--url", url, "--json", *args]
    if key_from == "--api-key":
        command += ["--api-key", key]
    else:
        env[key_from] = key
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    printed = done.stdout + done.stderr
    assert_no_key(printed, key)
    assert "Traceback" not in printed, printed
    document = json.loads(done.stdout)
    assert done.returncode == (0 if document["passed"] else 1), printed
    return Checkup(done.returncode, document, printed)


def assert_no_key(text: str, key: str) -> None:
    secret = key.rsplit("_", 1)[-1]
    assert key not in text and secret not in text


def assert_fails_at(checkup: Checkup, failed: str) -> None:
    """`failed` is the first failing step; steps after reach, auth or tracking are skipped; exit code 1."""
    assert checkup.code == 1 and checkup.document["passed"] is False
    statuses = checkup.statuses()
    assert next(name for name, status in statuses.items() if status == "fail") == failed, statuses
    if failed in ("reach", "auth", "tracking"):
        after = STEPS[STEPS.index(failed) + 1 : -1]
        assert all(statuses[name] == "skip" for name in after), statuses


@contextlib.contextmanager
def gateway_in_front_of(upstream: str, data_dir: Path, **kwargs: Any) -> Iterator[GatewayProcess]:
    process = GatewayProcess(upstream, data_dir, **kwargs)
    try:
        yield process
    finally:
        process.stop()


def doctor_through_new_gateway(upstream: str, data_dir: Path, **kwargs: Any) -> Checkup:
    with gateway_in_front_of(upstream, data_dir, **kwargs) as process:
        return run_doctor(process.url + "/mlflow", process.create_key("doctor"))


@contextlib.contextmanager
def mlflow_with(data_dir: Path, change: Callable[[list[str]], None], **settings: Any) -> Iterator[str]:
    """Another real MLflow, started as `serve` starts it but with `change` applied to its command."""
    port = free_port()
    command = mlflow_command(Settings.load(data_dir=data_dir, mlflow_workers=1, **settings), port)
    change(command)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # a faster start
        with running_mlflow(command, data_dir, port) as url:
            yield url


# -- healthy


def created_names(checkup: Checkup) -> tuple[str, str, str]:
    """The experiment id, run id and model name the doctor reported creating."""
    tracking = re.search(r"experiment (\S+), run (\w+);", checkup.step("tracking")["detail"])
    registry = re.search(r"model (hokusai-doctor-\S+) version", checkup.step("registry")["detail"])
    assert tracking and registry, checkup.document
    return tracking.group(1), tracking.group(2), registry.group(1)


def assert_nothing_left(tracking_uri: str, checkup: Checkup) -> None:
    experiment_id, run_id, name = created_names(checkup)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert client.search_experiments(filter_string=f"name = '{name}'") == []  # active ones
    assert client.search_experiments(filter_string="name LIKE 'hokusai-doctor-%'") == []
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert list(client.search_registered_models(filter_string=f"name = '{name}'")) == []
    assert list(client.search_model_versions(f"name = '{name}'")) == []


def assert_report(report: str, url: str, checkup: Checkup, dates: set[str]) -> None:
    assert report.startswith("# Hokusai Registry doctor report: PASSED")
    assert f"- **Target:** {url}\n" in report
    date = re.search(r"- \*\*Date:\*\* (\d{4}-\d{2}-\d{2}) \d{2}:\d{2}:\d{2} UTC", report)
    assert date and date.group(1) in dates
    assert "| # | Step | Result | Time | Detail |" in report
    for index, step in enumerate(checkup.document["steps"], 1):
        assert re.search(
            rf"^\| {index} \| {re.escape(step['title'])} \| ✅ pass \| [\d.]+ s \| ", report, re.M
        )
    for name, value in checkup.document["versions"].items():
        assert f"- **{name}:** {value}\n" in report
    assert {"mlflow (server)", "gateway (server)", "mlflow client", "python"} <= set(
        checkup.document["versions"]
    )
    assert "## Diagnosis" not in report


@pytest.mark.parametrize(
    ("mount", "key_from"),
    [("/mlflow", "--api-key"), ("/api/mlflow", "HOKUSAI_API_KEY"), ("", "MLFLOW_TRACKING_TOKEN")],
    ids=["mlflow", "api-mlflow", "bare"],
)
def test_healthy_deployment_passes_and_leaves_nothing_behind(
    mount: str, key_from: str, gateway: GatewayProcess, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    key = gateway.create_key(f"doctor-{key_from}")
    url = gateway.url + mount
    extra = ["--report", str(tmp_path / "report.md"), "--large", "20MB"] if mount == "/mlflow" else []
    dates = {f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"}
    checkup = run_doctor(url, key, *extra, key_from=key_from)
    dates.add(f"{dt.datetime.now(dt.UTC):%Y-%m-%d}")

    expected = STEPS[:5] + (["large"] if extra else []) + STEPS[5:]
    assert [step["name"] for step in checkup.document["steps"]] == expected
    assert checkup.statuses() == dict.fromkeys(expected, "pass"), checkup.printed
    assert checkup.code == 0 and checkup.document["passed"] is True
    assert all(step["diagnosis"] is None for step in checkup.document["steps"])
    assert checkup.document["versions"]["mlflow (server)"] == checkup.document["versions"]["mlflow client"]
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    assert_nothing_left(gateway.url + "/mlflow", checkup)
    permissions = checkup.step("permissions")["detail"]
    assert "MLflow refuses requests the gateway did not sign" in permissions
    assert re.search(rf"doctor-{key_from} holds MANAGE on experiment \d+ it created", permissions)
    if extra:
        assert "20 MB up and down" in checkup.step("large")["detail"]
        report = (tmp_path / "report.md").read_text(encoding="utf-8")
        assert_no_key(report, key)
        assert_report(report, url, checkup, dates)


# -- MLflow without --serve-artifacts


@pytest.fixture(scope="module")
def other_mlflows(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two more real MLflows, started side by side: --no-serve-artifacts with `mlflow-artifacts:/` as
    default root, and one that allows only another host name."""
    servers = {}
    for name, default_root, settings in (
        ("no-artifacts-proxied", "mlflow-artifacts:/", {}),
        ("allowed-hosts", None, {"mlflow_allowed_hosts": "somewhere.else"}),
    ):
        data_dir, port = tmp_path_factory.mktemp(name), free_port()
        command = mlflow_command(Settings.load(data_dir=data_dir, mlflow_workers=1, **settings), port)
        if default_root is not None:
            command = without_serve_artifacts(command, default_root)
        servers[name] = (command, data_dir, port)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # a faster start
        with running_mlflows(servers) as urls:
            yield urls


@pytest.fixture(scope="module")
def without_artifacts_local_root(
    mlflow_without_artifacts: str, tmp_path_factory: pytest.TempPathFactory
) -> Checkup:
    """--no-serve-artifacts with a plain directory as default root: new experiments get a local path."""
    return doctor_through_new_gateway(mlflow_without_artifacts, tmp_path_factory.mktemp("no-artifacts-local"))


@pytest.fixture(scope="module")
def without_artifacts_proxied_root(
    other_mlflows: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Checkup:
    """--no-serve-artifacts but `mlflow-artifacts:/` as default root: tracking works, artifacts do not."""
    gateway_dir = tmp_path_factory.mktemp("no-artifacts-proxied-gateway")
    return doctor_through_new_gateway(other_mlflows["no-artifacts-proxied"], gateway_dir)


def test_no_serve_artifacts_with_a_local_root_fails_tracking_on_the_artifact_location(
    without_artifacts_local_root: Checkup,
) -> None:
    checkup = without_artifacts_local_root
    assert_fails_at(checkup, "tracking")
    assert "artifact location" in checkup.cause("tracking")
    assert "around the gateway" in checkup.cause("tracking")
    assert "start MLflow with --serve-artifacts" in checkup.next_check("tracking")
    # The detailed health already told: the first step warns with the flag's name.
    assert checkup.step("reach")["status"] == "warn"
    assert "runs without --serve-artifacts" in checkup.cause("reach")


def test_no_serve_artifacts_is_seen_by_the_first_step(without_artifacts_proxied_root: Checkup) -> None:
    checkup = without_artifacts_proxied_root
    assert checkup.code == 1
    assert checkup.statuses()["tracking"] == "pass"
    assert checkup.step("reach")["status"] == "warn"
    assert "runs without --serve-artifacts" in checkup.cause("reach")


def test_no_serve_artifacts_fails_the_artifacts_step_naming_the_flag(
    without_artifacts_proxied_root: Checkup,
) -> None:
    checkup = without_artifacts_proxied_root
    assert_fails_at(checkup, "artifacts")
    assert any("503" in line for line in checkup.step("artifacts")["evidence"])
    assert "runs without --serve-artifacts" in checkup.cause("artifacts")
    assert "start MLflow with --serve-artifacts" in checkup.next_check("artifacts")


def test_no_serve_artifacts_does_not_mislead_the_registry_step(
    without_artifacts_proxied_root: Checkup,
) -> None:
    registry = without_artifacts_proxied_root.step("registry")
    assert registry["status"] == "skip" and "Artifacts" in registry["detail"]


def test_mlflow_rejecting_the_gateways_host_header_is_named_allowed_hosts(
    other_mlflows: dict[str, str], tmp_path: Path
) -> None:
    checkup = doctor_through_new_gateway(other_mlflows["allowed-hosts"], tmp_path)
    assert_fails_at(checkup, "auth")
    assert "allowed-hosts" in checkup.cause("auth")
    assert "--allowed-hosts" in checkup.next_check("auth")
    assert any("Invalid Host header" in line for line in checkup.step("auth")["evidence"])


# -- permissions


def test_an_mlflow_that_does_not_enforce_permissions_fails_the_permissions_step_only(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data_dir = tmp_path_factory.mktemp("no-permissions")
    with mlflow_with(data_dir, lambda command: None, permissions=False) as url:
        checkup = doctor_through_new_gateway(url, data_dir / "gateway")
    statuses = checkup.statuses()
    assert statuses["permissions"] == "fail" and checkup.code == 1, statuses
    assert {statuses[name] for name in ("auth", "tracking", "artifacts", "registry", "cleanup")} == {"pass"}
    assert "does not enforce permissions" in checkup.cause("permissions")
    assert "anyone who reaches its address can act as anyone" in checkup.cause("permissions")
    assert "hokusai-registry mlflow" in checkup.next_check("permissions")


def test_a_gateway_signing_with_another_secret_is_named_the_secret(
    mlflow_server: str, tmp_path: Path
) -> None:
    other = {"HOKUSAI_MLFLOW_ASSERTION_SECRET": "not-the-secret-mlflow-holds-0123456789"}
    checkup = doctor_through_new_gateway(mlflow_server, tmp_path, env=other)
    assert_fails_at(checkup, "auth")
    assert "different assertion secrets" in checkup.cause("auth")
    assert "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE" in checkup.next_check("auth")
    assert other["HOKUSAI_MLFLOW_ASSERTION_SECRET"] not in checkup.printed


def grant(mlflow_server: str, action: str, body: dict[str, str]) -> None:
    path = f"/api/3.0/mlflow/users/permissions/{action}"
    data = json.dumps(body).encode()
    headers = {**signed("POST", path, body=data), "Content-Type": "application/json"}
    answer = requests.post(mlflow_server + path, data=data, headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text


def test_an_owner_mlflow_refuses_is_named_with_how_to_get_a_grant(
    gateway: GatewayProcess, mlflow_server: str
) -> None:
    key = key_with(gateway, "doctor-denied", scopes=("read", "write"))
    # The owner's first request makes it an MLflow user; then a DENY on every experiment.
    search = gateway.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(search, headers={"Authorization": f"Bearer {key}"}, timeout=10).status_code == 200
    denied = {"username": "doctor-denied", "resource_type": "experiment", "resource_id": "*"}
    grant(mlflow_server, "grant", {**denied, "permission": "DENY"})
    try:
        checkup = run_doctor(gateway.url + "/mlflow", key)
    finally:
        grant(mlflow_server, "revoke", denied)
    assert checkup.statuses()["permissions"] == "fail"
    assert checkup.cause("permissions").startswith("MLflow's permissions refuse this owner: doctor-denied")
    assert "grants add" in checkup.next_check("permissions")


# -- the gateway's upstream


def test_upstream_on_a_closed_port_is_named_with_its_address(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    checkup = doctor_through_new_gateway(dead, tmp_path)
    assert_fails_at(checkup, "auth")
    assert f"cannot reach MLflow at {dead}" in checkup.cause("auth")
    assert "MLFLOW_SERVER_URL" in checkup.next_check("auth")


def test_upstream_that_loops_back_to_the_gateway_is_named(tmp_path: Path) -> None:
    balancer = TcpServer()  # a load balancer sending the gateway's traffic back to it
    try:
        with gateway_in_front_of(balancer.url, tmp_path) as process:
            balancer.relay_to = process.port
            checkup = run_doctor(process.url + "/mlflow", process.create_key("doctor"))
    finally:
        balancer.stop()
    assert_fails_at(checkup, "auth")
    assert "MLFLOW_SERVER_URL points back at the gateway" in checkup.cause("auth")
    assert any("508" in line for line in checkup.step("auth")["evidence"])


def test_silent_upstream_is_named_as_the_read_timeout(tmp_path: Path) -> None:
    silent = TcpServer()  # accepts, never answers
    try:
        checkup = doctor_through_new_gateway(silent.url, tmp_path, env={"HOKUSAI_UPSTREAM_READ_TIMEOUT": "1"})
    finally:
        silent.stop()
    assert_fails_at(checkup, "auth")
    assert "MLflow timed out" in checkup.cause("auth") and "read timeout" in checkup.cause("auth")
    assert "HOKUSAI_UPSTREAM_READ_TIMEOUT" in checkup.next_check("auth")
    assert any("504" in line for line in checkup.step("auth")["evidence"])


# -- keys


def key_with(
    gateway: GatewayProcess, name: str, *, scopes: tuple[str, ...], revoked: bool = False, **kwargs: Any
) -> str:
    store = key_store(gateway.data_dir)
    try:
        record, key = store.create(name, environment="live", scopes=scopes, **kwargs)
        if revoked:
            store.revoke(record.key_id)
    finally:
        store.close()
    return key


def test_revoked_key_is_named(gateway: GatewayProcess) -> None:
    checkup = run_doctor(
        gateway.url + "/mlflow", key_with(gateway, "doctor-revoked", scopes=("read", "write"), revoked=True)
    )
    assert_fails_at(checkup, "auth")
    assert "the key was revoked" in checkup.cause("auth")


def test_expired_key_is_named(gateway: GatewayProcess) -> None:
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    checkup = run_doctor(
        gateway.url + "/mlflow",
        key_with(gateway, "doctor-expired", scopes=("read", "write"), expires_at=yesterday),
    )
    assert_fails_at(checkup, "auth")
    assert "the key has expired" in checkup.cause("auth")


def test_read_only_key_is_named_with_the_scope_it_lacks(gateway: GatewayProcess) -> None:
    checkup = run_doctor(gateway.url + "/mlflow", key_with(gateway, "doctor-read", scopes=("read",)))
    assert checkup.statuses()["auth"] == "pass"  # reading works
    assert_fails_at(checkup, "tracking")
    assert "lacks the 'write' scope" in checkup.cause("tracking")
    assert "--scope write" in checkup.next_check("tracking")


# -- in front of the gateway, and no gateway at all


def test_front_proxy_body_limit_fails_the_large_step_only(
    gateway: GatewayProcess, client_env: pytest.MonkeyPatch
) -> None:
    proxy = FrontProxy(gateway.url, body_limit=1_000_000)
    try:
        key = gateway.create_key("doctor-proxy")
        checkup = run_doctor(proxy.url + "/mlflow", key, "--large", "5MB")
    finally:
        proxy.stop()
    assert proxy.refused >= 1
    assert_fails_at(checkup, "large")
    assert checkup.statuses() == {name: "pass" for name in STEPS} | {"large": "fail"}, checkup.printed
    assert "proxy or load balancer in front of the gateway" in checkup.cause("large")
    assert "limits request bodies (413" in checkup.cause("large")
    assert any("413" in line and "from gateway" not in line for line in checkup.step("large")["evidence"])
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    assert_nothing_left(gateway.url + "/mlflow", checkup)


def test_host_name_that_does_not_resolve_is_named_dns() -> None:
    checkup = run_doctor("http://nonexistent.invalid/mlflow", "hk_live_notakey")
    assert_fails_at(checkup, "reach")
    assert checkup.cause("reach").startswith("DNS failed") and "nonexistent.invalid" in checkup.cause("reach")


def test_closed_gateway_port_is_named_connection_refused() -> None:
    port = free_port()
    checkup = run_doctor(f"http://127.0.0.1:{port}/mlflow", "hk_live_notakey")
    assert_fails_at(checkup, "reach")
    assert checkup.cause("reach").startswith("TCP failed")
    assert f"127.0.0.1:{port}" in checkup.cause("reach") and "refused" in checkup.cause("reach")


def self_signed_tls(directory: Path) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1, which no client trusts."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


def test_untrusted_certificate_is_named_a_certificate_problem(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    front = FrontProxy(gateway.url, tls=self_signed_tls(tmp_path))
    try:
        checkup = run_doctor(front.url + "/mlflow", "hk_live_notakey")
    finally:
        front.stop()
    assert_fails_at(checkup, "reach")
    assert checkup.cause("reach").startswith("TLS failed: certificate problem")
    assert "self-signed certificate" in checkup.cause("reach")
    assert "certificate" in checkup.next_check("reach")


@pytest.fixture(scope="module")
def https_to_plain_http(gateway: GatewayProcess) -> Checkup:
    """https:// to the gateway's plain-HTTP port: the most common TLS failure, and no certificate involved."""
    return run_doctor(gateway.url.replace("http://", "https://", 1) + "/mlflow", "hk_live_notakey")


def test_https_to_a_plain_http_port_is_named_tls(https_to_plain_http: Checkup) -> None:
    assert_fails_at(https_to_plain_http, "reach")
    assert https_to_plain_http.cause("reach").startswith("TLS failed")
    assert "wrong version number" in https_to_plain_http.cause("reach")


def test_https_to_a_plain_http_port_suggests_http(https_to_plain_http: Checkup) -> None:
    assert "http://" in https_to_plain_http.next_check("reach")
