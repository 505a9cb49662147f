"""What one bench run plans and what it measures: shared by the run (`bench.__main__`) and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Rate

# The paths to MLflow compared per call in `Results.mlflow`, beside "direct" and "nginx": a gateway with
# permissions off in front of the same MLflow as those, and one with permissions on in front of an MLflow
# of the same kind with its auth app, called by the objects' owner (MANAGE, as their creator) and by
# another owner (READ, the default permission).
PERMISSIONS_OFF_PATH = "gateway"
PERMISSIONS_ON_PATH = "gateway, permissions on"
PERMISSIONS_READER_PATH = "gateway, permissions on, READ by default"


@dataclass
class Plan:
    seconds: float
    runs: int
    artifact_mb: int
    artifact_runs: int
    output: Path
    mlflow_url: str | None
    permissions_mlflow_url: str | None = None


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    small: dict[str, dict[int, Rate]] = field(default_factory=dict)
    workers: dict[int, Rate] = field(default_factory=dict)
    # call ("experiments/get", ...) -> path ("direct", "nginx", PERMISSIONS_*_PATH) -> rate at c=8
    mlflow: dict[str, dict[str, Rate]] = field(default_factory=dict)
    # MLflow label ("1 worker", ...) -> path ("direct kept-alive", "gateway fresh", ...) -> rate at c=1
    keepalive: dict[str, dict[str, Rate]] = field(default_factory=dict)
    artifacts: dict[str, dict[str, float]] = field(default_factory=dict)
    gateway_peak_rss_mb: float = 0.0
    auth_us: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
