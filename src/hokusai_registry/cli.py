"""The `hokusai-registry` command. Flags come from the Settings fields, so each has one meaning."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Callable
from typing import Any, Literal, NoReturn, get_args, get_origin

import click

from hokusai_registry import __version__
from hokusai_registry.auth import keys as key_format
from hokusai_registry.auth.scopes import SCOPES, expand
from hokusai_registry.auth.store import KeyNameTaken, KeyNotFound, KeyStore
from hokusai_registry.settings import ConfigError, Settings, reference_markdown

F = Callable[..., Any]


def setting_options(*names: str) -> Callable[[F], F]:
    """Click options for the named settings: flag, help and type from the field."""

    def decorate(function: F) -> F:
        for name in reversed(names):
            field = Settings.model_fields[name]
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            annotation = field.annotation
            help_text = f"{field.description} [env {extra['env']}]"
            if annotation is bool:
                function = click.option(str(extra["flag"]), name, is_flag=True, default=None, help=help_text)(
                    function
                )
                continue
            kind: Any = str
            if get_origin(annotation) is Literal:
                kind = click.Choice(get_args(annotation))
            elif annotation in (int, float):
                kind = annotation
            function = click.option(str(extra["flag"]), name, type=kind, default=None, help=help_text)(
                function
            )
        return function

    return decorate


def config_failure(exc: ConfigError) -> NoReturn:
    """A bad configuration ends the command with one line naming the setting, and exit code 2."""
    click.echo(f"hokusai-registry: configuration error: {exc}", err=True)
    sys.exit(2)


def load_settings(**flags: Any) -> Settings:
    try:
        return Settings.load(**flags)
    except ConfigError as exc:
        config_failure(exc)


def _run(main: Callable[[Settings], None], settings: Settings) -> None:
    try:
        main(settings)
    except ConfigError as exc:
        config_failure(exc)
    except RuntimeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)


@click.group()
@click.version_option(__version__, prog_name="hokusai-registry")
def main() -> None:
    """Hokusai Registry: API keys and a streaming gateway in front of an internal MLflow server."""


@main.command()
@setting_options("data_dir", "host", "port", "public_url", "key_environment", "log_format", "debug")
def serve(**flags: Any) -> None:
    """Run MLflow (SQLite, local artifacts) and the gateway in front of it: the embedded default."""
    from hokusai_registry.runner import run, serve_embedded

    _run(lambda settings: run(serve_embedded(settings)), load_settings(**flags))


@main.command()
@setting_options(
    "mlflow_server_url",
    "data_dir",
    "host",
    "port",
    "workers",
    "public_url",
    "key_store_url",
    "upstream_api_prefix",
    "log_format",
    "debug",
)
def gateway(**flags: Any) -> None:
    """Run only the gateway, in front of an MLflow server that runs elsewhere."""
    from hokusai_registry.runner import run_gateway

    _run(run_gateway, load_settings(**flags))


@main.command("mlflow")
@setting_options("data_dir")
@click.option(
    "--host", "mlflow_host", default=None, help="Address MLflow listens on [env HOKUSAI_MLFLOW_HOST]."
)
@click.option("--port", "mlflow_port", type=int, default=None, help="Port MLflow listens on (default 5000).")
def mlflow_server(**flags: Any) -> None:
    """Run only MLflow, configured the way the gateway needs it (what a container image runs)."""
    from hokusai_registry.mlflow_server import mlflow_command

    settings = load_settings(**flags)
    try:
        command = mlflow_command(settings, settings.mlflow_port or 5000)
    except ConfigError as exc:
        config_failure(exc)
    click.echo("Running: " + " ".join(command), err=True)
    os.execv(command[0], command)  # noqa: S606 - replaces this process, as a container entrypoint should


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def _store(settings: Settings) -> KeyStore:
    from hokusai_registry.server import open_key_store

    try:
        return open_key_store(settings)
    except ConfigError as exc:
        config_failure(exc)


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for, e.g. 'ci-trainer'.")
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="write",
    show_default=True,
    help="read: search and download; write: also log runs, artifacts and models; admin: also server "
    "configuration and keys. Each implies the ones before it.",
)
@click.option("--admin", is_flag=True, help="Same as --scope admin.")
@click.option("--expires-in", default=None, help="Lifetime such as 90d, 12h or 30m; default: no expiry.")
@setting_options("data_dir", "key_store_url", "key_environment")
def keys_create(name: str, scope: str, admin: bool, expires_in: str | None, **flags: Any) -> None:
    """Create a key. It is printed once, alone on standard output; only its hash is stored."""
    settings = load_settings(**flags)
    expires_at = None
    if expires_in is not None:
        match = re.fullmatch(r"(\d+)([dhm])", expires_in.strip())
        if not match or int(match.group(1)) == 0:
            raise click.UsageError(f"--expires-in {expires_in!r}: give a number and d, h or m, e.g. 90d")
        unit = {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
        expires_at = dt.datetime.now(dt.UTC) + dt.timedelta(**{unit: int(match.group(1))})
    store = _store(settings)
    try:
        record, key = store.create(
            name,
            environment=settings.key_environment,
            scopes=expand("admin" if admin else scope),
            expires_at=expires_at,
        )
    except (KeyNameTaken, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    expiry = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    click.echo(
        f"Created key {record.key_id} ({record.name!r}, scopes: {' '.join(record.scopes)}{expiry}). "
        "It is shown only this once:",
        err=True,
    )
    click.echo(key)


@keys.command("list")
@setting_options("data_dir", "key_store_url")
def keys_list(**flags: Any) -> None:
    """List keys (never their secrets)."""
    records = _store(load_settings(**flags)).list()
    if not records:
        click.echo("No keys yet. Create one with: hokusai-registry keys create --name NAME --admin")
        return
    click.echo(f"{'KEY ID':<14}{'NAME':<24}{'ENV':<6}{'SCOPES':<20}{'CREATED (UTC)':<18}STATUS")
    now = dt.datetime.now(dt.UTC)
    for record in records:
        if record.revoked_at:
            status = f"revoked {record.revoked_at:%Y-%m-%d %H:%M}"
        elif record.expires_at and record.expires_at <= now:
            status = f"expired {record.expires_at:%Y-%m-%d %H:%M}"
        elif record.expires_at:
            status = f"active, expires {record.expires_at:%Y-%m-%d %H:%M}"
        else:
            status = "active"
        click.echo(
            f"{record.key_id:<14}{record.name[:23]:<24}{record.environment:<6}"
            f"{' '.join(record.scopes):<20}{record.created_at:%Y-%m-%d %H:%M}  {status}"
        )


def _check_key_id(key_id: str) -> None:
    if key_id.startswith(("hk_live_", "hk_test_")):
        raise click.UsageError("pass the key id (see `keys list`), not the whole key")
    if not key_format.is_key_id(key_id):
        raise click.UsageError(f"{key_id!r} is not a key id (12 letters and digits; see `keys list`)")


@keys.command("revoke")
@click.argument("key_id")
@setting_options("data_dir", "key_store_url")
def keys_revoke(key_id: str, **flags: Any) -> None:
    """Revoke a key by its id (the part after hk_live_); running gateways refuse it within a second."""
    _check_key_id(key_id)
    try:
        record = _store(load_settings(**flags)).revoke(key_id)
    except KeyNotFound as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Revoked key {record.key_id} ({record.name!r}).")


@keys.command("rotate")
@click.argument("key_id")
@setting_options("data_dir", "key_store_url")
def keys_rotate(key_id: str, **flags: Any) -> None:
    """Replace a key: the old one stops working (within a second on running gateways) and a new one with the
    same name, scopes and expiry is printed once, alone on standard output."""
    _check_key_id(key_id)
    try:
        record, key = _store(load_settings(**flags)).rotate(key_id)
    except (KeyNotFound, KeyNameTaken) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Revoked {key_id}; its successor is {record.key_id}. It is shown only this once:", err=True)
    click.echo(key)


@main.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md)."""
    click.echo(reference_markdown(), nl=False)
