"""`make run` from a clean clone: it installs itself, prints export lines that work with the MLflow
client, and Ctrl-C stops the gateway and every MLflow process."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]

CLIENT = """
import os, mlflow
mlflow.set_experiment("from-export-lines")
with mlflow.start_run() as run:
    mlflow.log_metric("m", 1.0)
    open("note.txt", "w").write("hi")
    mlflow.log_artifact("note.txt")
print("RUNS", len(mlflow.search_runs()))
print("FILES", [f.path for f in mlflow.MlflowClient().list_artifacts(run.info.run_id)])
"""


def _lines(stream: object, sink: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put(line)


def _processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(path) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.mark.slow
def test_make_run_from_a_clean_clone(tmp_path: Path) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} is not a git checkout, so there is nothing to clone")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    data_dir = tmp_path / "data"
    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")
    }
    env.update({"HOKUSAI_PORT": str(port), "HOKUSAI_DATA_DIR": str(data_dir), "HOKUSAI_MLFLOW_WORKERS": "1"})
    make = subprocess.Popen(
        ["make", "run"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(make.stdout, output), daemon=True).start()
    seen: list[str] = []
    exports: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 900  # creating .venv and installing MLflow, then MLflow's start
        while "MLFLOW_TRACKING_TOKEN" not in exports:
            assert make.poll() is None, "make run exited:\n" + "".join(seen)
            assert time.monotonic() < deadline, "no export lines:\n" + "".join(seen)
            try:
                line = output.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if line.strip().startswith("export "):
                name, _, value = line.strip().removeprefix("export ").partition("=")
                exports[name] = value
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
        assert _processes_using(data_dir), "MLflow should be running from the data directory"
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        make.wait(120)
    time.sleep(0.5)
    rest = "".join(seen) + "".join(output.get() for _ in range(output.qsize()))
    assert "Stopped." in rest
    assert _processes_using(data_dir) == []
