"""The `hokusai-registry` command. Flags come from the Settings fields, so each has one meaning."""

from __future__ import annotations

import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

import click
from pydantic import ValidationError

from hokusai_registry import __version__
from hokusai_registry.admin.service import KeyAdmin, KeySpec, problems
from hokusai_registry.core.net import redact_url
from hokusai_registry.policy.scopes import SCOPES
from hokusai_registry.settings import ConfigError, Settings, reference_markdown
from hokusai_registry.store.key_store import KeyNameTaken, KeyNotFound

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
@setting_options(
    "data_dir", "host", "port", "public_url", "key_environment", "audit_log", "log_format", "debug"
)
def serve(**flags: Any) -> None:
    """Run MLflow (SQLite, local artifacts) and the gateway in front of it: the embedded default."""
    from hokusai_registry.run.runner import run, serve_embedded

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
    "direct_artifact_transfers",
    "service_id",
    "auth_service_url",
    "redis_url",
    "audit_log",
    "log_format",
    "debug",
)
def gateway(**flags: Any) -> None:
    """Run only the gateway, in front of an MLflow server that runs elsewhere."""
    from hokusai_registry.run.runner import run_gateway

    _run(run_gateway, load_settings(**flags))


@main.command("mlflow")
@setting_options("data_dir", "mlflow_backend_store_uri", "mlflow_artifacts_destination")
@click.option(
    "--host", "mlflow_host", default=None, help="Address MLflow listens on [env HOKUSAI_MLFLOW_HOST]."
)
@click.option("--port", "mlflow_port", type=int, default=None, help="Port MLflow listens on (default 5000).")
def mlflow_server(**flags: Any) -> None:
    """Run only MLflow, configured the way the gateway needs it (what a container image runs)."""
    from hokusai_registry.run.mlflow_process import mlflow_command, mlflow_environment

    settings = load_settings(**flags)
    try:
        command = mlflow_command(settings, settings.mlflow_port or 5000)
        environment = mlflow_environment(settings)
    except ConfigError as exc:
        config_failure(exc)
    # The database URL may hold a password.
    click.echo("Running: " + " ".join(redact_url(arg) if "://" in arg else arg for arg in command), err=True)
    # Replaces this process, as a container entrypoint should; the argv is built by mlflow_command.
    os.execve(command[0], command, environment)  # noqa: S606  # nosec B606


@main.group()
def keys() -> None:
    """Create, list and revoke API keys."""


def _admin(settings: Settings) -> KeyAdmin:
    from hokusai_registry.gateway.assembly import open_key_store
    from hokusai_registry.ops.audit import configure_audit

    try:
        configure_audit(settings.audit_log)
        return KeyAdmin(open_key_store(settings), settings.key_environment)
    except ConfigError as exc:
        config_failure(exc)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return f"cli:uid-{os.getuid()}"


KEY_STORE_OPTIONS = ("data_dir", "key_store_url", "audit_log")


@keys.command("create")
@click.option("--name", required=True, help="Who or what the key is for, e.g. 'ci-trainer'.")
@click.option("--owner", default=None, help=KeySpec.model_fields["owner"].description)
@click.option(
    "--scope",
    type=click.Choice(SCOPES),
    default="write",
    show_default=True,
    help=KeySpec.model_fields["scope"].description,
)
@click.option("--admin", is_flag=True, help="Same as --scope admin.")
@click.option("--expires-in", default=None, help="Lifetime such as 90d, 12h or 30m; default: no expiry.")
@click.option(
    "--service-id",
    "service_ids",
    multiple=True,
    help="A service id the key is valid for (repeat for several); default: any.",
)
@click.option("--rate-limit-per-minute", type=int, default=None, help="Default: the gateway's; 0: unlimited.")
@click.option("--rate-limit-per-hour", type=int, default=None, help="Default: the gateway's; 0: unlimited.")
@setting_options(*KEY_STORE_OPTIONS, "key_environment")
def keys_create(
    name: str,
    owner: str | None,
    scope: str,
    admin: bool,
    expires_in: str | None,
    service_ids: tuple[str, ...],
    rate_limit_per_minute: int | None,
    rate_limit_per_hour: int | None,
    **flags: Any,
) -> None:
    """Create a key. It is printed once, alone on standard output; only its hash is stored."""
    try:
        spec = KeySpec(
            name=name,
            owner=owner,
            scope="admin" if admin else scope,  # type: ignore[arg-type]
            expires_in=expires_in,
            service_ids=list(service_ids),
            rate_limit_per_minute=rate_limit_per_minute,
            rate_limit_per_hour=rate_limit_per_hour,
        )
    except ValidationError as exc:
        raise click.UsageError(problems(exc.errors(), flags=True)) from None
    try:
        created = _admin(load_settings(**flags)).create(spec, _actor())
    except KeyNameTaken as exc:
        raise click.UsageError(str(exc)) from None
    expiry = f", expires {created.expires_at:%Y-%m-%d %H:%M} UTC" if created.expires_at else ""
    click.echo(
        f"Created key {created.key_id} ({created.name!r} for {created.user_id}, scopes: "
        f"{' '.join(created.scopes)}{expiry}). It is shown only this once:",
        err=True,
    )
    click.echo(created.key)


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field (no secrets).")
@setting_options(*KEY_STORE_OPTIONS)
def keys_list(as_json: bool, **flags: Any) -> None:
    """List keys (never their secrets)."""
    infos = _admin(load_settings(**flags)).list()
    if as_json:
        click.echo(json.dumps([info.model_dump(mode="json") for info in infos], indent=2))
        return
    if not infos:
        click.echo("No keys yet. Create one with: hokusai-registry keys create --name NAME --admin")
        return
    click.echo(f"{'KEY ID':<14}{'NAME':<20}{'OWNER':<20}{'SCOPES':<18}{'LAST USED (UTC)':<18}STATUS")
    for info in infos:
        if info.revoked_at:
            status = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}"
        elif info.expires_at:
            status = f"{info.status}, expires {info.expires_at:%Y-%m-%d %H:%M}"
        else:
            status = info.status
        used = f"{info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never"
        click.echo(
            f"{info.key_id:<14}{info.name[:19]:<20}{info.user_id[:19]:<20}"
            f"{' '.join(info.scopes):<18}{used:<18}{status}"
        )


@keys.command("revoke")
@click.argument("key_id")
@setting_options(*KEY_STORE_OPTIONS)
def keys_revoke(key_id: str, **flags: Any) -> None:
    """Revoke a key by its id (the part after hk_live_); running gateways refuse it within a second."""
    try:
        info = _admin(load_settings(**flags)).revoke(key_id, _actor())
    except (KeyNotFound, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Revoked key {info.key_id} ({info.name!r}).")


@keys.command("rotate")
@click.argument("key_id")
@setting_options(*KEY_STORE_OPTIONS)
def keys_rotate(key_id: str, **flags: Any) -> None:
    """Replace a key: the old one stops working (within a second on running gateways) and a new one with the
    same name, owner, scopes, limits and expiry is printed once, alone on standard output."""
    try:
        created = _admin(load_settings(**flags)).rotate(key_id, _actor())
    except (KeyNotFound, KeyNameTaken, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Revoked {key_id}; its successor is {created.key_id}. It is shown only this once:", err=True)
    click.echo(created.key)


@main.command()
@click.option(
    "--url", required=True, help="The tracking URI clients use: http(s)://HOST[:PORT][/mlflow|/api/mlflow]."
)
@click.option(
    "--api-key",
    default=None,
    help="Key to test with; default HOKUSAI_API_KEY, then MLFLOW_TRACKING_TOKEN. Never printed.",
)
@click.option("--large", default=None, help="Also round-trip an artifact of this size, e.g. 600MB or 1GiB.")
@click.option("--keep", is_flag=True, help="Leave the experiment, run and model it creates.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (progress goes to stderr).")
@click.option(
    "--report",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="Also write a Markdown report to this file.",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds per request.")
def doctor(
    url: str,
    api_key: str | None,
    large: str | None,
    keep: bool,
    as_json: bool,
    report: Path | None,
    timeout: float,
) -> None:
    """Prove that logging, artifacts and model registration work through a gateway, end to end with the
    real MLflow client, or name the root cause. Exit code 0 only if every step passed."""
    try:
        from hokusai_registry.doctor import report as reports
        from hokusai_registry.doctor.steps import Doctor, StepResult, parse_size
    except ImportError as exc:
        raise click.ClickException(
            f"the doctor needs the MLflow client ({exc.name} is missing): "
            "pip install 'hokusai-registry[mlflow]'"
        ) from None
    if not url.startswith(("http://", "https://")):
        raise click.UsageError(f"--url {url!r}: give an http:// or https:// URL")
    try:
        large_bytes = parse_size(large) if large else None
    except ValueError as exc:
        raise click.UsageError(f"--large: {exc}") from None
    key = api_key or os.environ.get("HOKUSAI_API_KEY") or os.environ.get("MLFLOW_TRACKING_TOKEN")
    tty = sys.stderr.isatty() if as_json else sys.stdout.isatty()

    def progress(index: int, total: int, result: StepResult, done: bool) -> None:
        line = reports.progress_line(index, total, result, done)
        if tty:
            click.echo("\r\033[K" + line, nl=done, err=as_json)
        elif done:
            click.echo(line, err=as_json)

    doctor_run = Doctor(url, key, timeout=timeout, large=large_bytes, keep=keep, progress=progress)
    results = doctor_run.run()
    found = reports.versions(doctor_run.versions)
    if as_json:
        click.echo(reports.as_json(url, results, found))
    else:
        click.echo("")
        click.echo(reports.table(results))
        click.echo("")
        click.echo("PASSED: registration works end to end." if reports.passed(results) else "FAILED.")
    if report is not None:
        report.write_text(reports.markdown(url, results, found), encoding="utf-8")
        click.echo(f"Report written to {report}", err=True)
    sys.exit(0 if reports.passed(results) else 1)


@main.group()
def db() -> None:
    """The key store's database schema."""


@db.command("upgrade")
@setting_options("data_dir", "key_store_url")
def db_upgrade(**flags: Any) -> None:
    """Migrate the key store to this version's schema (idempotent; run once per release, before the
    gateways start)."""
    from hokusai_registry.store.key_store import KeyStore

    settings = load_settings(**flags)
    if settings.key_store_url is None:
        try:
            settings.check_data_dir()
        except ConfigError as exc:
            config_failure(exc)
    store = KeyStore(settings.resolved_key_store_url)
    try:
        before, head = store.schema_revisions()
        store.migrate()
    except Exception as exc:
        click.echo(f"Error: {redact_url(store.url)}: {type(exc).__name__}: {exc}", err=True)
        sys.exit(1)
    finally:
        store.close()
    change = "already at" if before == head else f"{before or 'empty'} ->"
    click.echo(f"Key store {redact_url(store.url)}: {change} schema {head}.")


@main.group("deploy")
def deploy_group() -> None:
    """Roll a new image out to an ECS service, or back (needs boto3 and AWS credentials)."""


def _ecs(region: str | None) -> Any:
    try:
        import boto3  # type: ignore[import-untyped]
    except ImportError:
        raise click.ClickException("deploy needs boto3: pip install 'hokusai-registry[deploy]'") from None
    return boto3.client("ecs", region_name=region)


ECS_OPTIONS = (
    click.option("--cluster", required=True, help="ECS cluster name or ARN."),
    click.option("--service", required=True, help="ECS service name, e.g. gateway or mlflow."),
    click.option("--region", default=None, help="AWS region (default: the AWS configuration's)."),
    click.option(
        "--timeout", type=float, default=900, show_default=True, help="Seconds to wait for stability."
    ),
)


def ecs_options(function: F) -> F:
    for option in reversed(ECS_OPTIONS):
        function = option(function)
    return function


@deploy_group.command("ecs")
@ecs_options
@click.option("--image", required=True, help="The new image, e.g. 123.dkr.ecr.eu-west-1.amazonaws.com/gw:1.2")
@click.option("--container", default=None, help="Container to update (default: the only one).")
def deploy_ecs(
    cluster: str, service: str, region: str | None, timeout: float, image: str, container: str | None
) -> None:
    """Register a new task-definition revision with IMAGE, move the service to it and wait until it is
    stable; if it does not get there, move the service back to the revision it ran before (exit 1)."""
    from hokusai_registry.run.deploy import DeployError, deploy

    try:
        outcome = deploy(
            _ecs(region),
            cluster=cluster,
            service=service,
            image=image,
            container=container,
            timeout=timeout,
            say=lambda line: click.echo(line, err=True),
        )
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(outcome.current)


@deploy_group.command("rollback")
@ecs_options
def deploy_rollback(cluster: str, service: str, region: str | None, timeout: float) -> None:
    """Move the service back to the task-definition revision before the one it runs."""
    from hokusai_registry.run.deploy import DeployError, rollback

    try:
        outcome = rollback(
            _ecs(region),
            cluster=cluster,
            service=service,
            timeout=timeout,
            say=lambda line: click.echo(line, err=True),
        )
    except DeployError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(outcome.current)


@main.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md)."""
    click.echo(reference_markdown(), nl=False)


# -- `grants backfill` (step 11, the upgrade path): logic in admin/backfill.py. The `grants` group is the
# teams-and-grants commands' too; this block only adds `backfill` to it.


@main.group()
def grants() -> None:
    """Per-resource permissions: who may read and change which experiment, model or prompt."""


@grants.command("backfill")
@click.option("--apply", "apply_grants", is_flag=True, help="Make the proposed grants (existing ones kept).")
@click.option("--json", "as_json", is_flag=True, help="The proposal (and what was applied) as JSON.")
@click.option(
    "--audit-file",
    "audit_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also read this audit log (rotated or collected ones; repeat for several). HOKUSAI_AUDIT_LOG is "
    "read when it is a file.",
)
@click.option(
    "--any-owner",
    is_flag=True,
    help="Also propose grants for owners no key has (names recorded before the gateway attributed runs).",
)
@setting_options("mlflow_server_url", "data_dir", "key_store_url", "audit_log")
def grants_backfill(
    apply_grants: bool, as_json: bool, audit_files: tuple[Path, ...], any_owner: bool, **flags: Any
) -> None:
    """Propose MANAGE grants for what owners made before permissions were on (runs' owners on their
    experiments, model versions' owners on their models, the audit log; EDIT on the Default experiment,
    which belongs to nobody), and make them with --apply.
    Run it once after upgrading a registry that ran without permissions; running it again changes
    nothing."""
    from hokusai_registry.admin import backfill
    from hokusai_registry.admin.signed_mlflow import MlflowError, SignedMlflow
    from hokusai_registry.gateway.assembly import assertion_secret, open_key_store
    from hokusai_registry.ops.audit import audit, configure_audit

    settings = load_settings(**flags)
    if not settings.permissions:
        raise click.UsageError(
            "HOKUSAI_PERMISSIONS is off: there are no grants to make. Turn it on (the default) for MLflow "
            "and every gateway, restart them, then run this again."
        )
    if not settings.mlflow_server_url:
        raise click.UsageError(
            "--mlflow-url (MLFLOW_SERVER_URL): MLflow's internal address. For `serve`, the address it prints "
            "('Starting MLflow at ...'); set HOKUSAI_MLFLOW_PORT to keep it the same."
        )
    files = list(audit_files)
    if settings.audit_log != "stderr" and Path(settings.audit_log).is_file():
        files.append(Path(settings.audit_log))
    key_owners: set[str] | None = None
    try:
        secret = assertion_secret(settings)
        if not settings.auth_service_url:
            store = open_key_store(settings)
            try:
                key_owners = {record.user_id for record in store.list()}
            finally:
                store.close()
    except ConfigError as exc:
        config_failure(exc)
    mlflow = SignedMlflow(settings.mlflow_server_url, secret, api_prefix=settings.upstream_api_prefix)
    say = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    try:
        current = mlflow.call("GET", "/api/2.0/mlflow/users/current")
        if not (current.get("user") or {}).get("is_admin"):
            raise MlflowError(None, "NOT_ADMIN", "MLflow does not take hokusai:admin for its administrator")
        registry = backfill.read_registry(mlflow)
        lines: list[str] = []
        for path in files:
            lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
        proposals = backfill.propose(
            backfill.mlflow_attributions(mlflow, registry),
            backfill.audit_attributions(backfill.audit_events(lines), registry),
            key_owners=key_owners,
            any_owner=any_owner,
        )
        users = backfill.mark_existing(mlflow, proposals)
        if apply_grants:
            configure_audit(settings.audit_log)
            actor = _actor()

            def audited(proposal: backfill.Proposal) -> None:
                audit(
                    "grant.added",
                    actor=actor,
                    owner=proposal.owner,
                    resource_type=proposal.resource.kind,
                    resource_id=proposal.resource.id,
                    permission=proposal.level,
                    via="backfill",
                )

            backfill.apply(mlflow, proposals, users, audited)
    except MlflowError as exc:
        if exc.error_code == "ENDPOINT_NOT_FOUND" or exc.status == 404:
            raise click.ClickException(
                f"MLflow at {mlflow.display} runs without its auth app ({exc.message}): start it with "
                "`hokusai-registry mlflow` (or `serve`) with HOKUSAI_PERMISSIONS on"
            ) from None
        raise click.ClickException(exc.message) from None
    finally:
        mlflow.close()
    found = backfill.counts(proposals)
    if as_json:
        click.echo(backfill.as_json(proposals, applied=apply_grants))
    else:
        for line in backfill.table(proposals):
            say(line)
    sources = ", ".join(str(path) for path in files) if files else "none (HOKUSAI_AUDIT_LOG is not a file)"
    say(f"\nFrom MLflow at {mlflow.display} and the audit log: {sources}.")
    if apply_grants:
        say(
            f"Applied {found['applied']} grants; {found['exists']} already there, "
            f"{found['skipped']} skipped, {found['failed']} failed."
        )
    elif found["new"]:
        say(f"{found['new']} grants to make. Review them, then: hokusai-registry grants backfill --apply")
    else:
        say("Nothing to apply.")
    if found["failed"]:
        sys.exit(1)
