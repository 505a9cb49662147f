"""The processes a benchmark run needs, all on loopback, all stopped at the end."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyStore

HOKUSAI = str(Path(sys.executable).with_name("hokusai-registry"))
# Gateways of scenarios whose point is not authorization, in front of MLflows without the auth app.
PERMISSIONS_OFF = {"HOKUSAI_PERMISSIONS": "off"}
# The ~120-byte JSON a fast MLflow answers to experiments/get.
STUB_BODY = (
    '{"experiment": {"experiment_id": "1", "name": "Default", "artifact_location": "mlflow-artifacts:/1", '
    '"lifecycle_stage": "active"}}'
)


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

    def start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
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
    workdir: Path, name: str, *, proxy_port: int, upstream_port: int, stub_port: int | None = None
) -> Path:
    """An nginx reverse proxy with upstream keep-alive, set up for MLflow (no body limit, no request or
    response buffering, long timeouts); with `stub_port`, also the instant stub it proxies to."""
    stub = (
        f"server {{ listen 127.0.0.1:{stub_port}; default_type application/json; "
        f"location / {{ return 200 '{STUB_BODY}'; }} }}"
        if stub_port
        else ""
    )
    temp = workdir / name
    config = workdir / f"{name}.conf"
    config.write_text(
        f"""
worker_processes 1;
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
  upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 128; }}
  {stub}
  server {{
    listen 127.0.0.1:{proxy_port};
    location / {{
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
  }}
}}
"""
    )
    return config


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
