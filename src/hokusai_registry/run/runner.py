"""What `serve` and `gateway` do, start to stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click
import uvloop

from hokusai_registry import __version__
from hokusai_registry.admin.service import KeyAdmin, KeySpec
from hokusai_registry.core.net import redact_url
from hokusai_registry.gateway.assembly import build_gateway, open_key_store
from hokusai_registry.ops.audit import configure_audit
from hokusai_registry.ops.logs import configure_logging
from hokusai_registry.run import mlflow_address
from hokusai_registry.run.mlflow_process import (
    MlflowProcess,
    mlflow_command,
    mlflow_environment,
    supervise,
    wait_until_healthy,
)
from hokusai_registry.run.server import GatewayServer, bind_socket, raise_file_limit
from hokusai_registry.run.workers import STOP_SIGNALS, forked
from hokusai_registry.settings import ConfigError, Settings
from hokusai_registry.store.key_store import KeyStore

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _out(text: str = "") -> None:
    click.echo(text)


class _Progress:
    """A live progress line on a terminal; a line every 5 s in a log."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stdout.isatty()
        self.last_line = -5.0

    def __call__(self, elapsed: float) -> None:
        if self.tty:
            click.echo(f"\r{self.label} {elapsed:4.0f} s", nl=False)
        elif elapsed - self.last_line >= 5:
            self.last_line = elapsed
            _out(f"{self.label} {elapsed:.0f} s")

    def done(self, text: str) -> None:
        _out(("\r" if self.tty else "") + f"{self.label} {text}")


def _export_lines(settings: Settings, key: str | None) -> list[str]:
    lines = [f"  export MLFLOW_TRACKING_URI={settings.gateway_url}/mlflow"]
    if key:
        lines.append(f"  export MLFLOW_TRACKING_TOKEN={key}")
    return lines


def _key_advice(settings: Settings, store: KeyStore) -> list[str]:
    """The first start creates an admin key and shows it once; later starts say how to get one."""
    if store.count() == 0:
        key = (
            KeyAdmin(store, settings.key_environment)
            .create(KeySpec(name="admin", scope="admin"), "serve:first-start")
            .key
        )
        return [
            "",
            "First start: an admin key was created. It is shown only this once; keep it safe:",
            "",
            *_export_lines(settings, key),
        ]
    return [
        "",
        "Use an existing key, or create one with:",
        f"  hokusai-registry keys create --name NAME --data-dir {settings.data_dir}",
        "",
        *_export_lines(settings, None),
        "  export MLFLOW_TRACKING_TOKEN=<your key>",
    ]


def _workers_note(settings: Settings) -> str:
    """What the start-up line says after the gateway's URL when it runs in several processes."""
    return f" ({settings.workers} worker processes)" if settings.workers > 1 else ""


def serve_embedded(settings: Settings) -> int:
    """Gateway plus a supervised MLflow on SQLite and local artifacts under the data directory: in one
    process, or with `--workers N` a parent that runs MLflow and N gateway workers. The exit code."""
    configure_logging(settings.log_format, settings.debug)
    configure_audit(settings.audit_log)
    if settings.mlflow_server_url:
        raise ConfigError(
            "MLFLOW_SERVER_URL is set, but `serve` starts its own MLflow: unset it, or run "
            "`hokusai-registry gateway` to use that MLflow"
        )
    store = open_key_store(settings)
    raise_file_limit()
    listener = bind_socket(settings.host, settings.port)
    settings = settings.model_copy(update={"port": listener.getsockname()[1]})
    mlflow_port = settings.mlflow_port or _free_port(settings.mlflow_host)
    mlflow = MlflowProcess(
        mlflow_command(settings, mlflow_port),
        settings.data_dir.resolve() / "mlflow.log",
        settings.mlflow_host,
        mlflow_port,
        mlflow_environment(settings),
    )
    settings.check_upstream_is_not_self(mlflow.url)
    _out(f"Hokusai Registry {__version__}: data in {settings.data_dir.resolve()}")
    if settings.workers == 1:
        server = GatewayServer(build_gateway(settings, store, mlflow.url), settings)

        def stop_server() -> None:
            server.should_exit = True

        # The server catches SIGINT and SIGTERM itself while it runs.
        return run(_with_mlflow(settings, mlflow, store, server.serve(sockets=[listener]), stop_server))
    store.close()  # each worker opens its own connections
    # Forked before MLflow starts, so no worker holds MLflow's process or its log.
    with forked(
        settings.workers, lambda metrics_dir: run(_serve_gateway(settings, listener, mlflow.url, metrics_dir))
    ) as workers:

        async def parent() -> int:
            loop = asyncio.get_running_loop()
            for sig in STOP_SIGNALS:  # as before the loop ran (`Workers.fork`), now through the loop
                loop.add_signal_handler(sig, workers.stop)
            store = KeyStore(settings.resolved_key_store_url)
            return await _with_mlflow(settings, mlflow, store, asyncio.to_thread(workers.wait), workers.stop)

        return run(parent())


async def _with_mlflow(
    settings: Settings,
    mlflow: MlflowProcess,
    store: KeyStore,
    gateway: Coroutine[Any, Any, int | None],
    stop_gateway: Callable[[], None],
) -> int:
    """Starts MLflow and supervises it while `gateway` serves; stops it when the gateway has stopped
    (Ctrl-C, SIGTERM, or its workers gone). `store` tells the first start's admin key, and is closed at
    the end. The gateway's exit code."""
    gateway_task = asyncio.create_task(gateway)
    supervisor: asyncio.Task[None] | None = None
    try:
        mlflow.start()
        # For `teams` and `grants` on this data directory (they talk to MLflow itself); gone on exit.
        mlflow_address.write(settings.data_dir, mlflow.url)
        progress = _Progress(f"Starting MLflow at {mlflow.url} (log: {mlflow.log_path}) ...")
        waiting = asyncio.create_task(wait_until_healthy(mlflow, settings.mlflow_startup_timeout, progress))
        await asyncio.wait({waiting, gateway_task}, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():  # the gateway stopped first (Ctrl-C while waiting)
            waiting.cancel()
            return gateway_task.result() or 0
        progress.done(f"ready in {waiting.result():.1f} s")
        supervisor = asyncio.create_task(supervise(mlflow, settings.mlflow_startup_timeout))
        for line in [
            "",
            f"Gateway:   {settings.gateway_url}{_workers_note(settings)}",
            f"MLflow UI: {settings.gateway_url}/mlflow/  (sign in with an API key)",
            *_key_advice(settings, store),
            "",
            "Press Ctrl-C to stop.",
        ]:
            _out(line)
        return await gateway_task or 0
    finally:
        if supervisor:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        if not gateway_task.done():
            stop_gateway()
            await gateway_task
        _out("Stopping MLflow ...")
        mlflow_address.remove(mlflow_address.path(settings.data_dir))
        await asyncio.to_thread(mlflow.stop)
        store.close()
        _out("Stopped.")


def run_gateway(settings: Settings) -> int:
    """The gateway alone, in front of an MLflow that runs elsewhere, in one or more processes; the exit
    code (the worst of its workers')."""
    configure_logging(settings.log_format, settings.debug)
    configure_audit(settings.audit_log)
    settings.require_upstream()
    store = open_key_store(settings)
    raise_file_limit()
    listener = bind_socket(settings.host, settings.port)
    settings = settings.model_copy(update={"port": listener.getsockname()[1]})
    upstream = settings.require_upstream()  # again, now that port 0 is a real port
    for warning in settings.upstream_warnings(upstream):
        logging.getLogger(__name__).warning("%s", warning)
    _out(
        f"Hokusai Registry {__version__} gateway on {settings.gateway_url}{_workers_note(settings)}, "
        f"forwarding to MLflow at {redact_url(upstream)}"
    )
    if store.count() == 0 and not settings.auth_service_url:
        _out(
            "No API keys yet: hokusai-registry keys create --name NAME --admin "
            f"--data-dir {settings.data_dir}"
        )
    store.close()  # each worker opens its own connections
    if settings.workers == 1:
        run(_serve_gateway(settings, listener, upstream))
        return 0
    with forked(
        settings.workers, lambda metrics_dir: run(_serve_gateway(settings, listener, upstream, metrics_dir))
    ) as workers:
        return workers.wait()


async def _serve_gateway(
    settings: Settings, listener: socket.socket, upstream: str, metrics_dir: Path | None = None
) -> None:
    """One gateway process; `metrics_dir` when it is one of several workers."""
    store = KeyStore(settings.resolved_key_store_url)
    try:
        gateway = build_gateway(settings, store, upstream, metrics_dir=metrics_dir)
        await GatewayServer(gateway, settings).serve(sockets=[listener])
    finally:
        store.close()
