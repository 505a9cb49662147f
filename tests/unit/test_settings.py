"""Settings: loop refusal at start-up, clear errors, and a configuration reference that is current."""

from __future__ import annotations

from pathlib import Path

import pytest

from hokusai_registry.core.net import redact_url
from hokusai_registry.settings import ConfigError, Settings, reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_current() -> None:
    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown(), (
        "docs/configuration.md is stale: run `make docs`"
    )


def test_every_setting_has_an_env_variable_and_a_description() -> None:
    envs = []
    for name, field in Settings.model_fields.items():
        assert isinstance(field.json_schema_extra, dict) and field.json_schema_extra["env"], name
        assert field.description, name
        envs.append(field.json_schema_extra["env"])
    assert len(envs) == len(set(envs))


@pytest.mark.parametrize(
    ("upstream", "host", "port"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", 8000),
        ("http://localhost:8000/mlflow", "127.0.0.1", 8000),
        ("http://127.0.0.1:8000", "0.0.0.0", 8000),
        ("http://[::1]:8000", "::", 8000),
        ("http://gateway.internal:8000", "gateway.internal", 8000),
    ],
)
def test_upstream_equal_to_own_listener_is_refused(upstream: str, host: str, port: int) -> None:
    settings = Settings.load(mlflow_server_url=upstream, host=host, port=port)
    with pytest.raises(ConfigError, match="own listener"):
        settings.require_upstream()


def test_upstream_equal_to_public_url_is_refused() -> None:
    settings = Settings.load(
        mlflow_server_url="https://registry.example.com/mlflow", public_url="https://registry.example.com/"
    )
    with pytest.raises(ConfigError, match="own public URL"):
        settings.require_upstream()


@pytest.mark.parametrize(
    "upstream", ["http://127.0.0.1:5000", "http://mlflow.registry-prod.local:5000", "http://localhost:8001"]
)
def test_internal_upstreams_are_accepted(upstream: str) -> None:
    assert Settings.load(mlflow_server_url=upstream, port=8000).require_upstream() == upstream


def test_missing_upstream_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_SERVER_URL", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_SERVER_URL is not set"):
        Settings.load().require_upstream()


def test_bad_values_name_the_variable_and_hide_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_SERVER_URL", "ftp://user:hunter2@mlflow:21")
    with pytest.raises(ConfigError) as raised:
        Settings.load()
    assert "MLFLOW_SERVER_URL" in str(raised.value)
    assert "hunter2" not in str(raised.value)
    monkeypatch.setenv("MLFLOW_SERVER_URL", "http://mlflow:5000")
    monkeypatch.setenv("HOKUSAI_PORT", "eighty")
    with pytest.raises(ConfigError, match="HOKUSAI_PORT"):
        Settings.load()


def test_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOKUSAI_PORT", "9000")
    assert Settings.load().port == 9000
    assert Settings.load(port=9100).port == 9100
    assert Settings.load(port=None).port == 9000


def test_redact_url() -> None:
    assert redact_url("http://user:pw@mlflow:5000/x") == "http://mlflow:5000/x"
    assert redact_url("http://mlflow:5000") == "http://mlflow:5000"
