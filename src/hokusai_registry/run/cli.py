"""The `hokusai-registry` command. Flags come from the Settings fields, so each has one meaning."""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

import click
from pydantic import ValidationError

from hokusai_registry import __version__
from hokusai_registry.admin.service import KeyAdmin, KeySpec, problems
from hokusai_registry.admin.users import UserAdmin, UserSpec
from hokusai_registry.core.net import redact_url
from hokusai_registry.policy.scopes import SCOPES
from hokusai_registry.settings import ConfigError, Settings, reference_markdown
from hokusai_registry.store.key_store import KeyNameTaken, KeyNotFound
from hokusai_registry.store.user_store import UserNotAllowed, UserNotFound

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


def _run(main: Callable[[Settings], int], settings: Settings) -> None:
    """Runs `main` to its exit code (the worst of its workers' with `--workers N`)."""
    try:
        code = main(settings)
    except ConfigError as exc:
        config_failure(exc)
    except RuntimeError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    if code:
        sys.exit(code)


@click.group()
@click.version_option(__version__, prog_name="hokusai-registry")
def main() -> None:
    """Hokusai Registry: API keys and a streaming gateway in front of an internal MLflow server."""


@main.command()
@setting_options(
    "data_dir", "host", "port", "workers", "public_url", "key_environment", "audit_log", "log_format", "debug"
)
def serve(**flags: Any) -> None:
    """Run MLflow (SQLite, local artifacts) and the gateway in front of it: the embedded default."""
    from hokusai_registry.run.runner import serve_embedded

    _run(serve_embedded, load_settings(**flags))


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


@main.group()
def users() -> None:
    """List, add, disable and enable single-sign-on users."""


def _users(settings: Settings) -> UserAdmin:
    return UserAdmin(_admin(settings).store)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field.")
@setting_options(*KEY_STORE_OPTIONS)
def users_list(as_json: bool, **flags: Any) -> None:
    """List users: who signed in (or sent a token), their kind, scopes, groups and state."""
    infos = _users(load_settings(**flags)).list()
    if as_json:
        click.echo(json.dumps([info.model_dump(mode="json") for info in infos], indent=2))
        return
    if not infos:
        click.echo("No users yet: they appear at their first sign-in (docs/sso.md).")
        return
    click.echo(f"{'NAME':<24}{'KIND':<9}{'SCOPES':<18}{'LAST SEEN (UTC)':<18}{'STATUS':<10}GROUPS")
    for info in infos:
        click.echo(
            f"{info.name[:23]:<24}{info.kind:<9}{' '.join(info.scopes):<18}"
            f"{info.last_seen_at:%Y-%m-%d %H:%M}  {info.status:<10}{' '.join(info.groups)}"
        )


@users.command("add")
@click.argument("name")
@click.option("--scope", type=click.Choice(SCOPES), default="write", show_default=True)
@setting_options(*KEY_STORE_OPTIONS)
def users_add(name: str, scope: str, **flags: Any) -> None:
    """Add a user before their first sign-in (with HOKUSAI_OIDC_AUTO_CREATE_USERS=off, only such users
    may sign in)."""
    spec = _validated(UserSpec, {"name": name, "scope": scope})
    try:
        info = _users(load_settings(**flags)).add(spec, _actor())
    except UserNotAllowed as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(
        f"Added user {info.name} ({' '.join(info.scopes)}); they become active at their first sign-in."
    )


@users.command("disable")
@click.argument("name")
@setting_options(*KEY_STORE_OPTIONS)
def users_disable(name: str, **flags: Any) -> None:
    """Disable a user: every key of theirs is revoked, their browser sessions end and their tokens are
    refused, on every gateway within a second."""
    try:
        info = _users(load_settings(**flags)).disable(name, _actor())
    except UserNotFound as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Disabled user {info.name}: {info.keys_revoked} key(s) revoked, sessions ended.")


@users.command("enable")
@click.argument("name")
@setting_options(*KEY_STORE_OPTIONS)
def users_enable(name: str, **flags: Any) -> None:
    """Let a disabled user sign in again (their revoked keys stay revoked)."""
    try:
        info = _users(load_settings(**flags)).enable(name, _actor())
    except UserNotFound as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Enabled user {info.name}.")


# Teams and grants: MLflow's roles and permissions, changed through MLflow's REST API as its
# administrator (admin/permissions.py), as the admin API and the /admin pages change them.

MLFLOW_OPTIONS = ("mlflow_server_url", "data_dir", "upstream_api_prefix", "audit_log")


def _mlflow_url(settings: Settings) -> tuple[str, str]:
    """MLflow's internal URL and where it came from: the flag or MLFLOW_SERVER_URL, else the file a
    running `serve` on the data directory writes."""
    from hokusai_registry.run import mlflow_address

    if settings.mlflow_server_url:
        return settings.require_upstream(), "MLFLOW_SERVER_URL"
    found = mlflow_address.read(settings.data_dir)
    if found is None:
        config_failure(
            ConfigError(
                "MLFLOW_SERVER_URL is not set and no `serve` runs on HOKUSAI_DATA_DIR "
                f"({settings.data_dir}): pass --mlflow-url http://<internal-mlflow>:5000 (the address "
                "`gateway` forwards to), or --data-dir of the running `serve`"
            )
        )
    return found, f"{mlflow_address.path(settings.data_dir)} (written by `serve`: is it running?)"


def _with_permissions(settings: Settings, work: Callable[[Any], Any]) -> Any:
    """`work(PermissionAdmin)` on an event loop, against the settings' MLflow; a refusal ends the command
    with MLflow's reason on one line, exit code 1."""
    import asyncio

    from hokusai_registry.admin.permission_models import ChangeRefused
    from hokusai_registry.admin.permissions import PermissionAdmin
    from hokusai_registry.core.refusals import Reason
    from hokusai_registry.gateway.assembly import assertion_secret
    from hokusai_registry.ops.audit import configure_audit
    from hokusai_registry.transport.forward import Forwarder

    url, source = _mlflow_url(settings)
    try:
        configure_audit(settings.audit_log)
        secret = assertion_secret(settings) if settings.permissions else None
    except ConfigError as exc:
        config_failure(exc)

    async def run() -> Any:
        forwarder = Forwarder(
            url,
            api_prefix=settings.upstream_api_prefix,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            transfer_idle_timeout=settings.artifact_read_timeout,
            pool_size=2,
            mark=secrets.token_hex(12),
            assertion_secret=secret,
        )
        try:
            return await work(PermissionAdmin(forwarder))
        finally:
            await forwarder.close()

    try:
        return asyncio.run(run())
    except ChangeRefused as exc:
        where = (
            f" (MLflow at {redact_url(url)}, from {source})" if exc.reason is Reason.UPSTREAM_REFUSED else ""
        )
        raise click.ClickException(exc.message + where) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _validated(schema: Any, fields: dict[str, Any], flags: bool = True) -> Any:
    try:
        return schema(**fields)
    except ValidationError as exc:
        raise click.UsageError(problems(exc.errors(), flags=flags)) from None


@main.group()
def teams() -> None:
    """Teams of owners: grants to a team reach every member (MLflow roles)."""


@teams.command("create")
@click.argument("team")
@setting_options(*MLFLOW_OPTIONS)
def teams_create(team: str, **flags: Any) -> None:
    """Create a team (an MLflow role of the same name)."""
    from hokusai_registry.admin.permission_models import TeamSpec

    spec = _validated(TeamSpec, {"name": team}, flags=False)
    _with_permissions(load_settings(**flags), lambda admin: admin.create_team(spec, _actor()))
    click.echo(f"Created team {spec.name}. Add owners with: hokusai-registry teams add {spec.name} OWNER")


@teams.command("delete")
@click.argument("team")
@setting_options(*MLFLOW_OPTIONS)
def teams_delete(team: str, **flags: Any) -> None:
    """Delete a team: its members lose its grants at once (their own grants stay)."""
    deleted = _with_permissions(load_settings(**flags), lambda admin: admin.delete_team(team, _actor()))
    members = ", ".join(deleted.members) or "none"
    click.echo(f"Deleted team {deleted.name} (members were: {members}).")


@teams.command("add")
@click.argument("team")
@click.argument("owner")
@setting_options(*MLFLOW_OPTIONS)
def teams_add(team: str, owner: str, **flags: Any) -> None:
    """Add an owner (a key's owner) to a team."""
    from hokusai_registry.admin.permission_models import MemberSpec

    spec = _validated(MemberSpec, {"owner": owner}, flags=False)
    change = _with_permissions(load_settings(**flags), lambda admin: admin.add_member(team, spec, _actor()))
    verb = "Added" if change.changed else "Already there:"
    click.echo(f"{verb} {spec.owner} in team {team} (members: {', '.join(change.team.members)}).")


@teams.command("remove")
@click.argument("team")
@click.argument("owner")
@setting_options(*MLFLOW_OPTIONS)
def teams_remove(team: str, owner: str, **flags: Any) -> None:
    """Take an owner out of a team."""
    from hokusai_registry.admin.permission_models import MemberSpec

    spec = _validated(MemberSpec, {"owner": owner}, flags=False)
    change = _with_permissions(
        load_settings(**flags), lambda admin: admin.remove_member(team, spec, _actor())
    )
    members = ", ".join(change.team.members) or "none"
    click.echo(f"Removed {spec.owner} from team {team} (members: {members}).")


@teams.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array: each team's name and members.")
@setting_options(*MLFLOW_OPTIONS)
def teams_list(as_json: bool, **flags: Any) -> None:
    """List teams and their members."""
    found = _with_permissions(load_settings(**flags), lambda admin: admin.teams())
    if as_json:
        click.echo(json.dumps([team.model_dump(mode="json") for team in found], indent=2))
        return
    if not found:
        click.echo("No teams yet. Create one with: hokusai-registry teams create TEAM")
        return
    click.echo(f"{'TEAM':<24}MEMBERS")
    for team in found:
        click.echo(f"{team.name:<24}{', '.join(team.members) or '-'}")


@main.group()
def grants() -> None:
    """Per-resource permissions: who may read and change which experiment, model or prompt."""


def grantee_options(function: F) -> F:
    for option in reversed(
        (
            click.option("--owner", default=None, help="The owner (a key's owner) the grant is for."),
            click.option("--team", default=None, help="The team the grant is for (every member)."),
        )
    ):
        function = option(function)
    return function


def resource_options(function: F) -> F:
    for option in reversed(
        (
            click.option(
                "--experiment", default=None, help="An experiment: its id, else its name; * for all."
            ),
            click.option("--model", default=None, help="A registered model's name; * for all."),
            click.option("--prompt", default=None, help="A prompt's name; * for all."),
            click.option(
                "--scorer",
                default=None,
                help="A scorer: EXPERIMENT/NAME (the experiment's id or name, the scorer's name); * for all.",
            ),
            click.option(
                "--gateway-endpoint",
                default=None,
                help="An AI-gateway endpoint: its id, else its name; * for all.",
            ),
        )
    ):
        function = option(function)
    return function


def _one(flags: dict[str, str | None], what: str) -> None:
    given = [name for name, value in flags.items() if value is not None]
    if len(given) != 1:
        named = " or ".join("--" + name.replace("_", "-") for name in flags)
        raise click.UsageError(f"give exactly one {what}: {named}")


def _grant_fields(flags: dict[str, Any]) -> dict[str, Any]:
    grantee = {name: flags.pop(name) for name in ("owner", "team")}
    resource = {
        name: flags.pop(name) for name in ("experiment", "model", "prompt", "scorer", "gateway_endpoint")
    }
    _one(grantee, "grantee")
    _one(resource, "resource")
    return {**grantee, **resource}


@grants.command("add")
@grantee_options
@resource_options
@click.option(
    "--level",
    required=True,
    type=click.Choice(("READ", "USE", "EDIT", "MANAGE", "DENY"), case_sensitive=False),
    help="READ; USE: also invoke; EDIT: also change; MANAGE: also delete and grant; DENY: none of it, "
    "whatever else is granted.",
)
@setting_options(*MLFLOW_OPTIONS)
def grants_add(level: str, **flags: Any) -> None:
    """Grant an owner or a team a level on one resource (or change the level it has)."""
    from hokusai_registry.admin.permission_models import GrantSpec

    spec = _validated(GrantSpec, {**_grant_fields(flags), "level": level.upper()})
    change = _with_permissions(load_settings(**flags), lambda admin: admin.add_grant(spec, _actor()))
    grant = change.grant
    if not change.changed:
        click.echo(f"Unchanged: {grant.grantee} already has {grant.level} on {grant.resource}.")
        return
    was = f" (was {change.previous})" if change.previous else ""
    click.echo(f"Granted {grant.level} on {grant.resource} to {grant.grantee}{was}.")


@grants.command("remove")
@grantee_options
@resource_options
@setting_options(*MLFLOW_OPTIONS)
def grants_remove(**flags: Any) -> None:
    """Remove an owner's or a team's grant on one resource (MLflow's default permission applies again,
    unless another grant does)."""
    from hokusai_registry.admin.permission_models import GrantTarget

    target = _validated(GrantTarget, _grant_fields(flags))
    removed = _with_permissions(load_settings(**flags), lambda admin: admin.remove_grant(target, _actor()))
    click.echo(f"Removed {removed.grantee}'s {removed.level} on {removed.resource}.")


@grants.command("list")
@grantee_options
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field.")
@setting_options(*MLFLOW_OPTIONS)
def grants_list(owner: str | None, team: str | None, as_json: bool, **flags: Any) -> None:
    """List grants: all, an owner's (its own and its teams'), or a team's."""
    if owner is not None and team is not None:
        raise click.UsageError("give at most one of --owner and --team")
    found = _with_permissions(load_settings(**flags), lambda admin: admin.grants(owner=owner, team=team))
    if as_json:
        click.echo(json.dumps([grant.model_dump(mode="json") for grant in found], indent=2))
        return
    if not found:
        click.echo(
            "No grants. Make one with: hokusai-registry grants add --owner OWNER --experiment ID --level EDIT"
        )
        return
    click.echo(f"{'GRANTEE':<32}{'LEVEL':<8}RESOURCE")
    for grant in found:
        click.echo(f"{grant.grantee[:31]:<32}{grant.level:<8}{grant.resource}")


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


# Webhooks: managed through the gateway's admin REST API (/api/v1/webhooks) with an admin key, so the
# gateway that seals their secrets and delivers their events is the one that takes them.


@main.group()
def webhooks() -> None:
    """Signed webhooks for registry events (docs/webhooks.md), through a gateway's admin API."""


def webhook_options(function: F) -> F:
    function = click.option(
        "--api-key",
        default=None,
        help="An admin key; default HOKUSAI_API_KEY, then MLFLOW_TRACKING_TOKEN. Never printed.",
    )(function)
    return click.option(
        "--gateway",
        "gateway_url",
        envvar="HOKUSAI_GATEWAY_URL",
        default=None,
        help="The gateway's URL [env HOKUSAI_GATEWAY_URL]; default HOKUSAI_PUBLIC_URL, else "
        "http://HOKUSAI_HOST:HOKUSAI_PORT.",
    )(function)


def _webhooks_api(
    gateway_url: str | None, api_key: str | None, method: str, path: str, body: Any = None
) -> Any:
    """One call of the admin API; a refusal ends the command with the gateway's message, exit code 1."""
    import httpx

    base = (gateway_url or load_settings().gateway_url).rstrip("/")
    key = api_key or os.environ.get("HOKUSAI_API_KEY") or os.environ.get("MLFLOW_TRACKING_TOKEN")
    if not key:
        raise click.UsageError("give an admin key: --api-key, HOKUSAI_API_KEY or MLFLOW_TRACKING_TOKEN")
    try:
        response = httpx.request(
            method,
            base + "/api/v1/webhooks" + path,
            json=body,
            headers={"authorization": f"Bearer {key}"},
            timeout=60.0,
            follow_redirects=False,
            trust_env=False,
        )
    except httpx.HTTPError as exc:
        click.echo(f"Error: the gateway at {redact_url(base)} cannot be reached: {exc}", err=True)
        sys.exit(1)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400:
        message = answer.get("message") if isinstance(answer, dict) else None
        click.echo(f"Error: {message or f'HTTP {response.status_code} from {redact_url(base)}'}", err=True)
        sys.exit(1)
    return answer


@webhooks.command("add")
@click.option("--url", required=True, help="http(s) URL the gateway POSTs each event to.")
@click.option(
    "--events",
    required=True,
    help="Comma-separated event names (e.g. model_version.created,model_version_alias.created), or '*'.",
)
@click.option(
    "--secret-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File holding the signing secret (at least 16 characters); default: a new random one, printed once.",
)
@click.option("--description", default=None, help="What the webhook is for.")
@webhook_options
def webhooks_add(
    url: str,
    events: str,
    secret_file: Path | None,
    description: str | None,
    gateway_url: str | None,
    api_key: str | None,
) -> None:
    """Add a webhook. Its signing secret is printed once, alone on standard output (unless it came from
    --secret-file); the gateway keeps it sealed and never shows it again."""
    from hokusai_registry.policy.webhooks import check_secret, check_url, parse_events

    try:
        spec: dict[str, Any] = {"url": check_url(url), "events": list(parse_events(events))}
        if secret_file is not None:
            spec["secret"] = check_secret(secret_file.read_text())
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if description:
        spec["description"] = description
    created = _webhooks_api(gateway_url, api_key, "POST", "", spec)
    click.echo(
        f"Added webhook {created['id']} ({created['url']}, events: {', '.join(created['events'])}).", err=True
    )
    if secret_file is None:
        click.echo("Its signing secret is shown only this once:", err=True)
        click.echo(created["secret"])


@webhooks.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field (no secrets).")
@webhook_options
def webhooks_list(as_json: bool, gateway_url: str | None, api_key: str | None) -> None:
    """List webhooks (never their secrets)."""
    listed = _webhooks_api(gateway_url, api_key, "GET", "")
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        click.echo("No webhooks yet. Add one with: hokusai-registry webhooks add --url URL --events EVENTS")
        return
    click.echo(f"{'ID':<18}{'EVENTS':<48}URL")
    for webhook in listed:
        click.echo(f"{webhook['id']:<18}{','.join(webhook['events'])[:47]:<48}{webhook['url']}")


@webhooks.command("remove")
@click.argument("webhook_id")
@webhook_options
def webhooks_remove(webhook_id: str, gateway_url: str | None, api_key: str | None) -> None:
    """Remove a webhook: its pending deliveries are cancelled, its delivery log kept."""
    removed = _webhooks_api(gateway_url, api_key, "DELETE", f"/{webhook_id}")
    click.echo(f"Removed webhook {removed['id']} ({removed['url']}).")


@webhooks.command("test")
@click.argument("webhook_id")
@webhook_options
def webhooks_test(webhook_id: str, gateway_url: str | None, api_key: str | None) -> None:
    """Send a webhook.test event now, once; exit code 0 only if the receiver answered 2xx."""
    result = _webhooks_api(gateway_url, api_key, "POST", f"/{webhook_id}/test")
    if result["delivered"]:
        click.echo(
            f"Delivered {result['delivery_id']}: HTTP {result['status_code']} "
            f"in {result['duration_ms']:.0f} ms."
        )
        return
    click.echo(f"Not delivered ({result['delivery_id']}): {result['error']}", err=True)
    sys.exit(1)


@webhooks.command("deliveries")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, each delivery with its attempts.")
@webhook_options
def webhooks_deliveries(
    webhook_id: str, limit: int, as_json: bool, gateway_url: str | None, api_key: str | None
) -> None:
    """A webhook's latest deliveries, newest first, with every attempt (status, error, duration)."""
    listed = _webhooks_api(gateway_url, api_key, "GET", f"/{webhook_id}/deliveries?limit={limit}")
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        click.echo("No deliveries yet.")
        return
    for delivery in listed:
        state = delivery["state"]
        if state == "pending" and delivery["next_attempt_at"]:
            state += f", next attempt {delivery['next_attempt_at']}"
        click.echo(
            f"{delivery['id']}  {delivery['event']}  {state}  "
            f"({delivery['attempts']}/{delivery['max_attempts']} attempts)  {delivery['created_at']}"
        )
        for attempt in delivery["log"]:
            answer = f"HTTP {attempt['status_code']}" if attempt["status_code"] is not None else "no answer"
            error = f"  {attempt['error']}" if attempt["error"] else ""
            click.echo(
                f"    #{attempt['attempt']}  {attempt['started_at']}  {answer}  "
                f"{attempt['duration_ms']:.0f} ms{error}"
            )


@main.command("config-reference")
def config_reference() -> None:
    """Print the configuration reference (docs/configuration.md)."""
    click.echo(reference_markdown(), nl=False)


# -- `grants backfill` (the upgrade path): logic in admin/backfill.py.


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
    mlflow_url, _ = _mlflow_url(settings)
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
    mlflow = SignedMlflow(mlflow_url, secret, api_prefix=settings.upstream_api_prefix)
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


# -- Protected aliases (Step 13). Rules live in the key store (`protect`, like `keys`); promotions are made
# with the caller's own key through the gateway's REST API (`promotions`): who asks and who approves is the
# key's owner, as in the MLflow client.


@main.group()
def protect() -> None:
    """Protected aliases and stages: changes need approved promotion requests."""


def _rules(settings: Settings) -> Any:
    from hokusai_registry.admin.promotions import RuleAdmin
    from hokusai_registry.gateway.assembly import open_key_store
    from hokusai_registry.ops.audit import configure_audit
    from hokusai_registry.store.protection_store import ProtectionStore

    try:
        configure_audit(settings.audit_log)
        return RuleAdmin(ProtectionStore(open_key_store(settings).engine))
    except ConfigError as exc:
        config_failure(exc)


@protect.command("add")
@click.option("--model", required=True, help="A glob of registered model names, e.g. 'fraud-*'.")
@click.option("--alias", default=None, help="A glob of alias names, e.g. production.")
@click.option("--stage", default=None, help="A glob of legacy stages, e.g. Production (older clients).")
@click.option("--approvers", default=None, help="The team whose members approve; default: admins.")
@click.option(
    "--approvals", type=int, default=1, show_default=True, help="Approvals needed, from distinct people."
)
@setting_options(*KEY_STORE_OPTIONS)
def protect_add(
    model: str, alias: str | None, stage: str | None, approvers: str | None, approvals: int, **flags: Any
) -> None:
    """Protect aliases (or stages) of models: a direct change is refused, whoever asks; a promotion request
    needs APPROVALS approvals from members of the approvers' team."""
    from hokusai_registry.admin.promotion_models import RuleSpec

    fields = {"model": model, "alias": alias, "stage": stage, "approvers": approvers, "approvals": approvals}
    spec = _validated(RuleSpec, fields)
    rule = _rules(load_settings(**flags)).add(spec, _actor())
    click.echo(f"Added rule {rule.id}: {rule.target} of models {rule.model} needs {rule.who}.")


@protect.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field.")
@setting_options(*KEY_STORE_OPTIONS)
def protect_list(as_json: bool, **flags: Any) -> None:
    """List protection rules."""
    from hokusai_registry.admin.promotion_models import RuleInfo

    rules = _rules(load_settings(**flags)).list()
    if as_json:
        click.echo(json.dumps([RuleInfo.of(rule).model_dump(mode="json") for rule in rules], indent=2))
        return
    if not rules:
        click.echo("No rules. Add one with: hokusai-registry protect add --model NAME --alias production")
        return
    click.echo(f"{'RULE':<16}{'MODELS':<24}{'PROTECTS':<24}APPROVALS")
    for rule in rules:
        click.echo(f"{rule.id:<16}{rule.model[:23]:<24}{rule.target[:23]:<24}{rule.who}")


@protect.command("remove")
@click.argument("rule_id")
@setting_options(*KEY_STORE_OPTIONS)
def protect_remove(rule_id: str, **flags: Any) -> None:
    """Remove a protection rule (pending requests keep the terms they were made with)."""
    from hokusai_registry.store.protection_store import RuleNotFound

    try:
        rule = _rules(load_settings(**flags)).remove(rule_id, _actor())
    except RuleNotFound as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"Removed rule {rule.id} ({rule.target} of models {rule.model}).")


GATEWAY_OPTIONS = (
    click.option(
        "--url",
        default=None,
        help="The gateway (its tracking URI works too); default HOKUSAI_PUBLIC_URL, then "
        "MLFLOW_TRACKING_URI.",
    ),
    click.option(
        "--api-key",
        default=None,
        help="Your key; default HOKUSAI_API_KEY, then MLFLOW_TRACKING_TOKEN. Never printed.",
    ),
)


def gateway_options(function: F) -> F:
    for option in reversed(GATEWAY_OPTIONS):
        function = option(function)
    return function


def _gateway_call(
    url: str | None, api_key: str | None, method: str, path: str, body: Any = None, **params: Any
) -> Any:
    """One call of the gateway's REST API with the caller's key; its JSON, or the gateway's message and
    exit code 1."""
    import requests

    base = url or os.environ.get("HOKUSAI_PUBLIC_URL") or os.environ.get("MLFLOW_TRACKING_URI")
    if not base or not base.startswith(("http://", "https://")):
        raise click.UsageError(
            "give the gateway's URL: --url https://registry.example.com (or MLFLOW_TRACKING_URI)"
        )
    base = base.rstrip("/")
    for mount in ("/api/mlflow", "/mlflow"):
        if base.endswith(mount):
            base = base[: -len(mount)]
            break
    key = api_key or os.environ.get("HOKUSAI_API_KEY") or os.environ.get("MLFLOW_TRACKING_TOKEN")
    if not key:
        raise click.UsageError("give your key: --api-key, HOKUSAI_API_KEY or MLFLOW_TRACKING_TOKEN")
    try:
        response = requests.request(
            method,
            base + path,
            headers={"Authorization": f"Bearer {key}"},
            json=body,
            params={name: value for name, value in params.items() if value is not None} or None,
            timeout=60,
        )
    except requests.RequestException as exc:
        raise click.ClickException(
            f"the gateway at {redact_url(base)} did not answer: {type(exc).__name__}"
        ) from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.status_code >= 400:
        message = answer.get("message") if isinstance(answer, dict) else None
        raise click.ClickException(str(message or f"the gateway answered {response.status_code}"))
    return answer


@main.group()
def promotions() -> None:
    """Promotion requests for protected aliases: ask, approve, reject, cancel, and the history."""


def _target(alias: str | None, stage: str | None) -> dict[str, str]:
    if (alias is None) == (stage is None):
        raise click.UsageError("give exactly one of --alias and --stage")
    return {"alias": alias} if alias is not None else {"stage": str(stage)}


def _shown(promotion: dict[str, Any]) -> str:
    target = f"@{promotion['alias']}" if promotion.get("alias") else f"stage {promotion['stage']}"
    approvals = f"{len(promotion['approvals'])}/{promotion['approvals_needed']}"
    return (
        f"{promotion['id']} {promotion['model']} {target} -> version {promotion['version']}: "
        f"{promotion['state']} ({approvals} approvals)"
    )


@promotions.command("request")
@click.option("--model", required=True, help="The registered model.")
@click.option("--version", required=True, help="The version the alias (or stage) should point at.")
@click.option("--alias", default=None, help="The protected alias, e.g. production.")
@click.option("--stage", default=None, help="Or the protected legacy stage, e.g. Production.")
@click.option("--reason", default=None, help="Why, for the approvers.")
@gateway_options
def promotions_request(
    model: str,
    version: str,
    alias: str | None,
    stage: str | None,
    reason: str | None,
    url: str | None,
    api_key: str | None,
) -> None:
    """Ask for a protected alias (or stage) to point at a version; approvers see it in `promotions list`
    and on the /promotions page."""
    body = {"model": model, "version": version, **_target(alias, stage), "reason": reason}
    answer = _gateway_call(url, api_key, "POST", "/api/v1/promotions", body)
    who = f"team {answer['approvers']}" if answer.get("approvers") else "admins"
    click.echo(
        f"Requested {_shown(answer)}; {who} approve it with: "
        f"hokusai-registry promotions approve {answer['id']}"
    )


@promotions.command("list")
@click.option("--pending", is_flag=True, help="Only the requests still waiting for approvals.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field.")
@gateway_options
def promotions_list(pending: bool, as_json: bool, url: str | None, api_key: str | None) -> None:
    """Promotion requests on models you may read (admins: all), newest first."""
    answer = _gateway_call(url, api_key, "GET", "/api/v1/promotions", pending="true" if pending else None)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    if not answer:
        click.echo("No promotion requests.")
        return
    click.echo(
        f"{'REQUEST':<16}{'MODEL':<24}{'TARGET':<20}{'VERSION':<9}{'STATE':<11}{'APPROVALS':<11}REQUESTER"
    )
    for entry in answer:
        target = f"@{entry['alias']}" if entry.get("alias") else f"stage {entry['stage']}"
        approvals = f"{len(entry['approvals'])}/{entry['approvals_needed']}"
        click.echo(
            f"{entry['id']:<16}{entry['model'][:23]:<24}{target[:19]:<20}{entry['version']:<9}{entry['state']:<11}"
            f"{approvals:<11}{entry['requester']}"
        )


@promotions.command("approve")
@click.argument("request_id")
@click.option("--comment", default=None, help="For the record.")
@gateway_options
def promotions_approve(request_id: str, comment: str | None, url: str | None, api_key: str | None) -> None:
    """Approve a request (a member of the rule's team, not its requester); the last approval needed makes the
    change."""
    answer = _gateway_call(
        url, api_key, "POST", f"/api/v1/promotions/{request_id}/approve", {"comment": comment}
    )
    click.echo(("Applied: " if answer["state"] == "applied" else "Approved: ") + _shown(answer))


@promotions.command("reject")
@click.argument("request_id")
@click.option("--comment", default=None, help="Why, for the requester.")
@gateway_options
def promotions_reject(request_id: str, comment: str | None, url: str | None, api_key: str | None) -> None:
    """Reject a request (a member of the rule's team)."""
    answer = _gateway_call(
        url, api_key, "POST", f"/api/v1/promotions/{request_id}/reject", {"comment": comment}
    )
    click.echo("Rejected: " + _shown(answer))


@promotions.command("cancel")
@click.argument("request_id")
@gateway_options
def promotions_cancel(request_id: str, url: str | None, api_key: str | None) -> None:
    """Withdraw your request (admins: any)."""
    answer = _gateway_call(url, api_key, "POST", f"/api/v1/promotions/{request_id}/cancel")
    click.echo("Cancelled: " + _shown(answer))


@promotions.command("history")
@click.option("--model", default=None, help="One model's history; default: every model you may read.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every field.")
@gateway_options
def promotions_history(model: str | None, as_json: bool, url: str | None, api_key: str | None) -> None:
    """Every alias and stage movement through the gateway, newest first: promotions (requester, approvers),
    admin overrides and direct changes of unprotected aliases."""
    answer = _gateway_call(url, api_key, "GET", "/api/v1/promotions/history", model=model)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
        return
    if not answer:
        click.echo("No alias movements recorded.")
        return
    click.echo(f"{'WHEN (UTC)':<18}{'MODEL':<24}{'CHANGE':<30}{'KIND':<10}{'BY':<20}APPROVED BY")
    for entry in answer:
        when = entry["at"][:16].replace("T", " ")
        what = (
            f"@{entry['alias']}"
            if entry.get("alias")
            else f"stage {entry['stage']}"
            if entry.get("stage")
            else ""
        )
        change = f"{entry['action']} {what}" + (f" -> {entry['version']}" if entry.get("version") else "")
        approvers = ", ".join(entry["approvers"]) or "-"
        click.echo(
            f"{when:<18}{entry['model'][:23]:<24}{change[:29]:<30}{entry['kind']:<10}{entry['actor'][:19]:<20}{approvers}"
        )
