"""Older MLflow clients register, alias, load and predict through the gateway against the pinned 3.17.2
server. Each client lives in its own environment under .venv/compat/, made by `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import GatewayProcess

COMPAT = Path(sys.prefix) / "compat"
VERSIONS = ("2.9.2", "2.22.5")  # the oldest supported and the newest 2.x; keep in step with the Makefile
FLOW = Path(__file__).with_name("compat_flow.py")


@pytest.mark.parametrize("version", VERSIONS)
def test_older_client_registers_and_loads_a_model(gateway: GatewayProcess, version: str) -> None:
    python = COMPAT / f"mlflow-{version}" / "bin" / "python"
    if not python.exists():
        pytest.skip(f"no MLflow {version} client environment at {python.parent.parent}: run `make test`")
    key = gateway.create_key(f"compat-{version}")
    clean = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    result = subprocess.run(
        [str(python), str(FLOW), f"compat-{version.replace('.', '-')}"],
        env={**clean, "MLFLOW_TRACKING_URI": gateway.url + "/mlflow", "MLFLOW_TRACKING_TOKEN": key},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    done = json.loads(result.stdout.strip().splitlines()[-1])
    assert done == {
        "mlflow": version,
        "logged": True,
        "alias": True,
        "predictions_match": True,
        "artifact_matches": True,
    }
