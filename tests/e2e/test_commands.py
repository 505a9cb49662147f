"""`serve` and `mlflow` as users run them: real processes, real signals; and the passphrase `serve` keeps
for MLflow's secrets."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from hokusai_registry.run.mlflow_process import mlflow_command
from hokusai_registry.settings import Settings
from tests.helpers import HOKUSAI, Running, free_port, key_store, processes_using, signed
from tests.support.stub import ThreadedStub


def test_mlflow_command_flags(tmp_path: Path) -> None:
    command = mlflow_command(
        Settings.load(data_dir=tmp_path, mlflow_allowed_hosts="mlflow.local,mlflow.local:*"), 5001
    )
    assert command[1:4] == ["server", "--host", "127.0.0.1"]
    assert "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1] == str(tmp_path.resolve() / "artifacts")
    assert (
        command[command.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    )
    assert command[command.index("--allowed-hosts") + 1] == "mlflow.local,mlflow.local:*"
    assert "--static-prefix" not in command and "--default-artifact-root" not in command


SECRETS_CONFIG = "/mlflow/ajax-api/3.0/mlflow/gateway/secrets/config"


@dataclass
class ServeRun:
    """One `serve` from start to SIGTERM on a data directory: what it printed, what MLflow answered
    through it, the command lines of its children, how it ended, and the passphrase file afterwards."""

    output: str
    token: str
    version_ok: bool
    secrets_config: dict[str, Any]
    command_lines: list[str]
    exit_code: int
    left_running: list[psutil.Process]
    passphrase: str
    teams: subprocess.CompletedProcess[str]  # `teams list --json` on the data directory, while it ran
    address_file_left: bool  # DATA_DIR/mlflow-url after the stop


def serve_once(data_dir: Path, port: int, token: str | None) -> ServeRun:
    """`serve` started, asked with `token` (or the admin key a first start prints), and stopped."""
    env = {
        "HOKUSAI_DATA_DIR": str(data_dir),
        "HOKUSAI_PORT": str(port),
        "HOKUSAI_MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": "",  # not inherited from whoever runs the tests
    }
    running = Running([HOKUSAI, "serve"], env)
    try:
        running.wait_for("Press Ctrl-C to stop.")
        if token is None:
            token = next(
                line.split("=", 1)[1].strip() for line in running.seen if "MLFLOW_TRACKING_TOKEN=" in line
            )
        url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}
        version_ok = requests.get(url + "/mlflow/version", headers=auth, timeout=10).ok
        answer = requests.get(url + SECRETS_CONFIG, headers=auth, timeout=30)
        assert answer.status_code == 200, answer.text
        command_lines = [
            " ".join(child.cmdline())
            for child in psutil.Process(running.process.pid).children(recursive=True)
        ]
        # Teams and grants on serve's data directory find its MLflow without flags (DATA_DIR/mlflow-url).
        teams = subprocess.run(
            [HOKUSAI, "teams", "list", "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        exit_code = running.terminate()
    return ServeRun(
        output="".join(running.seen),
        token=token,
        version_ok=version_ok,
        secrets_config=answer.json(),
        command_lines=command_lines,
        exit_code=exit_code,
        left_running=processes_using(data_dir),
        passphrase=(data_dir / "mlflow-kek-passphrase").read_text().strip(),
        teams=teams,
        address_file_left=(data_dir / "mlflow-url").exists(),
    )


@pytest.fixture(scope="module")
def serve_twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ServeRun, ServeRun]:
    """A first `serve` on a new data directory and a later one on the same (each start costs an MLflow
    start: the tests below share these two)."""
    data_dir = tmp_path_factory.mktemp("serve") / "data"
    port = free_port()
    first = serve_once(data_dir, port, None)
    return data_dir, first, serve_once(data_dir, port, first.token)


def test_serve_first_and_later_start_and_sigterm(serve_twice: tuple[Path, ServeRun, ServeRun]) -> None:
    _, first, later = serve_twice
    assert "First start: an admin key was created" in first.output
    assert first.token.startswith("hk_live_") and first.version_ok
    assert first.exit_code == 0 and "Stopped." in first.output
    assert first.left_running == []
    assert first.teams.returncode == 0 and json.loads(first.teams.stdout) == [], first.teams.stderr
    assert not first.address_file_left

    assert "hk_live_" not in later.output
    assert "hokusai-registry keys create --name NAME" in later.output
    assert later.version_ok  # the key from the first start still works
    assert later.exit_code == 0 and later.left_running == []


def test_serve_gives_mlflow_a_kept_passphrase_of_its_own(
    serve_twice: tuple[Path, ServeRun, ServeRun],
) -> None:
    """MLflow's AI-gateway secrets are encrypted with a passphrase of this installation, not MLflow's
    default one. Without MLFLOW_CRYPTO_KEK_PASSPHRASE, MLflow 3.17 encrypts the secrets it keeps (LLM
    provider keys) with a passphrase every MLflow installation shares, and `/gateway/secrets/config` tells
    any read key so. `serve` creates one in the data directory (mode 0600) on the first start, reuses it
    on later ones, and hands it to MLflow in its environment only."""
    data_dir, first, later = serve_twice
    assert first.secrets_config == {"secrets_available": True, "using_default_passphrase": False}
    assert len(first.passphrase) >= 32
    kept = data_dir / "mlflow-kek-passphrase"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    assert later.secrets_config["using_default_passphrase"] is False
    assert later.passphrase == first.passphrase  # reused, not replaced: old secrets stay readable
    # In MLflow's environment only: never on a command line, in serve's output or in MLflow's log.
    mlflow_log = (data_dir / "mlflow.log").read_text(errors="replace")
    for seen in (*first.command_lines, first.output, *later.command_lines, later.output, mlflow_log):
        assert first.passphrase not in seen


def test_serve_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        result = subprocess.run(
            [HOKUSAI, "serve", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in result.stderr


@pytest.mark.slow
def test_mlflow_command_serves_artifacts(tmp_path: Path) -> None:
    port = free_port()
    running = Running(
        [HOKUSAI, "mlflow", "--port", str(port), "--data-dir", str(tmp_path)], {"HOKUSAI_MLFLOW_WORKERS": "1"}
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).text == "OK":
                    break
            except requests.RequestException:  # not listening yet, or still starting
                pass
            assert running.process.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        target = "/api/2.0/mlflow-artifacts/artifacts"
        listing = requests.get(f"http://127.0.0.1:{port}{target}", headers=signed("GET", target), timeout=10)
        assert listing.status_code == 200 and listing.headers["content-type"].startswith("application/json")
        # With permissions on (the default), what no gateway signed is refused.
        assert requests.get(f"http://127.0.0.1:{port}{target}", timeout=10).status_code == 401
    finally:
        assert running.terminate() == 0
    assert processes_using(tmp_path) == []


def test_gateway_with_two_workers_serves_and_stops_cleanly(tmp_path: Path) -> None:
    upstream = ThreadedStub()
    store = key_store(tmp_path)
    _, key = store.create("w", environment="live", scopes=("read", "write"))
    store.close()
    port = free_port()
    running = Running(
        [
            HOKUSAI,
            "gateway",
            "--mlflow-url",
            upstream.url,
            "--port",
            str(port),
            "--workers",
            "2",
            "--data-dir",
            str(tmp_path),
        ],
        {},
    )
    try:
        running.wait_for("2 worker processes")
        url = f"http://127.0.0.1:{port}/mlflow/api/2.0/mlflow/experiments/search"
        deadline = time.monotonic() + 30
        while True:
            try:
                statuses = {
                    requests.get(url, headers={"X-API-Key": key}, timeout=5).status_code for _ in range(20)
                }
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert statuses == {200}
        workers = psutil.Process(running.process.pid).children()
        assert len(workers) == 2
    finally:
        assert running.terminate() == 0
        upstream.stop()
    assert not any(worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE for worker in workers)
