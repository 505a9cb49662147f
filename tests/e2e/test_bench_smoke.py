"""`python -m bench --quick` proves the benchmark harness runs end to end; it asserts no timings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_writes_a_report(mlflow_server: str, tmp_path: Path) -> None:
    # The suite's MLflow runs the auth app (permissions on; its assertion secret is the suite's, in the
    # environment): bench starts the one without it for the references and permissions off.
    report = tmp_path / "benchmarks.md"
    command = ["-m", "bench", "--quick", "--permissions-mlflow-url", mlflow_server, "--output", str(report)]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text()
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
    assert "## Targets" in text and "## Auth" in text and "cached key check" in text
    if "Not measured: request-rate scenarios" in text:
        pytest.skip(
            "wrk or nginx could not be installed here: " + text.split("Not measured: ")[1].split("\n")[0]
        )
    for section in ("## Small requests, fast upstream", "### Workers", "## Real MLflow", "## Artifacts"):
        assert section in text
    assert "| gateway | 32 |" in text and "| hello world | 32 |" in text and "`runs/log-batch`" in text
    # CPU and system calls per request of each small-request server (strace may be missing: then "-").
    costs = text.split("\n### Cost per request\n")[1].split("\n### ")[0]
    assert {line.split(" | ")[0] for line in costs.splitlines() if line.startswith("| ")} >= {
        "| nginx",
        "| hello world",
        "| bare proxy",
        "| gateway",
    }
    assert "\n## Peers\n" not in text  # --quick skips the peers
    assert "## Per-resource permissions" in text
    section = text.split("\n## Per-resource permissions\n")[1].split("\n## ")[0]
    # Bench checks every target answers 200 before measuring it (and fails otherwise); wrk's error counts
    # also include timeouts on a loaded machine, so they are not asserted.
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `")]
    measured = {(row[0].strip("| `"), row[1]) for row in rows}
    assert measured == {
        ("experiments/get", "owner (MANAGE)"),
        ("experiments/get", "other owner (READ by default)"),
        ("runs/log-batch", "owner (MANAGE)"),
        ("runs/search", "owner (MANAGE)"),
        ("runs/search", "other owner (READ by default)"),
    }
    assert "permissions on / off" in text and "sign an MLflow assertion" in text
