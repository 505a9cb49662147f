"""`make run` from a clean clone: it installs itself, prints export lines that work with the MLflow
client, and Ctrl-C stops the gateway and every MLflow process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import Running, free_port, processes_using

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import mlflow
mlflow.set_experiment("from-export-lines")
with mlflow.start_run() as run:
    mlflow.log_metric("m", 1.0)
    open("note.txt", "w").write("hi")
    mlflow.log_artifact("note.txt")
print("RUNS", len(mlflow.search_runs()))
print("FILES", [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)])
"""


@pytest.mark.slow
def test_make_run_from_a_clean_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout, so there is nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    data_dir = tmp_path / "data"
    port = free_port()
    env = {"HOKUSAI_PORT": str(port), "HOKUSAI_DATA_DIR": str(data_dir), "HOKUSAI_MLFLOW_WORKERS": "1"}
    fresh_shell = ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONDONTWRITEBYTECODE")
    # pip compiles every module it installs (40 s of a 70 s install); without, the modules that run are
    # compiled when first imported. pip reads a false PIP_NO_COMPILE as --no-compile.
    env.update(dict.fromkeys(fresh_shell, ""), PIP_NO_COMPILE="0")
    make = Running(["make", "run"], env, cwd=clone, new_session=True)
    try:
        # Creating .venv and installing MLflow, then MLflow's own start.
        make.wait_for("export MLFLOW_TRACKING_TOKEN=", timeout=900)
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1)
            for line in make.seen
            if line.strip().startswith("export ")
        )
        assert exports["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{port}/mlflow"
        assert exports["MLFLOW_TRACKING_TOKEN"].startswith("hk_live_")
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING")}
        result = subprocess.run(
            [sys.executable, "-c", CLIENT],
            cwd=tmp_path,
            env={**client_env, **exports},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert "RUNS 1" in result.stdout and "FILES ['note.txt']" in result.stdout
        assert processes_using(data_dir), "MLflow should be running from the data directory"
    finally:
        make.terminate(signal.SIGINT, group=True)
    assert "Stopped." in "".join(make.seen)
    assert processes_using(data_dir) == []
