"""A 300 MB artifact through a live gateway: byte-identical both ways, gateway memory flat."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from bench.load import RssSampler
from tests.e2e.conftest import reset_tracking_uri
from tests.helpers import GatewayProcess, sha256_file

SIZE = 300 * 1024 * 1024
RSS_LIMIT_MB = 150


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def fresh_gateway(mlflow_server: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    # Its own process, so its peak RSS (VmHWM) belongs to this transfer alone.
    process = GatewayProcess(mlflow_server, tmp_path / "gateway")
    yield process
    process.stop()


@pytest.mark.slow
def test_300_mb_artifact_round_trip_with_flat_gateway_memory(
    fresh_gateway: GatewayProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "weights.bin"
    with source.open("wb") as handle:
        for _ in range(SIZE >> 20):
            handle.write(os.urandom(1 << 20))
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", fresh_gateway.create_key("large"))
    mlflow.set_tracking_uri(fresh_gateway.url + "/mlflow")
    try:
        mlflow.set_experiment("large-artifacts")
        baseline_mb = _status_kb(fresh_gateway.pid, "VmRSS") / 1024
        with RssSampler(fresh_gateway.pid) as sampler:
            with mlflow.start_run() as run:
                mlflow.log_artifact(str(source), "blobs")
            downloaded = Path(
                MlflowClient().download_artifacts(
                    run.info.run_id, "blobs/weights.bin", str(tmp_path / "back")
                )
            )
    finally:
        reset_tracking_uri()
    assert downloaded.stat().st_size == SIZE
    assert sha256_file(downloaded) == sha256_file(source)
    peak_mb = _status_kb(fresh_gateway.pid, "VmHWM") / 1024
    sampled_mb = sampler.peak_mb
    with capsys.disabled():
        print(
            f"\n300 MB round trip: gateway RSS baseline {baseline_mb:.1f} MB, "
            f"sampled max {sampled_mb:.1f} MB, peak VmHWM {peak_mb:.1f} MB"
        )
    assert peak_mb < RSS_LIMIT_MB
