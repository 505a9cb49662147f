"""What one bench run plans and what it measures: shared by the run (`bench.__main__`) and its report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Rate

# The MLflow calls measured (bench/mlflow_calls.py), and the one whose latency at c=1 each path adds.
CALLS = ("experiments/get", "runs/log-batch", "runs/search")
LATENCY_CALL = "experiments/get"
# The paths to MLflow compared per call in `Results.mlflow`, beside "direct" and "nginx": a gateway with
# permissions off in front of the same MLflow as those, and one with permissions on in front of an MLflow
# of the same kind with its auth app, called by the objects' owner (MANAGE, as their creator) and by
# another owner (READ, the default permission).
PERMISSIONS_OFF_PATH = "gateway"
PERMISSIONS_ON_PATH = "gateway, permissions on"
PERMISSIONS_READER_PATH = "gateway, permissions on, READ by default"
# The peers of `Results.peers`, measured in the same rounds as the paths above, each in front of its own
# MLflow of the same kind (nginx with auth_basic in front of the direct one).
BASIC_AUTH_PATH = "MLflow basic-auth"
BASIC_AUTH_CACHED_PATH = "MLflow basic-auth, cache on"
OIDC_AUTH_PATH = "mlflow-oidc-auth"
NGINX_AUTH_PATH = "nginx auth_basic"
# The peers table's rows, the reference first.
PEER_ROWS = (
    "direct",
    BASIC_AUTH_PATH,
    BASIC_AUTH_CACHED_PATH,
    OIDC_AUTH_PATH,
    NGINX_AUTH_PATH,
    PERMISSIONS_OFF_PATH,
    PERMISSIONS_ON_PATH,
)


@dataclass(frozen=True)
class Cost:
    """What a request cost one server in one measurement; `syscalls` is None when strace could not run,
    and `note` says why."""

    rate: Rate
    cpu_us: float
    syscalls: float | None
    top: tuple[tuple[str, float], ...] = ()
    note: str = ""


@dataclass
class Plan:
    seconds: float
    runs: int
    artifact_mb: int
    artifact_runs: int
    output: Path
    mlflow_url: str | None
    permissions_mlflow_url: str | None = None
    # Start the peers (MLflow's basic-auth, mlflow-oidc-auth, nginx auth_basic) beside the MLflow calls.
    peers: bool = False
    # The sections to run (`--only`); empty: all.
    only: frozenset[str] = frozenset()

    def runs_section(self, name: str) -> bool:
        return not self.only or name in self.only


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    small: dict[str, dict[int, Rate]] = field(default_factory=dict)
    workers: dict[int, Rate] = field(default_factory=dict)
    # small-request server ("nginx", "hello world", "bare proxy", "gateway") -> CPU and syscalls per request
    costs: dict[str, Cost] = field(default_factory=dict)
    # call ("experiments/get", ...) -> path ("direct", "nginx", PERMISSIONS_*_PATH) -> rate at c=8
    mlflow: dict[str, dict[str, Rate]] = field(default_factory=dict)
    # MLflow label ("1 worker", ...) -> path ("direct kept-alive", "gateway fresh", ...) -> rate at c=1
    keepalive: dict[str, dict[str, Rate]] = field(default_factory=dict)
    # path -> experiments/get at c=1, for the latency each adds to direct MLflow
    latency: dict[str, Rate] = field(default_factory=dict)
    # path -> "PUT"/"GET" -> median MB/s, and the slowest and fastest run
    artifacts: dict[str, dict[str, float]] = field(default_factory=dict)
    artifact_ranges: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    # peer path -> how it was configured (measured) or why it could not run (in `peer_skipped`)
    peers: dict[str, str] = field(default_factory=dict)
    peer_skipped: dict[str, str] = field(default_factory=dict)
    gateway_peak_rss_mb: float = 0.0
    auth_us: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
