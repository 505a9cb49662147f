"""MLflow's auth environment as `serve` and `hokusai-registry mlflow` (a container) give it: the assertion
secret as a value (HOKUSAI_MLFLOW_ASSERTION_SECRET, for platforms that hand secrets to containers as
environment variables) wins over the file for the gateway and for MLflow, is never shown, and no file is
made when it is given; the administrator is always the gateway's."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from hokusai_registry.gateway.assembly import assertion_secret
from hokusai_registry.mlflow_app import authorization
from hokusai_registry.policy.assertions import SECRET_ENV, SECRET_FILE_ENV
from hokusai_registry.run.mlflow_process import mlflow_environment
from hokusai_registry.settings import ConfigError, Settings

VALUE = "a-secret-from-the-platform-0123456789"


@pytest.fixture(autouse=True)
def fresh_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    authorization._secret.cache_clear()


def test_the_value_wins_over_the_file_and_no_file_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, f"  {VALUE}\n")
    settings = Settings.load(data_dir=tmp_path)
    assert assertion_secret(settings) == VALUE.encode()
    environment = mlflow_environment(settings)
    assert environment[SECRET_ENV] == VALUE
    assert SECRET_FILE_ENV not in environment  # MLflow reads no stale file
    assert not (tmp_path / "mlflow-assertion-secret").exists()
    # MLflow's CSRF key follows the secret, so every MLflow worker and replica derives the same one.
    expected = hmac.new(VALUE.encode(), b"flask", hashlib.sha256).hexdigest()
    assert environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] == expected


def test_mlflow_checks_with_the_value_before_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other"
    other.write_text("the-file-secret-0123456789\n")
    monkeypatch.setenv(SECRET_FILE_ENV, str(other))
    monkeypatch.setenv(SECRET_ENV, VALUE)
    assert authorization._secret() == VALUE.encode()
    authorization._secret.cache_clear()
    monkeypatch.delenv(SECRET_ENV)
    assert authorization._secret() == b"the-file-secret-0123456789"


def test_without_the_value_the_file_is_named_for_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, "")  # an empty variable is unset
    named = tmp_path / "secret"
    named.write_text("the-file-secret-0123456789\n")
    settings = Settings.load(data_dir=tmp_path, mlflow_assertion_secret_file=named)
    environment = mlflow_environment(settings)
    assert environment[SECRET_FILE_ENV] == str(named.resolve())
    assert SECRET_ENV not in environment
    assert assertion_secret(settings) == b"the-file-secret-0123456789"


def test_a_short_value_is_refused_without_showing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "short-secret")
    with pytest.raises(ConfigError, match="HOKUSAI_MLFLOW_ASSERTION_SECRET: must be at least 16") as raised:
        Settings.load()
    assert "short-secret" not in str(raised.value)


def test_the_value_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, VALUE)
    settings = Settings.load()
    assert VALUE not in repr(settings) and VALUE not in str(settings)


def test_mlflows_administrator_is_the_gateways_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow lets MLFLOW_AUTH_ADMIN_USERNAME win over its configuration file: a container left with the
    # variable of an earlier basic-auth setup would make admin-scope keys ordinary users.
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    environment = mlflow_environment(Settings.load(data_dir=tmp_path))
    assert environment["MLFLOW_AUTH_ADMIN_USERNAME"] == "hokusai:admin"
