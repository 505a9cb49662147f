"""A bad configuration stops the process at start with one clear line; a questionable one warns."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import HOKUSAI, Running, free_port


def start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HOKUSAI_", "MLFLOW_SERVER_URL"))}
    return subprocess.run(
        [HOKUSAI, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
        stdin=subprocess.DEVNULL,
    )


def cases(tmp_path: Path) -> list[tuple[list[str], dict[str, str], str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory")
    port = str(free_port())
    return [
        (
            ["gateway"],
            {"MLFLOW_SERVER_URL": "ftp://mlflow:21"},
            "MLFLOW_SERVER_URL: expected an http",
        ),
        (["gateway"], {"MLFLOW_SERVER_URL": "http://:5000"}, "MLFLOW_SERVER_URL: expected an http"),
        (
            ["gateway", "--port", port],
            {"MLFLOW_SERVER_URL": f"http://127.0.0.1:{port}"},
            "points at the gateway's own listener",
        ),
        (
            ["gateway"],
            {"MLFLOW_SERVER_URL": "http://mlflow:5000", "HOKUSAI_DATA_DIR": str(a_file)},
            f"HOKUSAI_DATA_DIR ({a_file}) is not a directory",
        ),
        (
            ["gateway"],
            {"MLFLOW_SERVER_URL": "http://mlflow:5000", "HOKUSAI_DATA_DIR": str(a_file / "sub")},
            "HOKUSAI_DATA_DIR",
        ),
        (
            ["gateway"],
            {"MLFLOW_SERVER_URL": "http://mlflow:5000", "HOKUSAI_UPSTREAM_READ_TIMEOUT": "0"},
            "HOKUSAI_UPSTREAM_READ_TIMEOUT: must be more than 0 seconds",
        ),
        (
            ["gateway"],
            {"MLFLOW_SERVER_URL": "http://mlflow:5000", "HOKUSAI_WORKERS": "0"},
            "HOKUSAI_WORKERS: must be at least 1",
        ),
        (
            ["gateway"],
            {"MLFLOW_SERVER_URL": "http://mlflow:5000", "HOKUSAI_PORT": "http"},
            "HOKUSAI_PORT: Input should be a valid integer",
        ),
        (
            ["serve", "--port", port],
            {"MLFLOW_SERVER_URL": "http://mlflow:5000"},
            "`serve` starts its own MLflow",
        ),
        (["keys", "list"], {"HOKUSAI_DATA_DIR": str(a_file)}, "is not a directory"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_each_misconfiguration_gives_one_clear_line(index: int, tmp_path: Path) -> None:
    args, env, expected = cases(tmp_path)[index]
    env.setdefault("HOKUSAI_DATA_DIR", str(tmp_path / "data"))
    result = start(args, env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hokusai-registry: configuration error: ")
    assert expected in lines[0]


def test_plain_http_to_a_public_address_warns(tmp_path: Path) -> None:
    # The gateway connects lazily, so starting it sends nothing to that address.
    port = str(free_port())
    running = Running(
        [
            HOKUSAI,
            "gateway",
            "--mlflow-url",
            "http://mlflow.example.com:5000",
            "--port",
            port,
            "--data-dir",
            str(tmp_path),
        ],
        {},
    )
    try:
        running.wait_for("Application startup complete")
    finally:
        assert running.terminate() == 0
    warning = next(line for line in running.seen if "WARNING" in line)
    assert "plain http to a public address" in warning
