"""The short variant of `make soak`: a few real MLflow clients through a gateway process for seconds, with
the full mix (runs, metric batches, artifacts with sha256, model versions, searches). Nothing may fail
because of the gateway and every artifact must come back byte-identical. (Memory and descriptor growth are
judged by the full soak, over minutes.)"""

from __future__ import annotations

from pathlib import Path

from soak.__main__ import soak
from soak.clients import Plan


def test_short_soak(mlflow_server: str, tmp_path: Path) -> None:
    plan = Plan(clients=6, processes=2, seconds=20, warmup=5, min_mb=1, max_mb=4)
    result = soak(plan, tmp_path, mlflow_server)
    assert result["operations_total"] > 0 and set(result["operations"]) == {
        "run_and_metrics",
        "search",
        "artifact",
        "register",
    }, result
    assert result["gateway_errors"] == 0, result["examples"]
    assert result["artifacts_uploaded"] > 0
    assert result["artifacts_verified"] == result["artifacts_uploaded"], result["examples"]
