"""Faults with real processes killed, stopped or slowed (issue 7, part 2).

- MLflow SIGKILLed (whole process group) in the middle of a large upload: the client gets a 502 in
  MLflow's JSON, MLflow lists no artifact, and once MLflow is back on the same port the same gateway
  process serves again.
- An upstream that accepts and never answers: 504 DEADLINE_EXCEEDED after HOKUSAI_UPSTREAM_READ_TIMEOUT.
- 100 clients that hang up mid-download: each upstream connection is released (counted with psutil on
  the gateway's pid), with a pool of 4 so that a leaked slot would stop the gateway.
- Cut connections: a GET is retried once on a fresh connection (whether the cut one was kept alive or
  new), a POST runs/create never is (the relay counts arrivals and MLflow counts runs).
- SIGTERM with 20 slow requests in flight: all answered 200, new connections refused, exit 0.
- The key store unavailable (SQLite WAL-index locks held by another process; a private PostgreSQL
  cluster stopped): new keys get 503 TEMPORARILY_UNAVAILABLE with Retry-After, never 401; cached keys
  work for their TTL; the store back, new keys work. A removed SQLite file is noticed (503), a replaced
  one (restored from a backup) is read from then on.

Every process is started by the test that needs it and stopped in a `finally`; durations are printed,
never asserted (only generous timeouts bound them).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import importlib.util
import json
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from hokusai_registry.run.mlflow_process import (
    MlflowProcess,
    mlflow_command,
    mlflow_environment,
    wait_until_healthy,
)
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyStore
from tests.helpers import GatewayProcess, TcpServer, free_port, signed, uncovered_environment
from tests.support.stub import ThreadedStub

CLIENT_TIMEOUT = 120  # generous: a hang fails the test, a slow machine does not


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[faults] {text}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.05)


def upstream_connections(pid: int, port: int) -> int:
    """Sockets the process holds open to `port` (any state: a leaked CLOSE_WAIT counts too)."""
    return sum(
        1
        for connection in psutil.Process(pid).net_connections(kind="tcp")
        if connection.raddr and connection.raddr.port == port
    )


def assert_gateway_error(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["x-hokusai-origin"] == "gateway"
    payload: dict[str, Any] = response.json()
    assert payload["error_code"] == code
    assert "Hokusai Registry gateway" in payload["message"]
    return payload


# --- a scripted upstream ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    connection: int  # 1, 2, ... in the order the upstream accepted them
    position: int  # 1 for the first request on that connection, 2 for the next (kept alive), ...
    method: str
    target: str


class ScriptedUpstream:
    """An HTTP/1.1 upstream on loopback (raw sockets, a thread per connection) that records every request
    reaching it and answers as scripted: relayed to a real MLflow (`relay_to`), or a small JSON after
    `delay` seconds. `cut_next("reused")` makes it close, without a byte of answer, the next request that
    arrives on an already used kept-alive connection (what a keep-alive timeout racing a request does);
    `cut_next("fresh")` the next first request of a new connection. A cut request is still relayed
    first, so MLflow does what it asked: a retry would do it twice."""

    HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})

    def __init__(self, relay_to: str | None = None, delay: float = 0.0) -> None:
        self.relay_to = relay_to
        self.delay = delay
        self.arrivals: list[Arrival] = []
        self._cut: str | None = None
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_next(self, which: str) -> None:
        assert which in ("reused", "fresh")
        self._cut = which

    def arrivals_of(self, method: str, path: str) -> list[Arrival]:
        return [a for a in self.arrivals if a.method == method and a.target.split("?")[0] == path]

    def stop(self) -> None:
        self._server.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        number = 0
        while True:
            try:
                sock, _ = self._server.accept()
            except OSError:
                return
            number += 1
            self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, number), daemon=True).start()

    def _serve(self, sock: socket.socket, number: int) -> None:
        reader = sock.makefile("rb")
        position = 0
        try:
            while True:
                request = _read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                position += 1
                with self._lock:
                    self.arrivals.append(Arrival(number, position, method, target))
                    cut = (self._cut == "reused" and position > 1) or (self._cut == "fresh" and position == 1)
                    if cut:
                        self._cut = None
                answer = self._answer(method, target, headers, body)
                if cut:
                    return  # closed below without answering
                sock.sendall(answer)
        except OSError:
            return
        finally:
            reader.close()
            sock.close()

    def _answer(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        if self.relay_to is None:
            time.sleep(self.delay)
            payload = json.dumps({"ok": True, "target": target}).encode()
            return _response(200, "OK", [("Content-Type", "application/json")], payload)
        host, _, port = self.relay_to.removeprefix("http://").partition(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            relayed = {name: value for name, value in headers if name.lower() not in self.HOP_BY_HOP}
            connection.request(method, target, body=body if body else None, headers=relayed)
            answer = connection.getresponse()
            payload = answer.read()
            kept = [(n, v) for n, v in answer.getheaders() if n.lower() not in self.HOP_BY_HOP]
            return _response(answer.status, answer.reason, kept, payload)
        finally:
            connection.close()


def _read_request(reader: Any) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    line = reader.readline()
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    fields = {name.lower(): value for name, value in headers}
    if "content-length" in fields:
        body = reader.read(int(fields["content-length"]))
    elif "chunked" in fields.get("transfer-encoding", "").lower():
        body = b""
        while size := int(reader.readline().split(b";")[0], 16):
            body += reader.read(size)
            reader.readline()
        reader.readline()
    else:
        body = b""
    return method, target, headers, body


def _response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason}",
        *(f"{n}: {v}" for n, v in headers),
        f"Content-Length: {len(body)}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@contextlib.contextmanager
def scripted(relay_to: str | None = None, delay: float = 0.0) -> Iterator[ScriptedUpstream]:
    upstream = ScriptedUpstream(relay_to, delay)
    try:
        yield upstream
    finally:
        upstream.stop()


@contextlib.contextmanager
def gateway_process(
    upstream: str, data_dir: Path, env: dict[str, str] | None = None
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(upstream, data_dir, env=env)
    try:
        yield process
    finally:
        try:
            process.stop()  # SIGTERM and wait; a no-op for a gateway a test already stopped
        except subprocess.TimeoutExpired:
            process.process.kill()
            process.process.wait(30)


# --- an MLflow of this module's own, to kill and restart ----------------------------------------------


@pytest.fixture(scope="module")
def own_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowProcess]:
    """A real `mlflow server --serve-artifacts` (one worker) that only this module uses, so it may be
    killed; tests that kill it start it again on the same port."""
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # as conftest: a faster start
    data_dir = tmp_path_factory.mktemp("faults-mlflow")
    port = free_port()
    settings = Settings.load(data_dir=data_dir, mlflow_workers=1)
    command = mlflow_command(settings, port)
    environment = uncovered_environment(mlflow_environment(settings))
    process = MlflowProcess(command, data_dir / "mlflow.log", "127.0.0.1", port, env=environment)
    process.start()
    try:
        asyncio.run(wait_until_healthy(process, 180))
        yield process
    finally:
        process.stop()


def own_experiment(gateway_url: str, key: str) -> str:
    """A new experiment of the key's owner, who may then write artifacts under its id."""
    created = requests.post(
        f"{gateway_url}/mlflow/api/2.0/mlflow/experiments/create",
        json={"name": f"faults-{uuid.uuid4().hex}"},
        headers=auth(key),
        timeout=60,
    )
    assert created.status_code == 200, created.text
    return str(created.json()["experiment_id"])


def artifacts_dir(mlflow: MlflowProcess) -> Path:
    return mlflow.log_path.parent / "artifacts"


class SlowBody:
    """A request body of `size` bytes with a Content-Length (as the MLflow client uploads a file), read
    by requests in small blocks: paced until `at` bytes are out, then `fault()` runs once (while the
    upload is in flight) and the rest goes out at full speed."""

    def __init__(self, size: int, at: int, fault: Callable[[], None]) -> None:
        self.size = size
        self.at = at
        self.fault = fault
        self.sent = 0
        self.fault_done_at: float | None = None
        self._block = os.urandom(1 << 16)

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        if self.sent >= self.size:
            return b""
        if self.fault_done_at is None and self.sent >= self.at:
            self.fault()
            self.fault_done_at = time.monotonic()
        elif self.fault_done_at is None:
            time.sleep(0.002)  # paced before the fault (about 8 MB/s in requests' 16 KiB blocks)
        amount = min(len(self._block) if amount is None or amount < 0 else amount, len(self._block))
        amount = min(amount, self.size - self.sent)
        self.sent += amount
        return self._block[:amount]


def test_mlflow_killed_mid_upload_gives_502_no_listed_artifact_and_recovery_without_gateway_restart(
    own_mlflow: MlflowProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    size, kill_at = 64 << 20, 8 << 20
    killed: dict[str, Any] = {}
    folder = ""  # in an experiment of the uploader's own (permissions on), made below

    def kill_mlflow() -> None:
        # MLflow is really mid-body: its staging file for this upload already holds bytes.
        staging = artifacts_dir(own_mlflow) / folder
        wait_for(
            lambda: any(p.stat().st_size > 0 for p in staging.glob(".artifact.uploading.*")),
            60,
            "MLflow to start writing the upload",
        )
        killed["written"] = sum(p.stat().st_size for p in staging.glob(".artifact.uploading.*"))
        assert own_mlflow.pid is not None
        os.killpg(own_mlflow.pid, signal.SIGKILL)  # the server and its uvicorn worker, no cleanup
        wait_for(lambda: own_mlflow.exit_code() is not None, 30, "MLflow to die")

    try:
        with gateway_process(own_mlflow.url, tmp_path / "gateway") as gateway:
            key = gateway.create_key("uploader")
            folder = f"{own_experiment(gateway.url, key)}/{uuid.uuid4().hex}"
            artifacts = f"{gateway.url}/mlflow/api/2.0/mlflow-artifacts/artifacts"
            body = SlowBody(size, kill_at, kill_mlflow)
            response = requests.put(
                f"{artifacts}/{folder}/weights.bin", data=body, headers=auth(key), timeout=CLIENT_TIMEOUT
            )
            answered = time.monotonic()
            payload = assert_gateway_error(response, 502, "TEMPORARILY_UNAVAILABLE")
            assert "MLflow" in payload["message"] and own_mlflow.url in payload["message"]
            assert body.sent == size and body.fault_done_at is not None
            leftovers = {p.name: p.stat().st_size for p in (artifacts_dir(own_mlflow) / folder).iterdir()}
            report(
                capsys,
                f"MLflow killed after it had written {killed['written'] >> 20} MiB of a {size >> 20} MiB "
                f"upload: 502 {answered - body.fault_done_at:.2f} s after the kill (client sent the rest "
                f"meanwhile); on disk MLflow left {leftovers} (hidden staging file, listed by nobody)",
            )
            assert "weights.bin" not in leftovers  # never published under its name

            # While MLflow is down: a prompt 502 that says the gateway could not connect.
            down = requests.get(artifacts, params={"path": folder}, headers=auth(key), timeout=CLIENT_TIMEOUT)
            assert (
                "could not connect" in assert_gateway_error(down, 502, "TEMPORARILY_UNAVAILABLE")["message"]
            )

            own_mlflow.stop()  # reap what is left of the group
            own_mlflow.start()  # same command, same port
            asyncio.run(wait_until_healthy(own_mlflow, 180))

            # The same gateway process, never restarted: MLflow lists nothing complete for the upload...
            assert gateway.process.poll() is None
            listing = requests.get(
                artifacts, params={"path": folder}, headers=auth(key), timeout=CLIENT_TIMEOUT
            )
            assert listing.status_code == 200, listing.text
            assert listing.json().get("files", []) == []
            # ... and the next requests succeed: a whole upload, its listing and download, a search.
            data = os.urandom(4 << 20)
            again = requests.put(
                f"{artifacts}/{folder}/weights.bin", data=data, headers=auth(key), timeout=CLIENT_TIMEOUT
            )
            assert again.status_code == 200, again.text
            listing = requests.get(
                artifacts, params={"path": folder}, headers=auth(key), timeout=CLIENT_TIMEOUT
            )
            assert listing.json()["files"] == [
                {"path": "weights.bin", "is_dir": False, "file_size": len(data)}
            ]
            download = requests.get(
                f"{artifacts}/{folder}/weights.bin", headers=auth(key), timeout=CLIENT_TIMEOUT
            )
            assert download.status_code == 200
            assert hashlib.sha256(download.content).digest() == hashlib.sha256(data).digest()
            search = requests.post(
                f"{gateway.url}/mlflow/api/2.0/mlflow/experiments/search",
                json={"max_results": 10},
                headers=auth(key),
                timeout=CLIENT_TIMEOUT,
            )
            assert search.status_code == 200, search.text
    finally:
        if own_mlflow.exit_code() is not None or own_mlflow.pid is None:
            own_mlflow.stop()
            own_mlflow.start()
            asyncio.run(wait_until_healthy(own_mlflow, 180))


# --- an upstream that never answers ------------------------------------------------------------------


def test_upstream_that_never_answers_gives_504_after_the_read_timeout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    silent = TcpServer()  # accepts connections, never sends a byte
    try:
        env = {"HOKUSAI_UPSTREAM_READ_TIMEOUT": "1"}
        with gateway_process(silent.url, tmp_path / "gateway", env=env) as gateway:
            key = gateway.create_key("patient")
            started = time.monotonic()
            response = requests.get(
                f"{gateway.url}/mlflow/api/2.0/mlflow/experiments/search", headers=auth(key), timeout=60
            )
            took = time.monotonic() - started
            payload = assert_gateway_error(response, 504, "DEADLINE_EXCEEDED")
            assert (
                "within 1 s" in payload["message"] and "HOKUSAI_UPSTREAM_READ_TIMEOUT" in payload["message"]
            )
            # The timed-out connection is closed, not kept or retried; the gateway still answers.
            wait_for(
                lambda: upstream_connections(gateway.pid, silent.port) == 0, 10, "the connection to close"
            )
            accepted = [  # the silent server runs in this process: its accepted sockets are ours
                c
                for c in psutil.Process().net_connections(kind="tcp")
                if c.laddr.port == silent.port and c.status != psutil.CONN_LISTEN
            ]
            assert len(accepted) == 1
            assert requests.get(gateway.url + "/health", timeout=30).status_code == 200
            report(capsys, f"silent upstream: 504 after {took:.2f} s with HOKUSAI_UPSTREAM_READ_TIMEOUT=1")
    finally:
        silent.stop()


# --- clients that hang up mid-download -----------------------------------------------------------------


def read_then_hang_up(port: int, target: str, key: str, amount: int) -> None:
    """Start a download, read `amount` bytes of it, and close the socket (unread data: a reset)."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        )
        received = b""
        while len(received) < amount:
            chunk = sock.recv(65536)
            assert chunk, "the gateway closed the download early"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200 "), received[:200]


def test_clients_hanging_up_mid_download_release_the_upstream_connection(
    own_mlflow: MlflowProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A pool of 4: had the disconnects leaked pooled slots, the 5th download would already wait for one
    # and fail after the pool timeout (3 x the 2 s connect timeout).
    env = {"HOKUSAI_UPSTREAM_POOL_SIZE": "4", "HOKUSAI_UPSTREAM_CONNECT_TIMEOUT": "2"}
    with gateway_process(own_mlflow.url, tmp_path / "gateway", env=env) as gateway:
        key = gateway.create_key("downloader")
        path = f"{own_experiment(gateway.url, key)}/{uuid.uuid4().hex}/big.bin"
        url = f"{gateway.url}/mlflow/api/2.0/mlflow-artifacts/artifacts/{path}"
        data = os.urandom(16 << 20)
        assert requests.put(url, data=data, headers=auth(key), timeout=CLIENT_TIMEOUT).status_code == 200
        process = psutil.Process(gateway.pid)
        before = upstream_connections(gateway.pid, own_mlflow.port), process.num_fds()
        most = 0
        for _ in range(100):
            read_then_hang_up(
                gateway.port, f"/mlflow/api/2.0/mlflow-artifacts/artifacts/{path}", key, 64 << 10
            )
            most = max(most, upstream_connections(gateway.pid, own_mlflow.port))
        right_after = upstream_connections(gateway.pid, own_mlflow.port), process.num_fds()
        deadline = time.monotonic() + 15  # give the last hang-ups time to be noticed
        while upstream_connections(gateway.pid, own_mlflow.port) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        settled = upstream_connections(gateway.pid, own_mlflow.port), process.num_fds()
        # The access log proves each download was cut short, not finished before the client left.
        relayed: list[int] = []

        def all_logged() -> bool:
            relayed[:] = [
                int(found.group(1))
                for line in gateway.log().splitlines()
                if " GET " in line and path in line and (found := re.search(r" out=(\d+)", line))
            ]
            return len(relayed) == 100

        wait_for(all_logged, 10, "100 access log lines")
        report(
            capsys,
            f"100 downloads of 16 MiB abandoned after 64 KiB (the gateway had relayed {min(relayed)} to "
            f"{max(relayed)} bytes of each): gateway connections to MLflow / open fds before {before}, "
            f"most seen during {most}, right after {right_after}, settled {settled}",
        )
        assert max(relayed) < len(data)
        # The idle pool holds at most the one connection of the upload, never one per abandoned download.
        assert settled[0] <= 1
        assert settled[1] - before[1] < 20
        # Still serving, through the same pool of 4: a whole download, byte-identical.
        whole = requests.get(url, headers=auth(key), timeout=CLIENT_TIMEOUT)
        assert whole.status_code == 200
        assert hashlib.sha256(whole.content).digest() == hashlib.sha256(data).digest()


# --- retries: idempotent once on a stale connection, never anything else ------------------------------


def test_get_is_retried_once_on_a_stale_connection_and_post_runs_create_never_is(
    own_mlflow: MlflowProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        scripted(relay_to=own_mlflow.url) as relay,
        gateway_process(relay.url, tmp_path / "gateway") as gateway,
    ):
        key = gateway.create_key("retry")
        api = f"{gateway.url}/mlflow/api/2.0/mlflow"
        created = requests.post(
            f"{api}/experiments/create",
            json={"name": f"faults-{uuid.uuid4().hex}"},
            headers=auth(key),
            timeout=60,
        )
        assert created.status_code == 200, created.text
        experiment_id = created.json()["experiment_id"]
        get_path = "/api/2.0/mlflow/experiments/get"

        def get_experiment() -> requests.Response:
            return requests.get(
                f"{api}/experiments/get",
                params={"experiment_id": experiment_id},
                headers=auth(key),
                timeout=60,
            )

        # GET: the kept-alive connection the last request left in the pool is cut when reused: the GET
        # is retried once, on a new connection.
        assert get_experiment().status_code == 200
        relay.cut_next("reused")
        retried = get_experiment()
        assert retried.status_code == 200, retried.text
        assert retried.json()["experiment"]["experiment_id"] == experiment_id
        cut, retry = relay.arrivals_of("GET", get_path)[-2:]
        assert cut.position > 1  # it went out on a kept-alive connection, which was closed unanswered
        assert retry.position == 1 and retry.connection > cut.connection  # then once on a new one
        get_arrivals = len(relay.arrivals_of("GET", get_path))
        assert get_arrivals == 3  # two GETs by the client: one arrival each, plus the one retry

        # POST runs/create on a kept-alive connection cut the same way: MLflow created the run, the
        # answer was lost; the gateway says so (502) and does not send it again.
        assert get_experiment().status_code == 200
        relay.cut_next("reused")
        run = requests.post(
            f"{api}/runs/create", json={"experiment_id": experiment_id}, headers=auth(key), timeout=60
        )
        assert_gateway_error(run, 502, "TEMPORARILY_UNAVAILABLE")
        posts = relay.arrivals_of("POST", "/api/2.0/mlflow/runs/create")
        assert len(posts) == 1 and posts[0].position > 1
        runs = requests.post(
            f"{own_mlflow.url}/api/2.0/mlflow/runs/search",
            data=json.dumps({"experiment_ids": [experiment_id]}),
            headers={
                "Content-Type": "application/json",
                **signed(
                    "POST",
                    "/api/2.0/mlflow/runs/search",
                    body=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                ),
            },
            timeout=60,
        ).json()
        assert len(runs.get("runs", [])) == 1  # one run, not two
        report(
            capsys,
            f"stale kept-alive connection cut: GET sent twice by the client arrived {get_arrivals} times "
            f"(one retry on a new connection) and got 200; POST runs/create arrived {len(posts)} time, "
            f"client got 502, MLflow holds {len(runs.get('runs', []))} run",
        )


def test_get_cut_on_a_fresh_connection_is_retried_once(tmp_path: Path) -> None:
    with scripted() as upstream, gateway_process(upstream.url, tmp_path / "gateway") as gateway:
        key = gateway.create_key("fresh")
        upstream.cut_next("fresh")  # the gateway has no pooled connection yet: this GET opens one
        response = requests.get(
            f"{gateway.url}/mlflow/api/2.0/mlflow/experiments/search", headers=auth(key), timeout=60
        )
        arrivals = upstream.arrivals_of("GET", "/api/2.0/mlflow/experiments/search")
        assert arrivals[0].position == 1  # the cut was on a fresh connection
        assert response.status_code == 200, response.text
        assert len(arrivals) == 2


# --- SIGTERM under load --------------------------------------------------------------------------------


def test_sigterm_under_load_finishes_in_flight_requests_refuses_new_connections_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    in_flight = 20
    with scripted(delay=2.0) as upstream, gateway_process(upstream.url, tmp_path / "gateway") as gateway:
        key = gateway.create_key("busy")
        results: list[requests.Response | BaseException | None] = [None] * in_flight

        def call(index: int) -> None:
            try:
                results[index] = requests.get(
                    f"{gateway.url}/mlflow/api/2.0/mlflow/experiments/get",
                    params={"experiment_id": str(index)},
                    headers=auth(key),
                    timeout=CLIENT_TIMEOUT,
                )
            except BaseException as exc:
                results[index] = exc

        threads = [threading.Thread(target=call, args=(i,)) for i in range(in_flight)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(upstream.arrivals) == in_flight, 60, "all requests to reach the upstream")

        gateway.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        refused_while_running, refused_after, pending = False, float("nan"), -1
        while gateway.process.poll() is None and time.monotonic() - signalled < 60:
            try:
                socket.create_connection(("127.0.0.1", gateway.port), timeout=5).close()
            except ConnectionRefusedError:
                pending = sum(1 for r in results if r is None)  # still waiting for their answer
                refused_while_running = gateway.process.poll() is None
                refused_after = time.monotonic() - signalled
                break
            time.sleep(0.02)
        code = gateway.process.wait(60)
        drained = time.monotonic() - signalled
        for thread in threads:
            thread.join(CLIENT_TIMEOUT)
        answered_in_flight = sum(
            1 for r in results if isinstance(r, requests.Response) and r.status_code == 200
        )
        report(
            capsys,
            f"SIGTERM with {in_flight} requests in flight (upstream answers after 2 s): {answered_in_flight} "
            f"answered 200, first refused connection {refused_after:.2f} s after the signal (with "
            f"{pending} still in flight), exit code {code} after {drained:.2f} s",
        )
        assert refused_while_running, "no new connection was refused while the gateway drained"
        assert [r.status_code if isinstance(r, requests.Response) else repr(r) for r in results] == [
            200
        ] * in_flight
        assert code == 0
        assert len(upstream.arrivals) == in_flight


# --- the key store unavailable -------------------------------------------------------------------------


def store_key(url: str, name: str) -> str:
    store = KeyStore(url)
    try:
        _, key = store.create(name, environment="live", scopes=DEFAULT_SCOPES)
    finally:
        store.close()
    return key


def search_with(gateway: GatewayProcess, key: str) -> requests.Response:
    return requests.get(
        f"{gateway.url}/mlflow/api/2.0/mlflow/experiments/search", headers=auth(key), timeout=CLIENT_TIMEOUT
    )


def assert_unavailable(response: requests.Response) -> None:
    payload = assert_gateway_error(response, 503, "TEMPORARILY_UNAVAILABLE")
    assert "key store" in payload["message"]
    assert int(response.headers["retry-after"]) > 0


# A process holding all of the store's WAL-index locks (bytes 120-127 of keys.db-shm: write, checkpoint,
# recover and the five read marks), as a process stopped in the middle of WAL recovery does: readers
# cannot start a transaction. SQLite retries that for about 10 s (not the 30 s busy_timeout), then fails
# with "locking protocol".
LOCKER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
for _ in range(500):
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 8, 120, os.SEEK_SET)
        break
    except OSError:
        time.sleep(0.01)
else:
    sys.exit("could not take the locks")
print("locked", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def sqlite_store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store' / 'keys.db'}"
    store = KeyStore(url)
    try:
        store.migrate()
    finally:
        store.close()
    return url


def test_sqlite_key_store_locked_gives_503_for_new_keys_while_cached_keys_work_for_their_ttl(
    sqlite_store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First the locks that do not take the store away (in WAL mode another connection's exclusive
    transaction blocks writers only, and exclusive locking mode cannot even be taken while the gateway
    holds its WAL shared lock), then one that does: a process holding the WAL-index locks."""
    ttl = 6.0
    cached, fresh = store_key(sqlite_store, "cached"), store_key(sqlite_store, "fresh")
    unaffected = store_key(sqlite_store, "unaffected")
    upstream = ThreadedStub()
    env = {"DATABASE_URL": sqlite_store, "HOKUSAI_KEY_CACHE_TTL": str(ttl)}
    locker: subprocess.Popen[str] | None = None
    try:
        with gateway_process(upstream.url, tmp_path / "gateway", env=env) as gateway:
            with contextlib.closing(
                sqlite3.connect(sqlite_store.removeprefix("sqlite:///"), isolation_level=None, timeout=0.5)
            ) as holder:
                holder.execute("BEGIN EXCLUSIVE")
                assert search_with(gateway, unaffected).status_code == 200  # read under the lock
                holder.execute("ROLLBACK")
                holder.execute("PRAGMA locking_mode=EXCLUSIVE")
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    holder.execute("BEGIN EXCLUSIVE")
                    holder.execute("UPDATE key_store_state SET revision = revision")

            assert search_with(gateway, cached).status_code == 200
            cached_at = time.monotonic()
            shm = sqlite_store.removeprefix("sqlite:///") + "-shm"
            locker = subprocess.Popen(
                [sys.executable, "-c", LOCKER, shm], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"

            responses: dict[str, requests.Response] = {}
            took: dict[str, float] = {}

            def timed(name: str, key: str) -> None:
                started = time.monotonic()
                responses[name] = search_with(gateway, key)
                took[name] = time.monotonic() - started

            new_key = threading.Thread(target=timed, args=("fresh", fresh))
            new_key.start()
            # While that lookup waits on the lock, the cached key does not touch the store.
            during = search_with(gateway, cached)
            assert during.status_code == 200, during.text
            assert time.monotonic() - cached_at < ttl, "too slow to observe the cache within its TTL"
            # Past the TTL the cached check is gone: the same key now needs the store, and gets a 503.
            time.sleep(max(0.0, cached_at + ttl + 0.5 - time.monotonic()))
            expired = threading.Thread(target=timed, args=("expired", cached))
            expired.start()
            new_key.join(CLIENT_TIMEOUT)
            expired.join(CLIENT_TIMEOUT)
            assert_unavailable(responses["fresh"])  # never 401: the key is fine, the store is not
            assert_unavailable(responses["expired"])

            locker.kill()  # the lock holder dies: the kernel drops its locks, the store is back
            locker.wait(30)
            assert search_with(gateway, fresh).status_code == 200
            assert search_with(gateway, cached).status_code == 200
            report(
                capsys,
                "SQLite: another connection's BEGIN EXCLUSIVE leaves key checks working (WAL), its "
                "locking_mode=EXCLUSIVE is refused; WAL-index locks held by another process: new key 503 "
                f"after {took['fresh']:.1f} s, "
                f"cached key 200 within its {ttl:g} s TTL, then 503 after {took['expired']:.1f} s; "
                "both 200 once the lock holder died",
            )
    finally:
        if locker is not None and locker.poll() is None:
            locker.kill()
            locker.wait(30)
        upstream.stop()


def test_sqlite_key_store_removed_gives_503_for_new_keys(sqlite_store: str, tmp_path: Path) -> None:
    cached, fresh = store_key(sqlite_store, "cached"), store_key(sqlite_store, "fresh")
    store_dir = Path(sqlite_store.removeprefix("sqlite:///")).parent
    removed = tmp_path / "removed"
    upstream = ThreadedStub()
    # No revision polling: the only store access is the lookups below, on the gateway's one connection.
    env = {"DATABASE_URL": sqlite_store, "HOKUSAI_KEY_REVISION_POLL_INTERVAL": "3600"}
    try:
        with gateway_process(upstream.url, tmp_path / "gateway", env=env) as gateway:
            assert search_with(gateway, cached).status_code == 200
            store_dir.rename(removed)  # keys.db, -wal and -shm gone from the configured path
            try:
                assert search_with(gateway, cached).status_code == 200
                assert_unavailable(search_with(gateway, fresh))
            finally:
                removed.rename(store_dir)
            assert search_with(gateway, fresh).status_code == 200
    finally:
        upstream.stop()


def test_sqlite_key_store_replaced_at_its_path_is_what_the_gateway_reads(
    sqlite_store: str, tmp_path: Path
) -> None:
    database = Path(sqlite_store.removeprefix("sqlite:///"))
    revoked_later = store_key(sqlite_store, "revoked-later")
    upstream = ThreadedStub()
    env = {
        "DATABASE_URL": sqlite_store,
        "HOKUSAI_KEY_CACHE_TTL": "1",
        "HOKUSAI_KEY_REVISION_POLL_INTERVAL": "0.5",
    }
    try:
        with gateway_process(upstream.url, tmp_path / "gateway", env=env) as gateway:
            assert search_with(gateway, revoked_later).status_code == 200
            backup = tmp_path / "backup.db"
            with (
                contextlib.closing(sqlite3.connect(database)) as live,
                contextlib.closing(sqlite3.connect(backup)) as copy,
            ):
                live.backup(copy)
            for name in ("keys.db", "keys.db-wal", "keys.db-shm"):
                (database.parent / name).unlink(missing_ok=True)
            shutil.move(backup, database)  # the restored store, with both keys still active
            store = KeyStore(sqlite_store)
            try:
                record = next(r for r in store.list() if r.name == "revoked-later")
                store.revoke(record.key_id)
            finally:
                store.close()
            added = store_key(sqlite_store, "added-after-restore")
            deadline = time.monotonic() + 5  # ten revision polls, five cache lifetimes
            while time.monotonic() < deadline and search_with(gateway, revoked_later).status_code != 401:
                time.sleep(0.25)
            assert search_with(gateway, revoked_later).status_code == 401  # the revocation holds
            assert search_with(gateway, added).status_code == 200
    finally:
        upstream.stop()


# --- PostgreSQL, on a private cluster ------------------------------------------------------------------


def _postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


def _postgres_driver() -> str | None:
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return dialect
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temporary directory, run as the `postgres` user on a free
    loopback port. Only this cluster is ever stopped or started, never the machine's own service."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="hokusai-faults-pg-"))
        shutil.chown(self.root, "postgres", "postgres")
        self.data = self.root / "data"
        self.port = free_port()
        try:
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync")
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(self.bindir / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            try:
                self.stop("immediate")
            except subprocess.SubprocessError:
                with contextlib.suppress(ProcessLookupError, ValueError, OSError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)  # this cluster's postmaster
        shutil.rmtree(self.root, ignore_errors=True)


def test_postgres_key_store_stopped_gives_503_for_new_keys_and_recovers_when_started(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bindir, driver = _postgres_bin(), _postgres_driver()
    reason = None
    if driver is None:
        reason = "no PostgreSQL driver (psycopg) in this environment"
    elif bindir is None:
        reason = "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin"
    elif os.geteuid() != 0 or shutil.which("runuser") is None:
        reason = "a private cluster needs root to run it as the postgres user (runuser)"
    else:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            reason = "no postgres user to own a private cluster"
    if reason is not None:
        report(capsys, f"PostgreSQL key store test skipped: {reason}")
        pytest.skip(reason)
    assert bindir is not None
    cluster = PrivatePostgres(bindir)
    upstream = ThreadedStub()
    try:
        cluster.start()
        url = f"{driver}://postgres@127.0.0.1:{cluster.port}/postgres"
        store = KeyStore(url)
        try:
            store.migrate()
        finally:
            store.close()
        cached, fresh = store_key(url, "cached"), store_key(url, "fresh")
        with gateway_process(upstream.url, tmp_path / "gateway", env={"DATABASE_URL": url}) as gateway:
            assert search_with(gateway, cached).status_code == 200
            cluster.stop()
            started = time.monotonic()
            down = search_with(gateway, fresh)
            took = time.monotonic() - started
            assert_unavailable(down)
            assert search_with(gateway, cached).status_code == 200
            cluster.start()
            assert search_with(gateway, fresh).status_code == 200
            assert search_with(gateway, cached).status_code == 200
            report(
                capsys, f"PostgreSQL stopped: new key 503 after {took:.3f} s, cached 200; started: both 200"
            )
    finally:
        upstream.stop()
        cluster.destroy()
