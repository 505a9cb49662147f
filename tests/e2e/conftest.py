"""Session fixtures for the live suite: one real MLflow per session, a gateway process in front of it,
moto's S3, and the MLflow client's environment."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import mlflow
import pytest

from hokusai_registry.run.mlflow_process import mlflow_command
from hokusai_registry.settings import Settings
from tests.helpers import FrontProxy, GatewayProcess, free_port, running_mlflow
from tests.support.oidc_provider import LOOPBACK_CALLBACK, OidcProvider, running_provider


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server --serve-artifacts`, started the way `serve` starts it."""
    data_dir = tmp_path_factory.mktemp("mlflow")
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # ~13 s start instead of ~30 s
    settings = Settings.load(data_dir=data_dir, mlflow_workers=1)
    port = free_port()  # MLflow is told its port: it cannot report one it chose
    with running_mlflow(mlflow_command(settings, port), data_dir, port) as url:
        yield url


def without_serve_artifacts(command: list[str], default_root: str) -> list[str]:
    """An `mlflow_command` with --no-serve-artifacts, and the default artifact root new experiments get
    instead of a destination (without one MLflow would use ./mlruns in the tests' working directory)."""
    changed = list(command)
    changed[changed.index("--serve-artifacts")] = "--no-serve-artifacts"
    destination = changed.index("--artifacts-destination")
    changed[destination : destination + 2] = ["--default-artifact-root", default_root]
    return changed


@pytest.fixture(scope="session")
def mlflow_without_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow started with --no-serve-artifacts and a plain directory as default artifact root:
    what a misconfigured deployment runs (the health and doctor tests share it: a start takes seconds)."""
    data_dir = tmp_path_factory.mktemp("no-artifacts")
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # as for mlflow_server
    port = free_port()
    command = mlflow_command(Settings.load(data_dir=data_dir, mlflow_workers=1), port)
    with running_mlflow(without_serve_artifacts(command, str(data_dir / "artifacts")), data_dir, port) as url:
        yield url


@pytest.fixture(scope="session")
def gateway(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Many tests send bad keys from 127.0.0.1 on purpose: the failure throttle has its own tests.
    # Last use is written every half second so tests can see it.
    env = {"HOKUSAI_AUTH_FAILURE_LIMIT": "0", "HOKUSAI_LAST_USED_INTERVAL": "0.5"}
    process = GatewayProcess(mlflow_server, tmp_path_factory.mktemp("gateway"), env=env)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_key(gateway: GatewayProcess) -> str:
    return gateway.create_key("e2e")


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3() -> Iterator[FrontProxy]:
    """moto's S3 server on loopback with a bucket `artifacts`, behind a relay that records every request."""
    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    relay = FrontProxy(f"http://127.0.0.1:{port}", record=True)
    try:
        credentials = {
            "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": S3_ENV["AWS_DEFAULT_REGION"],
        }
        boto3.client("s3", endpoint_url=relay.url, **credentials).create_bucket(Bucket="artifacts")
        yield relay
    finally:
        relay.stop()
        server.stop()


@contextlib.contextmanager
def s3_environment(s3: FrontProxy) -> Iterator[None]:
    """Credentials and endpoint for MLflow (and clients) to reach the moto bucket; restored afterwards."""
    saved = {name: os.environ.get(name) for name in [*S3_ENV, "MLFLOW_S3_ENDPOINT_URL"]}
    os.environ.update(S3_ENV, MLFLOW_S3_ENDPOINT_URL=s3.url)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def client_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The MLflow client's environment without anyone's credentials; the tracking URI reset afterwards."""
    for name in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    reset_tracking_uri()


def reset_tracking_uri() -> None:
    """Back to MLflow's default tracking URI. `set_tracking_uri(None)` does that, though MLflow's
    annotation leaves None out."""
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture
def gateway_client(client_env: pytest.MonkeyPatch, gateway: GatewayProcess) -> pytest.MonkeyPatch:
    """The MLflow client pointed at the session gateway, failing at once instead of retrying refusals."""
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(gateway.url + "/mlflow")
    return client_env


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    """The test OpenID Connect provider (tests/support/oidc_provider.py): alice (team-a), bob (team-b),
    carol (ml-admins); a gateway on any loopback port may use it as its identity provider."""
    with running_provider(tmp_path_factory.mktemp("oidc"), [LOOPBACK_CALLBACK]) as provider:
        yield provider
