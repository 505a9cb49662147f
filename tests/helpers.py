"""Live-server helpers for the tests: gateway and MLflow processes, a front proxy, raw HTTP, ports.
The recording upstream is `tests.support.stub`; waiting is `tests.support.polling.eventually`."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import psutil
import requests

from hokusai_registry.policy.assertions import ADMIN_USER, body_digest, sign
from hokusai_registry.run.mlflow_process import MlflowProcess, mlflow_environment, wait_until_healthy
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import ADMIN_SCOPES, DEFAULT_SCOPES, KeyStore
from tests.support.polling import eventually

HOKUSAI = str(Path(sys.executable).with_name("hokusai-registry"))


REDIS_URL = "redis://127.0.0.1:6379/0"


def clear_of_minute_edge(margin: float = 5.0) -> None:
    """Wait for the next clock minute if this one ends within `margin` seconds: a rate-limit count that
    straddles two aligned windows is weighted, and may allow one request more."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.05)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def key_store(data_dir: Path) -> KeyStore:
    store = KeyStore(f"sqlite:///{data_dir / 'keys.db'}")
    store.migrate()
    return store


def uncovered_environment(environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """`environment` (default: this one) without coverage's variables, for `mlflow server`: measuring it
    (`make test` measures every subprocess) made its start take twice as long and slowed every answer.
    The one module of the package it runs, `mlflow_app`, has tests of its own."""
    source = os.environ if environment is None else environment
    return {name: value for name, value in source.items() if not name.startswith("COVERAGE_")}


@contextlib.contextmanager
def running_mlflow(command: list[str], data_dir: Path, port: int) -> Iterator[str]:
    """An `mlflow server` child for the tests, stopped with all its workers afterwards; yields its URL."""
    with running_mlflows({"mlflow": (command, data_dir, port)}) as urls:
        yield urls["mlflow"]


@contextlib.contextmanager
def running_mlflows(servers: Mapping[str, tuple[list[str], Path, int]]) -> Iterator[dict[str, str]]:
    """`mlflow server` children (name: command, data directory, port) started side by side, as a start is
    seconds of imports that another core can take; yields their URLs by name; all stopped afterwards."""
    # Each gets the environment `serve` gives MLflow (auth app configuration, secrets) for its data dir.
    processes = {
        name: MlflowProcess(
            command,
            data_dir / "mlflow.log",
            "127.0.0.1",
            port,
            env=uncovered_environment(mlflow_environment(Settings.load(data_dir=data_dir))),
        )
        for name, (command, data_dir, port) in servers.items()
    }

    async def all_healthy() -> None:
        await asyncio.gather(*(wait_until_healthy(process, 180) for process in processes.values()))

    try:
        for process in processes.values():
            process.start()
        asyncio.run(all_healthy())
        yield {name: process.url for name, process in processes.items()}
    finally:
        for process in processes.values():
            process.stop()


@contextlib.contextmanager
def hokusai_mlflow(data_dir: Path, *args: str) -> Iterator[str]:
    """`hokusai-registry mlflow ARGS` as a container runs it, stopped with its workers afterwards; yields
    its URL once `/health` answers."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "mlflow.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [HOKUSAI, "mlflow", *args, "--port", str(port), "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "HOKUSAI_MLFLOW_WORKERS": "1"},
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"

            def healthy() -> bool:
                if server.poll() is not None:
                    raise RuntimeError("MLflow did not start:\n" + log_path.read_text(errors="replace"))
                with contextlib.suppress(requests.ConnectionError):
                    return requests.get(url + "/health", timeout=2).status_code == 200
                return False

            eventually(healthy, 180, 0.5, "MLflow to answer /health:\n" + str(log_path))
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGTERM)
            server.wait(60)


class GatewayProcess:
    """`hokusai-registry gateway` as its own process, as users run it. It binds port 0 unless told a port
    (a restart on the same address) and its first line names the URL it listens on."""

    URL_LINE = re.compile(rb" gateway on (http://\S+?)[ ,]")

    def __init__(
        self,
        upstream: str,
        data_dir: Path,
        env: dict[str, str] | None = None,
        port: int = 0,
        preexec_fn: Callable[[], None] | None = None,  # e.g. to start it under a resource limit
    ) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "gateway.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                HOKUSAI,
                "gateway",
                "--mlflow-url",
                upstream,
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=preexec_fn,
        )
        try:
            self.url = eventually(self._reported_url, 30, 0.05, "the gateway to say where it listens")
            self.port = int(self.url.rsplit(":", 1)[1])
            eventually(self._healthy, 30, 0.1, "the gateway to answer /health")
        except BaseException:  # nobody else can stop it: the caller never gets the object
            self.stop()
            raise

    def _reported_url(self) -> str | None:
        found = self.URL_LINE.search(self.log_path.read_bytes())
        if found is None and self.process.poll() is not None:
            raise RuntimeError("gateway did not start:\n" + self.log())
        return found.group(1).decode() if found else None

    def _healthy(self) -> bool:
        try:
            return requests.get(self.url + "/health", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):  # not up yet, or a loaded machine
            if self.process.poll() is not None:
                raise RuntimeError("gateway did not start:\n" + self.log()) from None
            return False

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def create_key(self, name: str, *, admin: bool = False) -> str:
        store = key_store(self.data_dir)
        try:
            _, key = store.create(name, environment="live", scopes=ADMIN_SCOPES if admin else DEFAULT_SCOPES)
        finally:
            store.close()
        return key

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._log.close()


def stated_requirements() -> list[str]:
    """`pip_requirements` for `log_model` of a scikit-learn model, stated as the doctor states them:
    inferring them loads the model in a subprocess for seconds a model, and none of it reaches the
    gateway (what is uploaded is the same set of files)."""
    import sklearn  # type: ignore[import-untyped]

    return [f"scikit-learn=={sklearn.__version__}"]


def mistyped(key: str) -> str:
    """The key with its last character changed (always to a different one)."""
    return key[:-1] + ("Q" if key[-1] != "Q" else "R")


def processes_using(path: Path) -> list[psutil.Process]:
    """Processes whose command line names `path` (e.g. an MLflow started on a data directory)."""
    return [
        process
        for process in psutil.process_iter(["cmdline"])
        if any(str(path) in part for part in process.info["cmdline"] or [])
    ]


class Running:
    """A command whose output is read line by line while it runs."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path | None = None, new_session: bool = False
    ) -> None:
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **env},
            cwd=cwd,
            start_new_session=new_session,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.seen):
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "".join(self.seen)
            try:
                self.seen.append(self.lines.get(timeout=1))
            except queue.Empty:
                assert self.process.poll() is None, "exited early:\n" + "".join(self.seen)

    def terminate(self, sig: signal.Signals = signal.SIGTERM, group: bool = False) -> int:
        if group:  # what Ctrl-C in a terminal does: the whole foreground process group
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)
        code = self.process.wait(120)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


class FrontProxy:
    """A reverse proxy on loopback in front of a gateway, as a load balancer would be: relays the method,
    path, query, headers and streamed bodies both ways. With `body_limit` it answers 413 itself, without
    the gateway's mark, to a request that declares a larger body (as nginx's client_max_body_size does),
    after reading that body so the client sees the answer instead of a reset connection. With `tls` (a
    server context) it terminates TLS, as a load balancer with its own certificate does. With `record`, it
    keeps every request it relays (method, target, headers, whole body) in `recorded`."""

    HOP_BY_HOP = frozenset(
        {
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
        }
    )

    def __init__(
        self,
        target: str,
        body_limit: int | None = None,
        tls: ssl.SSLContext | None = None,
        record: bool = False,
    ) -> None:
        from aiohttp import ClientSession, ClientTimeout, web

        self.port = 0
        self.url = ""  # both known once it listens (port 0: no race for a free port)
        self.refused = 0  # requests answered 413
        self.recorded: list[tuple[str, str, dict[str, str], bytearray]] | None = [] if record else None
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def relayed(headers: Mapping[str, str]) -> dict[str, str]:
            return {name: value for name, value in headers.items() if name.lower() not in self.HOP_BY_HOP}

        async def handle(request: web.Request) -> web.StreamResponse:
            if body_limit is not None and (request.content_length or 0) > body_limit:
                while await request.content.readany():
                    pass
                self.refused += 1
                return web.Response(status=413, text="413 Request Entity Too Large", content_type="text/html")
            body: Any = request.content if request.body_exists else None
            if self.recorded is not None:
                seen = bytearray()
                self.recorded.append((request.method, request.raw_path, dict(request.headers), seen))
                body = _tee(request.content, seen) if request.body_exists else None
            async with self._session.request(
                request.method,
                target + request.raw_path,
                headers=relayed(request.headers),
                data=body,
                allow_redirects=False,
                auto_decompress=False,
            ) as answer:
                response = web.StreamResponse(status=answer.status, headers=relayed(answer.headers))
                await response.prepare(request)
                async for chunk in answer.content.iter_chunked(1 << 16):
                    await response.write(chunk)
                await response.write_eof()
                return response

        async def main() -> None:
            self._session = ClientSession(timeout=ClientTimeout(total=None))
            app = web.Application(client_max_size=1 << 40)
            app.router.add_route("*", "/{tail:.*}", handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=tls).start()
            self.port = int(self._runner.addresses[0][1])
            self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(main())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10), "the front proxy did not start"

    def stop(self) -> None:
        async def close() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


async def _tee(content: Any, seen: bytearray) -> AsyncIterator[bytes]:
    async for chunk in content.iter_any():
        seen += chunk
        yield chunk


def raw_request(
    url: str, method: str, target: str | bytes, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """Send a request byte for byte (HTTP clients normalise paths, which would hide what we test)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target_bytes = target.encode("latin-1") if isinstance(target, str) else target
    lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1", f"Host: {host}:{port}".encode()]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}".encode("latin-1"))
    lines.append(f"Content-Length: {len(body)}".encode())
    if "Connection" not in (headers or {}):
        lines.append(b"Connection: close")
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        payload = _dechunk(payload)
    return int(status_line.split()[1]), parsed, payload


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


class TcpServer:
    """A loopback TCP server for fault tests: with `relay_to` set (before or after it starts) it forwards
    bytes to that port (a load balancer that sends traffic back to the gateway); without it, it accepts
    and never answers."""

    def __init__(self, relay_to: int | None = None) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.relay_to = relay_to
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._open.append(client)
            if self.relay_to is not None:
                upstream = socket.create_connection(("127.0.0.1", self.relay_to))
                self._open.append(upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def stop(self) -> None:
        self._server.close()
        for sock in self._open:
            sock.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def assertion_secret() -> bytes:
    """The secret every process of the suite signs and checks MLflow requests with (tests/conftest.py)."""
    return Path(os.environ["HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE"]).read_bytes().strip()


def signed(method: str, target: str, user: str = ADMIN_USER, body: bytes = b"") -> dict[str, str]:
    """Headers a gateway would add for `user` to `target` (path and query) with `body`, sent straight to
    MLflow, with the secret every process of the suite shares (tests/conftest.py)."""
    path, _, query = target.partition("?")
    nonce = os.urandom(9).hex()
    value = sign(
        assertion_secret(), user, method, path, query, now=time.time(), nonce=nonce, body=body_digest(body)
    )
    return {"X-Hokusai-Assertion": value.decode()}


def shared_key_store_with_admin(database: str) -> str:
    """A PostgreSQL key store as replicas share it (`db upgrade` once), with an admin key; returns the key."""
    env = {**os.environ, "DATABASE_URL": database}
    assert subprocess.run([HOKUSAI, "db", "upgrade"], env=env, timeout=120).returncode == 0
    return subprocess.run(
        [HOKUSAI, "keys", "create", "--name", "replica-admin", "--admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
