"""Artifacts in S3 (moto's S3 server on loopback, behind a relay that records every request it gets) with the
real MLflow client and a file over its multipart threshold (lowered from 500 MiB for the client, see LARGE).

Default policy: the gateway answers MLflow's capability probe with multipart off and refuses presigned
minting, so every byte goes through it and no client request reaches S3 (client requests to S3 would carry
presigned query signatures; MLflow's own carry an Authorization header). Direct transfers on: the client
uploads the large file in presigned parts straight to S3 and downloads from it, and the gateway sees only
the minting calls."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.e2e.conftest import s3_environment
from tests.helpers import FrontProxy, GatewayProcess, hokusai_mlflow, sha256_file

# Over the client's MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE, lowered from 500 MiB: the client takes the
# path a 500 MiB file takes by default (multipart when the server offers it, in 10 MiB parts), and nothing
# the gateway decides depends on the size. Moving 520 MiB twice took a minute.
LARGE = 24 * 2**20
MULTIPART_THRESHOLD = 16 * 2**20


@pytest.fixture(scope="module")
def mlflow_on_s3(s3: FrontProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with (
        s3_environment(s3),
        hokusai_mlflow(
            tmp_path_factory.mktemp("mlflow-s3"), "--artifacts-destination", "s3://artifacts/mlflow"
        ) as url,
    ):
        yield url


def _client_requests_to_s3(s3: FrontProxy) -> list[str]:
    """Requests that reached S3 from a client through presigned URLs (MLflow signs with a header)."""
    assert s3.recorded is not None
    return [
        f"{method} {target.split('?')[0]}"
        for method, target, headers, _ in s3.recorded
        if "X-Amz-Signature=" in target and "authorization" not in {name.lower() for name in headers}
    ]


def round_trip(gateway: GatewayProcess, client_env: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    client_env.setenv("MLFLOW_TRACKING_TOKEN", gateway.create_key(f"s3-{name}"))
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client_env.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(MULTIPART_THRESHOLD))
    big = tmp_path / f"{name}.bin"
    with big.open("wb") as sink:
        for _ in range(LARGE // 2**20):
            sink.write(os.urandom(2**20))
    client = MlflowClient(tracking_uri=gateway.url + "/mlflow")
    run = client.create_run(client.create_experiment(f"s3-{name}"))
    client.log_artifact(run.info.run_id, str(big))
    assert {entry.path: entry.file_size for entry in client.list_artifacts(run.info.run_id)} == {
        big.name: LARGE
    }
    back = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path=big.name,
        dst_path=str(tmp_path / "down"),
        tracking_uri=gateway.url + "/mlflow",
    )
    assert sha256_file(Path(back)) == sha256_file(big)


def test_by_default_every_byte_goes_through_the_gateway(
    mlflow_on_s3: str, s3: FrontProxy, tmp_path: Path, client_env: pytest.MonkeyPatch
) -> None:
    gateway = GatewayProcess(mlflow_on_s3, tmp_path / "gw")
    try:
        assert s3.recorded is not None
        s3.recorded.clear()
        round_trip(gateway, client_env, tmp_path, "proxied")
        assert s3.recorded, "MLflow stored the artifact in S3"
        assert _client_requests_to_s3(s3) == []
        bytes_in = sum(
            int(line.split(" in=")[1].split()[0]) for line in gateway.log().splitlines() if " in=" in line
        )
        assert bytes_in >= LARGE  # the upload came through the gateway
    finally:
        gateway.stop()


def test_direct_transfers_go_to_s3_when_switched_on(
    mlflow_on_s3: str, s3: FrontProxy, tmp_path: Path, client_env: pytest.MonkeyPatch
) -> None:
    gateway = GatewayProcess(mlflow_on_s3, tmp_path / "gw", env={"HOKUSAI_DIRECT_ARTIFACT_TRANSFERS": "true"})
    try:
        assert s3.recorded is not None
        s3.recorded.clear()
        round_trip(gateway, client_env, tmp_path, "direct")
        direct = _client_requests_to_s3(s3)
        assert any(request.startswith("PUT ") for request in direct), direct  # presigned upload parts
        assert any(request.startswith("GET ") for request in direct), direct  # presigned download
        assert "/mlflow-artifacts/mpu/create/" in gateway.log()
    finally:
        gateway.stop()
