"""Clients that send a request's head too big or too slowly (issue 15, defects 1 and 2), against a real
gateway process in front of the real MLflow: the gateway stops reading an oversized head at the limit,
closes heads that miss their deadline and idle connections, and keeps serving everyone else meanwhile
(`/health` and an authenticated `experiments/get` in under 2 s) within 150 MB.

Every attack is bounded in bytes, connections and seconds, and stops by itself."""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.load import RssSampler
from tests.helpers import GatewayProcess
from tests.support.bystander import Bystander

MIB = 1 << 20


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n[slow clients] {text}")


@pytest.fixture
def fresh_gateway(mlflow_server: str, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(mlflow_server, tmp_path / "gateway")
    yield process
    process.stop()


def _rss_mb(pid: int) -> float:
    with RssSampler(pid) as sampler:
        time.sleep(0.05)
    return sampler.peak_mb


@pytest.mark.parametrize(
    ("part", "size", "status", "reason"),
    [("header block", 80 * MIB, 431, "headers_too_large"), ("URL", 40 * MIB, 414, "url_too_long")],
)
def test_an_oversized_head_is_cut_off_at_the_limit(
    part: str,
    size: int,
    status: int,
    reason: str,
    fresh_gateway: GatewayProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = fresh_gateway
    bystander = Bystander(gateway.url, gateway.create_key("bystander"))
    if part == "URL":
        start, chunk, end = b"GET /health?q=", b"a" * MIB, b" HTTP/1.1\r\nHost: x\r\n\r\n"
    else:
        start, chunk, end = (
            b"GET /health HTTP/1.1\r\nHost: x\r\n",
            (b"X-Pad: " + b"a" * 1015 + b"\r\n") * 1024,
            b"\r\n",
        )
    before = _rss_mb(gateway.pid)
    sent, answer = 0, b""
    started = time.monotonic()
    with bystander, RssSampler(gateway.pid) as sampler:
        attacker = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
        try:
            attacker.sendall(start)
            with contextlib.suppress(OSError):  # the gateway closing mid-send is the point
                while sent < size:
                    attacker.sendall(chunk)
                    sent += len(chunk)
                attacker.sendall(end)
            with contextlib.suppress(OSError):  # a reset may discard the answer
                answer = attacker.recv(4096)
        finally:
            attacker.close()
        elapsed = time.monotonic() - started
        time.sleep(1)  # the bystander keeps watching the aftermath
    status_line = answer.split(b"\r\n", 1)[0].decode(errors="replace")
    report(
        capsys,
        f"{size // MIB} MiB {part}: the gateway took {sent / MIB:.1f} MiB in {elapsed:.1f} s, answered "
        f"{status_line or 'nothing (reset)'}; RSS {before:.0f} -> "
        f"{sampler.peak_mb:.0f} MB; {bystander.summary()}",
    )
    assert sent < 16 * MIB, "the gateway kept reading an oversized head"
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status)
        payload = json.loads(body)
        assert payload["reason"] == reason and "HOKUSAI_MAX_HEADER_KB" in payload["message"]
    assert sampler.peak_mb - before < 20
    assert sampler.peak_mb < 150
    bystander.check()


def test_a_head_just_over_the_limit_gets_a_431_that_names_the_setting(fresh_gateway: GatewayProcess) -> None:
    """Sent whole, so the answer is read before the connection closes."""
    pad = b"X-Pad: " + b"a" * (65 * 1024) + b"\r\n"
    with socket.create_connection(("127.0.0.1", fresh_gateway.port), timeout=10) as client:
        client.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + pad + b"\r\n")
        answer = b""
        while chunk := client.recv(4096):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431 ") and b"connection: close" in head.lower()
    payload = json.loads(body)
    assert payload["error_code"] == "BAD_REQUEST" and payload["reason"] == "headers_too_large"
    assert "64 KiB" in payload["message"] and "HOKUSAI_MAX_HEADER_KB" in payload["message"]
    # The limit counts each request on a kept-alive connection afresh.
    session = requests.Session()
    for _ in range(3):
        assert session.get(fresh_gateway.url + "/health", headers={"X-Pad": "a" * 60_000}, timeout=10).ok


HEADER_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 3
SOFT, HARD = 256, 4096  # the gateway starts under a soft limit below what the attack needs


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


def _open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files limit in /proc")


def test_slow_and_silent_connections_are_closed_while_others_are_served(
    mlflow_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    per_kind = 100
    env = {"HOKUSAI_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "HOKUSAI_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT)}
    gateway = GatewayProcess(mlflow_server, tmp_path / "gateway", env=env, preexec_fn=_low_file_limit)
    bystander = Bystander(gateway.url, gateway.create_key("bystander"))
    kinds = {
        "silent": b"",
        "half a header": b"GET /health HTTP/1.1\r\nHo",
        "a line a second": b"GET /health HTTP/1.1\r\n",
    }
    opened: dict[socket.socket, str] = {}
    closed_after: dict[str, list[float]] = {kind: [] for kind in kinds}
    answers: dict[str, list[bytes]] = {kind: [] for kind in kinds}
    observe = KEEPALIVE_TIMEOUT + 9.0  # after that, whatever is still open was held
    try:
        with bystander, selectors.DefaultSelector() as selector:
            started = time.monotonic()
            for kind, first in kinds.items():
                for _ in range(per_kind):
                    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
                    if first:
                        sock.sendall(first)
                    sock.setblocking(False)
                    selector.register(sock, selectors.EVENT_READ, sock)
                    opened[sock] = kind
            received: dict[socket.socket, bytes] = {sock: b"" for sock in opened}
            next_line, line = time.monotonic() + 1, 0
            while selector.get_map() and time.monotonic() - started < observe:
                for selected, _ in selector.select(timeout=0.1):
                    sock = selected.data
                    try:
                        data = sock.recv(4096)
                    except OSError:
                        data = b""
                    received[sock] += data
                    if not data:
                        selector.unregister(sock)
                        closed_after[opened[sock]].append(time.monotonic() - started)
                        answers[opened[sock]].append(received[sock])
                if time.monotonic() >= next_line:  # one more header line on every dripping connection
                    next_line, line = next_line + 1, line + 1
                    for registered in list(selector.get_map().values()):
                        sock = registered.data
                        if opened[sock] == "a line a second":
                            with contextlib.suppress(OSError):
                                sock.send(b"X-Line-%d: x\r\n" % line)
            still_open = len(selector.get_map())
        limits = _open_files_limit(gateway.pid)
    finally:
        for sock in opened:
            sock.close()
        gateway.stop()
    report(
        capsys,
        f"{len(opened)} slow connections to a gateway started with nofile {SOFT}:{HARD} (now "
        f"{limits[0]}:{limits[1]}), header timeout {HEADER_TIMEOUT:g} s, keep-alive {KEEPALIVE_TIMEOUT} s: "
        + ", ".join(
            f"{kind}: {len(times)} closed, last after {max(times, default=0):.1f} s"
            for kind, times in closed_after.items()
        )
        + f"; {still_open} still open after {observe:g} s; other clients' slowest answer "
        f"{max(bystander.latencies, default=0):.2f} s ({len(bystander.latencies)} requests, "
        f"{len(bystander.failures)} failed)",
    )
    bystander.check()
    assert still_open == 0
    # Each kind closed by its own bound, with a margin for a loaded machine.
    assert max(closed_after["silent"]) < KEEPALIVE_TIMEOUT + 3
    assert max(closed_after["half a header"]) < HEADER_TIMEOUT + 3
    assert max(closed_after["a line a second"]) < HEADER_TIMEOUT + 3
    for kind in ("half a header", "a line a second"):
        for answer in answers[kind]:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 "), answer[:100]
            assert json.loads(body)["reason"] == "header_timeout"
    assert answers["silent"] == [b""] * per_kind
    assert limits == (HARD, HARD)


def _one_answer(connection: socket.socket) -> bytes:
    """One whole answer (head and a Content-Length body), however the reads split it."""

    def more() -> bytes:
        piece = connection.recv(65536)
        assert piece, "the gateway closed the connection instead of answering"
        return piece

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += more()
    return head + b"\r\n\r\n" + body


def test_a_kept_alive_connection_idle_past_the_header_timeout_still_serves(
    mlflow_server: str, tmp_path: Path
) -> None:
    """Idle time before a head belongs to the keep-alive timeout, not the head's deadline: a load
    balancer keeps connections longer than any head takes, and must not find them answered with 408."""
    env = {"HOKUSAI_HEADER_TIMEOUT": "1", "HOKUSAI_KEEPALIVE_TIMEOUT": "4"}
    gateway = GatewayProcess(mlflow_server, tmp_path / "gateway", env=env)
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
            connection.sendall(request)
            answers = [_one_answer(connection)]
            time.sleep(2.5)  # longer than the header timeout, shorter than keep-alive
            connection.sendall(request)
            answers.append(_one_answer(connection))
            assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), answers
    finally:
        gateway.stop()


def test_a_connection_answered_before_its_body_ended_serves_the_next_request(
    mlflow_server: str, tmp_path: Path
) -> None:
    """The MLflow client reuses a connection whose answer came before its body was all sent (a read key's
    refused artifact PUT): once the rest is in, the next request on it is answered, not cut off (it used
    to be closed then, without `Connection: close` in the answer, and `register_model` failed with
    INTERNAL_ERROR). Left idle after that, it closes at the keep-alive timeout like any other."""
    env = {"HOKUSAI_KEEPALIVE_TIMEOUT": "2"}
    gateway = GatewayProcess(mlflow_server, tmp_path / "gateway", env=env)
    try:
        with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as connection:
            connection.sendall(
                b"PUT /mlflow/api/2.0/mlflow-artifacts/artifacts/1/notes.txt HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 7\r\n\r\nrea"
            )
            refused = _one_answer(connection)
            assert refused.startswith(b"HTTP/1.1 401"), refused[:100]
            assert b"connection: close" not in refused.lower()
            connection.sendall(b"d me" + b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert _one_answer(connection).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            connection.settimeout(8)
            assert connection.recv(65536) == b"", "an idle connection must close"
            assert time.monotonic() - started < 6, "closed by the keep-alive timeout, not later"
    finally:
        gateway.stop()


def test_a_request_refused_before_its_body_is_closed_not_read_for_ever(
    mlflow_server: str, tmp_path: Path
) -> None:
    """A refusal answered before the body (here 401, no key) used to leave uvicorn reading and discarding
    a declared gigabyte, a byte now and then keeping the connection, with no deadline running. The rest is
    read for the head timeout at most (so the client can read its answer), then the connection closes."""
    gateway = GatewayProcess(mlflow_server, tmp_path / "gateway", env={"HOKUSAI_HEADER_TIMEOUT": "2"})
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(gateway.stop)
        connection = cleanup.enter_context(socket.create_connection(("127.0.0.1", gateway.port), timeout=10))
        connection.sendall(
            b"POST /mlflow/api/2.0/mlflow/runs/search HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
        )
        answer = connection.recv(65536)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
        held_for = 0.0
        started = time.monotonic()
        with contextlib.suppress(OSError):
            while held_for < 15:
                connection.sendall(b" ")
                connection.settimeout(1)
                with contextlib.suppress(TimeoutError):
                    if connection.recv(65536) == b"":
                        break
                held_for = time.monotonic() - started
        assert held_for < 5, f"the connection was still read after {held_for:.0f} s"
