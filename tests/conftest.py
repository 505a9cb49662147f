"""Light fixtures only: nothing here imports MLflow or Redis (the unit and in-process layers need
neither). The MLflow server, gateway processes and S3 live in `tests/e2e/conftest.py`."""

from __future__ import annotations

import os
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from tests.helpers import REDIS_URL

# One assertion secret for every MLflow and gateway the tests start (they run on different data
# directories): the way replicas share one secret in a deployment.
if not os.environ.get("HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE"):
    _secret_file = Path(tempfile.mkdtemp(prefix="hokusai-tests-")) / "mlflow-assertion-secret"
    _secret_file.write_text(secrets.token_urlsafe(32))
    os.environ["HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE"] = str(_secret_file)

# Property tests share the machine with live servers: a per-example deadline would be a timing assertion.
hypothesis_settings.register_profile("hokusai", deadline=None)
hypothesis_settings.load_profile("hokusai")

POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="session", autouse=True)
def _base_temp_made_first(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The session's temporary base directory, made before any test: pytest makes it at the first
    mktemp, and two threads of a fixture doing that at once (a pytest-xdist worker's first module)
    collide with FileExistsError."""
    tmp_path_factory.getbasetemp()


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the machine's server (dropped afterwards), or a skip that says
    why (a bare machine has none)."""
    psycopg = pytest.importorskip("psycopg")
    name = f"hokusai_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"needs PostgreSQL at 127.0.0.1:5432 ({exc})")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis, or a skip that says why (a bare machine has none)."""
    import redis  # here, not at the top: only tests that count in Redis pay for it

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"needs a Redis server at {REDIS_URL} for shared counting ({type(exc).__name__}: {exc})")
    finally:
        client.close()
    return REDIS_URL
