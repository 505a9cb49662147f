"""MLflow's secrets passphrase (`run/mlflow_process.py`): kept in the data directory, never invented for a
file that was named but is missing."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hokusai_registry.run.mlflow_process import KEK_PASSPHRASE_ENV, mlflow_environment
from hokusai_registry.settings import ConfigError, Settings


@pytest.fixture(autouse=True)
def no_passphrase_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEK_PASSPHRASE_ENV, raising=False)


def test_the_default_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = mlflow_environment(settings)[KEK_PASSPHRASE_ENV]
    path = tmp_path / "data" / "mlflow-kek-passphrase"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert mlflow_environment(settings)[KEK_PASSPHRASE_ENV] == first
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]  # no drafts left


def test_a_named_file_that_is_missing_is_an_error_not_a_new_passphrase(tmp_path: Path) -> None:
    named = tmp_path / "run" / "secrets" / "kek"
    settings = Settings(data_dir=tmp_path / "data", mlflow_kek_passphrase_file=named)
    with pytest.raises(ConfigError, match="cannot be read"):
        mlflow_environment(settings)
    assert not named.exists() and not named.parent.exists()


def test_a_named_file_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    named = tmp_path / "kek"
    named.write_text("from-a-secret\n")
    settings = Settings(data_dir=tmp_path / "data", mlflow_kek_passphrase_file=named)
    assert mlflow_environment(settings)[KEK_PASSPHRASE_ENV] == "from-a-secret"
    monkeypatch.setenv(KEK_PASSPHRASE_ENV, "from-the-platform")
    assert mlflow_environment(settings)[KEK_PASSPHRASE_ENV] == "from-the-platform"


def test_an_empty_file_is_an_error(tmp_path: Path) -> None:
    named = tmp_path / "kek"
    named.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        mlflow_environment(Settings(data_dir=tmp_path, mlflow_kek_passphrase_file=named))
