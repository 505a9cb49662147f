"""`serve` and `mlflow` as users run them: real processes, real signals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

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


def test_serve_first_and_later_start_and_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"HOKUSAI_DATA_DIR": str(data_dir), "HOKUSAI_PORT": str(free_port()), "HOKUSAI_MLFLOW_WORKERS": "1"}

    first = Running([HOKUSAI, "serve"], env)
    first.wait_for("Press Ctrl-C to stop.")
    output = "".join(first.seen)
    assert "First start: an admin key was created" in output
    token = next(line.split("=", 1)[1].strip() for line in first.seen if "MLFLOW_TRACKING_TOKEN=" in line)
    url = f"http://127.0.0.1:{env['HOKUSAI_PORT']}"
    assert requests.get(url + "/mlflow/version", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    # Teams and grants on serve's data directory find its MLflow without flags (DATA_DIR/mlflow-url).
    teams = subprocess.run(
        [HOKUSAI, "teams", "list", "--json"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert teams.returncode == 0 and json.loads(teams.stdout) == [], teams.stderr
    assert first.terminate() == 0
    assert "Stopped." in "".join(first.seen)
    assert processes_using(data_dir) == []
    assert not (data_dir / "mlflow-url").exists()

    later = Running([HOKUSAI, "serve"], env)
    later.wait_for("Press Ctrl-C to stop.")
    output = "".join(later.seen)
    assert "hk_live_" not in output
    assert "hokusai-registry keys create --name NAME" in output
    # The key from the first start still works.
    assert requests.get(url + "/mlflow/version", headers={"Authorization": f"Bearer {token}"}, timeout=10).ok
    assert later.terminate() == 0
    assert processes_using(data_dir) == []


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
