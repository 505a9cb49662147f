"""The peers `make bench` measures beside the gateway, each started here the way its documentation says.

Every MLflow a peer fronts is started like the direct one (`mlflow_command`: `mlflow server
--serve-artifacts`, SQLite, 2 workers, uvloop), in its own data directory; only its `--app-name` and that
app's configuration differ. The caller of each peer is an ordinary user (not an administrator), who owns
the objects it creates for the calls, as the gateway's key owner does with permissions on. A peer that
cannot run (not installed, fails to start) is left out with the reason, never stops the run.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import importlib.util
import secrets
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.model import BASIC_AUTH_CACHED_PATH, BASIC_AUTH_PATH, NGINX_AUTH_PATH, OIDC_AUTH_PATH
from bench.stack import ROOT, Processes, free_port, nginx_binary, nginx_config, wait_http
from hokusai_registry.run.mlflow_process import mlflow_command, mlflow_environment
from hokusai_registry.settings import Settings

# mlflow-oidc-auth in its own environment (its pins would fight the project's), installed by `make bench`.
OIDC_AUTH_VENV = ROOT / ".venv" / "peers" / "mlflow-oidc-auth"
# The TTL of the basic-auth peer with its credential cache on: what basic_auth.ini suggests.
AUTH_CACHE_TTL_SECONDS = 60
USER = "bench"
# How long an MLflow may take to answer /health: several start at once on 2 cores.
START_TIMEOUT = 300


class PeerUnavailable(Exception):
    """Why a peer cannot be measured here."""


@dataclass(frozen=True)
class Peer:
    """A running peer: where to send the calls, the caller's credentials, and how it is configured."""

    base: str
    headers: dict[str, str]
    how: str


@dataclass(frozen=True)
class Launch:
    """A peer whose process is starting: `ready` answers 200 once it serves, `finish` then creates its
    user and returns the peer."""

    ready: str
    log: Path
    finish: Callable[[], Peer]


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _mlflow(workdir: Path, name: str) -> tuple[list[str], dict[str, str], Path, str]:
    """An MLflow started as the direct one is: its command, environment, data directory and URL."""
    data_dir = workdir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings.load(data_dir=data_dir, permissions=False)
    port = free_port()
    return mlflow_command(settings, port), mlflow_environment(settings), data_dir, f"http://127.0.0.1:{port}"


def shipped_basic_auth_ini() -> Path:
    """MLflow's own basic_auth.ini (found without importing the auth app, which would open its database)."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or spec.origin is None:
        raise PeerUnavailable("MLflow is not installed")
    return Path(spec.origin).parent / "server" / "auth" / "basic_auth.ini"


def basic_auth(processes: Processes, workdir: Path, cache_ttl: int) -> Launch:
    """MLflow's `--app-name basic-auth` with its basic_auth.ini as shipped (a SQLite auth database in the
    working directory, READ by default) or, with `cache_ttl`, a copy with `auth_cache_ttl_seconds` set,
    named by MLFLOW_AUTH_CONFIG_PATH. The administrator's password comes from MLFLOW_AUTH_ADMIN_PASSWORD
    (MLflow ships none); the administrator creates the caller through MLflow's users API."""
    name = "mlflow-basic-auth-cached" if cache_ttl else "mlflow-basic-auth"
    command, env, data_dir, url = _mlflow(workdir, name)
    admin_password, password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    env.update(
        {
            "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            # What MLflow asks of any deployment with more than one worker: one CSRF key for all.
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            # Empty: the shipped file (MLflow reads the variable with `or` its default).
            "MLFLOW_AUTH_CONFIG_PATH": "",
        }
    )
    shipped = shipped_basic_auth_ini()
    how = (
        "`mlflow server --app-name basic-auth`, basic_auth.ini as shipped (READ by default, SQLite auth "
        "database, `auth_cache_ttl_seconds = 0`): every request checks the caller's password hash "
        "(Werkzeug's default, scrypt) and reads its permissions"
    )
    if cache_ttl:
        config = configparser.ConfigParser(interpolation=None)
        config.read(shipped)
        config["mlflow"]["auth_cache_ttl_seconds"] = str(cache_ttl)
        path = data_dir / "basic_auth.ini"
        with path.open("w") as written:
            config.write(written)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(path)
        how = (
            f"the same with `auth_cache_ttl_seconds = {cache_ttl}` (a copy of basic_auth.ini named by "
            "`MLFLOW_AUTH_CONFIG_PATH`): a credential's hash is checked once per TTL per worker; permissions "
            "are still read on every request"
        )
    processes.start(name, [*command, "--app-name", "basic-auth"], env, cwd=data_dir)

    def finish() -> Peer:
        response = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": USER, "password": password},
            headers=basic("admin", admin_password),
            timeout=60,
        )
        if response.status_code != 200:
            raise PeerUnavailable(
                f"its users API refused the caller: {response.status_code} {response.text[:200]}"
            )
        return Peer(url, basic(USER, password), how)

    return Launch(url + "/health", workdir / f"{name}.log", finish)


# Run in mlflow-oidc-auth's environment, against its users database: the caller and a personal access
# token, created in its store as its admin API would (there is no administrator to call it as yet).
_OIDC_BOOTSTRAP = f"""
import datetime as dt
from mlflow_oidc_auth.store import store
store.create_user({USER!r}, {USER!r})
expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
_, token = store.create_user_token({USER!r}, "bench", expires, {USER!r})
print(token)
"""


def oidc_auth_version() -> str | None:
    """The mlflow-oidc-auth installed in its environment, or None."""
    for found in sorted(OIDC_AUTH_VENV.glob("lib/python*/site-packages/mlflow_oidc_auth-*.dist-info")):
        return found.name.removeprefix("mlflow_oidc_auth-").removesuffix(".dist-info")
    return None


def oidc_auth(processes: Processes, workdir: Path) -> Launch:
    """mlflow-oidc-auth (`mlflow server --app-name oidc-auth`, an ASGI app around MLflow's) with its
    defaults: no OpenID provider is needed to serve API clients (it starts with a warning that browser
    sign-in is unavailable); the caller presents a personal access token as its Basic password."""
    version = oidc_auth_version()
    mlflow = OIDC_AUTH_VENV / "bin" / "mlflow"
    if not version or not mlflow.exists() or not (OIDC_AUTH_VENV / ".installed").exists():
        raise PeerUnavailable(
            f"not installed in {OIDC_AUTH_VENV.relative_to(ROOT)} (`make bench` installs it there; it needs "
            "Python 3.12 or newer)"
        )
    command, env, data_dir, url = _mlflow(workdir, "mlflow-oidc-auth")
    command[0] = str(mlflow)
    env.update(
        {
            "SECRET_KEY": secrets.token_hex(16),
            "OIDC_USERS_DB_URI": f"sqlite:///{data_dir / 'oidc-auth.db'}",
            # Its own interpreter: nothing of this environment's Python on its path.
            "PYTHONPATH": "",
        }
    )
    try:
        made = subprocess.run(
            [str(OIDC_AUTH_VENV / "bin" / "python"), "-c", _OIDC_BOOTSTRAP],
            env=env,
            cwd=data_dir,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as failed:
        last = (failed.stderr.strip().splitlines() or ["no output"])[-1]
        raise PeerUnavailable(f"could not create its user and token: {last}") from None
    token = made.stdout.strip().splitlines()[-1]
    processes.start("mlflow-oidc-auth", [*command, "--app-name", "oidc-auth"], env, cwd=data_dir)
    how = (
        f"mlflow-oidc-auth {version} (`mlflow server --app-name oidc-auth`, its own environment), its "
        "defaults (permission cache 30 s) and no OpenID provider; a personal access token (PBKDF2-SHA256, "
        "looked up by its prefix) as the Basic password, checked on every request in a single thread per "
        "worker"
    )
    log = workdir / "mlflow-oidc-auth.log"
    return Launch(url + "/health", log, lambda: Peer(url, basic(USER, token), how))


def htpasswd(path: Path, user: str, password: str) -> None:
    """An htpasswd file with apr1 (MD5), the hash `htpasswd` writes by default and nginx reads."""
    if not shutil.which("openssl"):
        raise PeerUnavailable("openssl is not installed (it writes the htpasswd hash)")
    hashed = subprocess.run(
        ["openssl", "passwd", "-apr1", "-stdin"], input=password, capture_output=True, text=True, check=True
    ).stdout.strip()
    path.write_text(f"{user}:{hashed}\n")


def nginx_auth(processes: Processes, workdir: Path, upstream: str) -> Launch:
    """nginx with `auth_basic` in front of `upstream` (the direct MLflow), set up as the nginx path."""
    password = secrets.token_urlsafe(24)
    users = workdir / "nginx-auth.htpasswd"
    htpasswd(users, USER, password)
    port = free_port()
    config = nginx_config(
        workdir, "nginx-auth", proxy_port=port, upstream_port=int(upstream.rsplit(":", 1)[1]), auth_file=users
    )
    processes.start("nginx-auth", [nginx_binary(), "-c", str(config)])
    url = f"http://127.0.0.1:{port}"
    how = (
        "nginx `auth_basic` with an htpasswd file (apr1, as `htpasswd` writes by default) in front of the "
        "direct MLflow, proxied as the nginx row: authentication only, no per-resource permissions"
    )
    return Launch(url + "/health", workdir / "nginx-auth.log", lambda: Peer(url, basic(USER, password), how))


def _last_line(log: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][-200:]
    return "no log"


def launch_peers(
    processes: Processes, workdir: Path, direct: str
) -> tuple[dict[str, Launch], dict[str, str]]:
    """Every peer started at once (an MLflow takes 15-60 s to start; `ready_peers` awaits them), and why
    each of the others cannot start; nginx auth_basic fronts `direct`."""
    starters: dict[str, Callable[[], Launch]] = {
        BASIC_AUTH_PATH: lambda: basic_auth(processes, workdir, 0),
        BASIC_AUTH_CACHED_PATH: lambda: basic_auth(processes, workdir, AUTH_CACHE_TTL_SECONDS),
        OIDC_AUTH_PATH: lambda: oidc_auth(processes, workdir),
        NGINX_AUTH_PATH: lambda: nginx_auth(processes, workdir, direct),
    }
    launches: dict[str, Launch] = {}
    skipped: dict[str, str] = {}
    for name, start in starters.items():
        try:
            launches[name] = start()
        except (PeerUnavailable, OSError, subprocess.SubprocessError) as unavailable:
            skipped[name] = str(unavailable)
    return launches, skipped


def ready_peers(launches: dict[str, Launch], skipped: dict[str, str]) -> dict[str, Peer]:
    """The launched peers once each serves and has its caller; those that fail join `skipped`."""
    peers: dict[str, Peer] = {}
    for name, launch in launches.items():
        try:
            # nginx's auth_basic covers /health too: it is ready when it refuses an unauthenticated call.
            wait_http(launch.ready, timeout=START_TIMEOUT, expect=401 if name == NGINX_AUTH_PATH else 200)
            peers[name] = launch.finish()
        except (PeerUnavailable, RuntimeError, requests.RequestException) as failed:
            skipped[name] = f"did not start ({failed}); last line of its log: {_last_line(launch.log)}"
    return peers
