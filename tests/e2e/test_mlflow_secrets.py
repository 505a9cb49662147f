"""MLflow's AI-gateway secrets are encrypted with a passphrase of this installation, not MLflow's default one.

Without MLFLOW_CRYPTO_KEK_PASSPHRASE, MLflow 3.17 encrypts the secrets it keeps (LLM provider keys) with a
passphrase every MLflow installation shares, and `/gateway/secrets/config` tells any read key so. `serve`
creates one in the data directory (mode 0600) on the first start, reuses it on later ones, and hands it to
MLflow in its environment only.
"""

from __future__ import annotations

import stat
from pathlib import Path

import psutil
import requests

from tests.helpers import HOKUSAI, Running, free_port, processes_using

SECRETS_CONFIG = "/mlflow/ajax-api/3.0/mlflow/gateway/secrets/config"


def _serve_once(data_dir: Path, port: int, token: str | None) -> tuple[str, dict[str, object], list[str]]:
    """One `serve` start to stop: the admin key (printed on the first start), MLflow's answer to
    secrets/config through the gateway, and the command lines of MLflow's processes."""
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
        answer = requests.get(
            f"http://127.0.0.1:{port}{SECRETS_CONFIG}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        command_lines = [
            " ".join(child.cmdline())
            for child in psutil.Process(running.process.pid).children(recursive=True)
        ]
    finally:
        assert running.terminate() == 0
    assert processes_using(data_dir) == []
    return token, answer.json(), [*command_lines, "".join(running.seen)]


def test_serve_gives_mlflow_a_kept_passphrase_of_its_own(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    token, config, first_seen = _serve_once(data_dir, port, None)
    assert config == {"secrets_available": True, "using_default_passphrase": False}
    kept = data_dir / "mlflow-kek-passphrase"
    passphrase = kept.read_text().strip()
    assert len(passphrase) >= 32
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    _, config, later_seen = _serve_once(data_dir, port, token)
    assert config["using_default_passphrase"] is False
    assert kept.read_text().strip() == passphrase  # reused, not replaced: old secrets stay readable
    # In MLflow's environment only: never on a command line, in serve's output or in MLflow's log.
    for seen in (*first_seen, *later_seen, (data_dir / "mlflow.log").read_text(errors="replace")):
        assert passphrase not in seen
