"""Starting MLflow the one right way, and supervising it in `serve`.

Always `mlflow server --serve-artifacts` with an artifacts destination and no default artifact root
(new experiments then get `mlflow-artifacts:` locations, so every byte goes through the gateway), and
never `--static-prefix` (the gateway owns the mount; MLflow stays at the root of a private address).
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import shutil
import signal

# Starts `mlflow server` with an argv built in this module, never through a shell.
import subprocess  # nosec B404
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from hokusai_registry.auth.secret_files import SecretFileError, read_secret
from hokusai_registry.gateway.assembly import assertion_secret
from hokusai_registry.policy.assertions import ADMIN_USER, SECRET_ENV, SECRET_FILE_ENV
from hokusai_registry.settings import ConfigError, Settings
from hokusai_registry.transport.request import UpstreamRequest
from hokusai_registry.transport.upstream import UpstreamError, UpstreamPool

log = logging.getLogger(__name__)

# MLflow 3.17's `mlflow.utils.crypto.CRYPTO_KEK_PASSPHRASE_ENV_VAR`: without it MLflow encrypts its AI-gateway
# secrets with a passphrase every MLflow installation shares.
KEK_PASSPHRASE_ENV = "MLFLOW_CRYPTO_KEK_PASSPHRASE"  # noqa: S105  # nosec B105


def mlflow_executable() -> str:
    beside_python = Path(sys.executable).with_name("mlflow")
    found = str(beside_python) if beside_python.exists() else shutil.which("mlflow")
    if not found:
        raise ConfigError(
            "MLflow is not installed in this environment; install the server extra: "
            "pip install 'hokusai-registry[mlflow]'"
        )
    return found


def mlflow_command(settings: Settings, port: int) -> list[str]:
    data_dir = settings.data_dir.resolve()
    backend = settings.mlflow_backend_store_uri or f"sqlite:///{data_dir / 'mlflow.db'}"
    artifacts = settings.mlflow_artifacts_destination or str(data_dir / "artifacts")
    command = [
        mlflow_executable(),
        "server",
        "--host",
        settings.mlflow_host,
        "--port",
        str(port),
        "--workers",
        str(settings.mlflow_workers),
        "--backend-store-uri",
        backend,
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts,
        # uvloop sets TCP_NODELAY on every accepted connection. On the asyncio loop, uvicorn <= 0.54 with
        # several workers leaves Nagle's algorithm on, and every kept-alive request then waits ~40 ms for
        # a delayed ACK (docs/benchmarks.md, "Kept-alive connections to MLflow").
        "--uvicorn-opts",
        "--loop uvloop",
    ]
    if settings.mlflow_allowed_hosts:
        command += ["--allowed-hosts", settings.mlflow_allowed_hosts]
    if settings.permissions:
        # MLflow's own auth app decides permissions; `auth_config_file` points it at our function.
        command += ["--app-name", "basic-auth"]
    return command


def auth_config_file(settings: Settings) -> Path:
    """MLflow's auth app configuration (rewritten at every start): this package's authorization
    function, the auth database, the default permission, and the administrator admin-scope keys act as."""
    data_dir = settings.data_dir.resolve()
    database = settings.mlflow_auth_database_uri or f"sqlite:///{data_dir / 'mlflow-auth.db'}"
    path = data_dir / "mlflow-auth.ini"
    config = configparser.ConfigParser(interpolation=None)
    config["mlflow"] = {
        "default_permission": settings.default_permission,
        "database_uri": database,
        "admin_username": ADMIN_USER,
        "authorization_function": "hokusai_registry.mlflow_app.authorization:authenticate",
    }
    data_dir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the database URL
    with os.fdopen(descriptor, "w") as written:
        config.write(written)
    return path


def kek_passphrase_file(settings: Settings) -> Path:
    return settings.mlflow_kek_passphrase_file or settings.data_dir / "mlflow-kek-passphrase"


def _kek_passphrase(settings: Settings) -> str:
    try:
        return read_secret(
            kek_passphrase_file(settings),
            setting="HOKUSAI_MLFLOW_KEK_PASSPHRASE_FILE",
            create=settings.mlflow_kek_passphrase_file is None,
            purpose="MLflow encrypts its AI-gateway secrets with the passphrase in it; without it those "
            "secrets cannot be decrypted",
        )
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None


def mlflow_environment(settings: Settings) -> dict[str, str]:
    """MLflow's environment: this one, with the passphrase for its secrets (in the environment only, never
    on a command line): MLFLOW_CRYPTO_KEK_PASSPHRASE as set (a secret of the platform), else the file's;
    with permissions on, the auth app's configuration and the assertion secret (value or file)."""
    environment = dict(os.environ)
    if not environment.get(KEK_PASSPHRASE_ENV):
        environment[KEK_PASSPHRASE_ENV] = _kek_passphrase(settings)
    if settings.permissions:
        secret = assertion_secret(settings)
        environment["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config_file(settings))
        # MLflow's authorization function reads the value if given, else the file (`mlflow_app/`).
        environment.pop(SECRET_ENV, None)
        environment.pop(SECRET_FILE_ENV, None)
        if settings.mlflow_assertion_secret is not None:
            environment[SECRET_ENV] = secret.decode()
        else:
            environment[SECRET_FILE_ENV] = str(settings.assertion_secret_path.resolve())
        # The administrator is always the one admin-scope keys act as, whatever a container's environment
        # says (MLflow lets this variable win over the configuration file).
        environment["MLFLOW_AUTH_ADMIN_USERNAME"] = ADMIN_USER
        # Used once, to create the administrator in an empty auth database; nobody signs in with it.
        environment["MLFLOW_AUTH_ADMIN_PASSWORD"] = secrets.token_urlsafe(24)
        # The auth app's CSRF key must be the same in every worker and replica: derived from the secret.
        environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] = hmac.new(secret, b"flask", hashlib.sha256).hexdigest()
    return environment


class MlflowProcess:
    """`mlflow server` as a child in its own process group, so stopping it stops all its workers."""

    def __init__(
        self, command: list[str], log_path: Path, host: str, port: int, env: dict[str, str] | None = None
    ) -> None:
        self.command = command
        self.env = env
        self.log_path = log_path
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(  # nosec B603
            self.command,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process else None

    def stop(self, grace: float = 15.0) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
        # Workers left behind by a crashed parent share its process group.
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
        if self._log:
            self._log.close()
        self._process = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def wait_until_healthy(
    process: MlflowProcess, timeout: float, on_progress: Callable[[float], None] | None = None
) -> float:
    """Poll MLflow's `/health` until it answers `OK`; returns the seconds it took."""
    started = time.monotonic()
    pool = UpstreamPool(
        process.host, process.port, tls=False, limit=1, connect_timeout=2, pool_timeout=2, idle_timeout=0
    )
    health = UpstreamRequest("GET", b"/health", idempotent=True, read_timeout=2)
    while True:
        elapsed = time.monotonic() - started
        code = process.exit_code()
        if code is not None:
            raise RuntimeError(
                f"MLflow exited with code {code} while starting. Last lines of {process.log_path}:\n"
                + process.log_tail()
            )
        with contextlib.suppress(UpstreamError):
            if await pool.exchange(health) == (200, b"OK"):
                return elapsed
        if elapsed > timeout:
            raise RuntimeError(
                f"MLflow did not answer {process.url}/health within {timeout:g} s "
                f"(HOKUSAI_MLFLOW_STARTUP_TIMEOUT). Last lines of {process.log_path}:\n" + process.log_tail()
            )
        if on_progress:
            on_progress(elapsed)
        await asyncio.sleep(0.5)


async def supervise(process: MlflowProcess, timeout: float) -> None:
    """Restart MLflow when it exits on its own; runs until cancelled."""
    failures = 0
    while True:
        await asyncio.sleep(1.0)
        code = process.exit_code()
        if code is None:
            failures = 0
            continue
        failures += 1
        delay = min(30.0, 2.0**failures)
        log.error(
            "MLflow exited with code %s; restarting in %.0f s. Last lines of %s:\n%s",
            code,
            delay,
            process.log_path,
            process.log_tail(),
        )
        process.stop()
        await asyncio.sleep(delay)
        process.start()
        try:
            await wait_until_healthy(process, timeout)
            log.info("MLflow is back at %s", process.url)
        except RuntimeError as exc:
            log.error("%s", exc)
