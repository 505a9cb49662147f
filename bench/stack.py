"""The processes a benchmark run needs, all on loopback, all stopped at the end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

from bench.hello import STUB_BODY
from bench.load import Target
from hokusai_registry.run.mlflow_process import (
    MlflowProcess,
    mlflow_command,
    mlflow_environment,
    wait_until_healthy,
)
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyStore

ROOT = Path(__file__).resolve().parents[1]
HOKUSAI = str(Path(sys.executable).with_name("hokusai-registry"))
# Gateways of scenarios whose point is not authorization, in front of MLflows without the auth app.
PERMISSIONS_OFF = {"HOKUSAI_PERMISSIONS": "off"}


def say(text: str) -> None:
    print(text, flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_http(url: str, timeout: float = 180, expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == expect:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer {expect} within {timeout:g} s")


class Processes:
    """Started processes, each in its own process group, stopped (with their children) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._started: list[subprocess.Popen[bytes]] = []

    def start(
        self, name: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
        self._started.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for process in reversed(self._started):
            self.stop(process)


def nginx_config(
    workdir: Path,
    name: str,
    *,
    proxy_port: int | None = None,
    upstream_port: int | None = None,
    stub_port: int | None = None,
    auth_file: Path | None = None,
) -> Path:
    """An nginx with one worker: with `proxy_port`, a reverse proxy to `upstream_port` with upstream
    keep-alive, set up for MLflow (no body limit, no request or response buffering, long timeouts) and,
    with `auth_file` (htpasswd), `auth_basic`; with `stub_port`, the instant stub."""
    stub = (
        f"server {{ listen 127.0.0.1:{stub_port}; default_type application/json; "
        f"location / {{ return 200 '{STUB_BODY}'; }} }}"
        if stub_port
        else ""
    )
    auth = f'auth_basic "bench"; auth_basic_user_file {auth_file};' if auth_file else ""
    # Started as root, nginx's workers run as nobody, who cannot read the private work directory: they
    # run as whoever runs the bench (the directive is ignored otherwise).
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if auth_file and os.geteuid() == 0 else ""
    proxy = (
        f"""
  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{
      {auth}
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      # MLflow checks Host against its allowed hosts; "backend" (the upstream block's name) is not one.
      proxy_set_header Host 127.0.0.1:{upstream_port};
      proxy_request_buffering off;
      proxy_buffering off;
      proxy_read_timeout 600s;
      proxy_send_timeout 600s;
    }}
  }}"""
        if proxy_port
        else ""
    )
    temp = workdir / name
    config = workdir / f"{name}.conf"
    config.write_text(
        f"""
worker_processes 1;
{user}
daemon off;
pid {temp}.pid;
error_log {temp}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  client_max_body_size 0;
  client_body_temp_path {temp}-body;
  proxy_temp_path {temp}-proxy;
  fastcgi_temp_path {temp}-fastcgi;
  uwsgi_temp_path {temp}-uwsgi;
  scgi_temp_path {temp}-scgi;
  {stub}
  {proxy}
}}
"""
    )
    return config


def hello_world(processes: Processes, name: str = "hello-world") -> tuple[str, subprocess.Popen[bytes]]:
    """The bare ASGI reference (bench/hello.py): uvicorn with uvloop and httptools, one worker, no access
    log, answering every request with the stub's JSON."""
    port = free_port()
    process = processes.start(
        name,
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.hello:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", timeout=60)
    return url, process


def bare_proxy(processes: Processes, upstream: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The floor of the gateway's design (bench/bare_proxy.py): its server and upstream pool, no policy."""
    port = free_port()
    process = processes.start(
        "bare-proxy",
        [sys.executable, "-m", "bench.bare_proxy", "--port", str(port), "--upstream", upstream],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", timeout=60)
    return url, process


def gateway(
    processes: Processes,
    name: str,
    upstream: str,
    data_dir: Path,
    workers: int = 1,
    env: dict[str, str] | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    """A gateway in front of `upstream`; `env` adds settings (HOKUSAI_PERMISSIONS, the assertion secret)."""
    port = free_port()
    process = processes.start(
        name,
        [
            HOKUSAI,
            "gateway",
            "--mlflow-url",
            upstream,
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--workers",
            str(workers),
        ],
        env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", timeout=60)
    return url, process


def make_key(data_dir: Path, owner: str | None = None) -> str:
    """A `write` key in the gateway's key store; with permissions on, `owner` is the MLflow user it acts
    as (else the key's name)."""
    store = KeyStore(f"sqlite:///{data_dir / 'keys.db'}")
    store.migrate()
    try:
        _, key = store.create(
            f"bench-{time.time_ns()}", environment="test", scopes=DEFAULT_SCOPES, owner=owner
        )
    finally:
        store.close()
    return key


@contextlib.contextmanager
def running(workdir: Path) -> Iterator[Processes]:
    processes = Processes(workdir)
    try:
        yield processes
    finally:
        processes.stop_all()


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


# The small-request path the stub scenarios call (the stub answers any path).
STUB_PATH = "/api/2.0/mlflow/experiments/get?experiment_id=1"


@dataclass(frozen=True)
class Server:
    """A server under measurement: the target wrk calls and the process whose tree does the work."""

    target: Target
    pid: int


def stub_servers(processes: Processes, workdir: Path) -> dict[str, Server]:
    """The small-request references and the gateway, each its own process on its own core's worth of
    scheduling: the nginx stub ("direct"), an nginx reverse proxy to it, the bare ASGI hello world, the
    bare proxy (the gateway's server and upstream pool without its policy) and a gateway with one worker
    in front of the stub (auth on with a cached key, permissions on: it signs every request; the stub
    ignores the assertion)."""
    stub_port, proxy_port = free_port(), free_port()
    stub_process = processes.start(
        "nginx-stub", [nginx_binary(), "-c", str(nginx_config(workdir, "nginx-stub", stub_port=stub_port))]
    )
    stub = f"http://127.0.0.1:{stub_port}"
    wait_http(stub + "/")
    proxy_config = nginx_config(workdir, "nginx-proxy", proxy_port=proxy_port, upstream_port=stub_port)
    proxy_process = processes.start("nginx-proxy", [nginx_binary(), "-c", str(proxy_config)])
    proxy = f"http://127.0.0.1:{proxy_port}"
    wait_http(proxy + "/")
    hello, hello_process = hello_world(processes)
    bare, bare_process = bare_proxy(processes, stub)
    data_dir = workdir / "gateway-small"
    key = make_key(data_dir)
    one, gateway_process = gateway(processes, "gateway-1", stub, data_dir, workers=1)
    return {
        "direct": Server(Target(stub + STUB_PATH), stub_process.pid),
        "nginx": Server(Target(proxy + STUB_PATH), proxy_process.pid),
        "hello world": Server(Target(hello + STUB_PATH), hello_process.pid),
        "bare proxy": Server(Target(bare + STUB_PATH), bare_process.pid),
        "gateway": Server(Target(one + STUB_PATH, {"Authorization": f"Bearer {key}"}), gateway_process.pid),
    }


def start_mlflow(
    workdir: Path, name: str, *, permissions: bool, workers: int | None = None
) -> tuple[str, MlflowProcess, Settings]:
    """MLflow started the way `serve` starts it (`workers` overrides HOKUSAI_MLFLOW_WORKERS), with its
    auth app (permissions on: READ by default, signed requests only) or without."""
    settings = Settings.load(
        data_dir=workdir / name,
        permissions=permissions,
        default_permission="READ",
        **({} if workers is None else {"mlflow_workers": workers}),
    )
    port = free_port()
    command = mlflow_command(settings, port)
    process = MlflowProcess(
        command, workdir / f"{name}.log", "127.0.0.1", port, env=mlflow_environment(settings)
    )
    process.start()
    say(f"  starting {name} (15-30 s) ...")
    asyncio.run(wait_until_healthy(process, 300))
    return process.url, process, settings
