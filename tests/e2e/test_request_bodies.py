"""Request bodies under attack (issue 15, defects 3-6), against live gateways on loopback.

Most tests run a gateway in front of the recording canary of `test_hostile.py`, which proves exactly what
reached the upstream; the compression bomb and the OTLP path also run against the real MLflow of the
session, whose worker memory is read from /proc. During each attack a bystander asks for `/health` and an
authenticated `experiments/get` and must be answered within 2 s; the gateway's RSS stays under 150 MB.
Every attack is bounded in time and count and stops by itself.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import psutil
import pytest
import requests

from bench.load import RssSampler
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import DEFAULT_SCOPES
from tests.e2e.test_hostile import Arrival, Canary, parse_answers
from tests.helpers import GatewayProcess, key_store
from tests.support.bystander import Bystander

# What one attack may add to the gateway's resident memory; its baseline (about 110 MB) grows with features.
RSS_GROWTH_LIMIT_MB = 48
BODY_BUDGET_MB = Settings.model_fields["body_buffer_mb"].default  # HOKUSAI_BODY_BUFFER_MB
API_LIMIT = 16 << 20
IDLE_TIMEOUT = 3.0  # HOKUSAI_BODY_IDLE_TIMEOUT of the canary gateway, short to keep the tests short
POOL_SIZE = 16


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    server = Canary()
    yield server
    server.stop()


class Deployment:
    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        store = key_store(gateway.data_dir)
        try:
            self.read_key = store.create("reader", environment="live", scopes=("read",))[1]
            self.write_key = store.create("writer", environment="live", scopes=DEFAULT_SCOPES)[1]
            self.admin_key = store.create("admin", environment="live", scopes=("read", "write", "admin"))[1]
        finally:
            store.close()

    @property
    def port(self) -> int:
        return self.gateway.port


@pytest.fixture(scope="module")
def deployment(canary: Canary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    gateway = GatewayProcess(
        canary.url,
        tmp_path_factory.mktemp("bodies"),
        env={
            "HOKUSAI_AUTH_FAILURE_LIMIT": "0",
            "HOKUSAI_UPSTREAM_POOL_SIZE": str(POOL_SIZE),
            "HOKUSAI_BODY_IDLE_TIMEOUT": str(IDLE_TIMEOUT),
        },
    )
    try:
        yield Deployment(gateway)
    finally:
        gateway.stop()


# ---------------------------------------------------------------------------------------------------
# Measuring what everybody else sees


@contextlib.contextmanager
def attack(deployment: Deployment) -> Iterator[tuple[Bystander, RssSampler]]:
    """Measures a bystander's latency and the gateway's peak RSS while the block runs."""
    with (
        RssSampler(deployment.gateway.pid) as sampler,
        Bystander(deployment.gateway.url, deployment.read_key) as bystander,
    ):
        yield bystander, sampler
    print(f"{bystander.summary()}, gateway RSS {sampler.baseline_mb:.0f} -> {sampler.peak_mb:.0f} MB")


def head(method: str, target: str, port: int, key: str | None, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{name}: {value}" for name, value in {"Connection": "close", **headers}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_and_read(port: int, data: bytes, body: Iterable[bytes] = (), timeout: float = 30) -> bytes:
    """Sends `data`, then `body` piece by piece from a thread (a server may answer before reading it),
    and reads until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:

        def push() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(data)
                for piece in body:
                    sock.sendall(piece)

        sender = threading.Thread(target=push, daemon=True)
        sender.start()
        received = bytearray()
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(1 << 16):
                received += chunk
        return bytes(received)


def answer_of(data: bytes) -> tuple[int, dict[str, str], Any]:
    answers, _ = parse_answers(data)
    assert answers, f"no answer: {data[:200]!r}"
    first = answers[0]
    try:
        payload = first.json()
    except ValueError:
        payload = first.body
    return first.status, first.headers, payload


def arrivals(canary: Canary, request_id: str) -> list[Arrival]:
    return [arrival for arrival in canary.arrivals if arrival.request_id == request_id]


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield piece


# ---------------------------------------------------------------------------------------------------
# Defect 3: slow bodies held every pooled connection


def test_slow_api_bodies_hold_no_upstream_connection_and_time_out(
    deployment: Deployment, canary: Canary
) -> None:
    """More clients than pooled connections each announce 1000 bytes and send `{`: none of them reaches
    the upstream, others are served meanwhile, and each slow one gets 408 and is closed after the idle
    timeout."""
    count = POOL_SIZE + 8
    sockets = []
    opened = time.monotonic()
    with attack(deployment) as (bystander, sampler):
        for number in range(count):
            sock = socket.create_connection(("127.0.0.1", deployment.port), timeout=IDLE_TIMEOUT + 5)
            sock.sendall(
                head(
                    "POST",
                    "/mlflow/api/2.0/mlflow/experiments/search",
                    deployment.port,
                    deployment.read_key,
                    {
                        "Content-Type": "application/json",
                        "Content-Length": "1000",
                        "X-Request-Id": f"slow-{number}",
                    },
                )
                + b"{"
            )
            sockets.append(sock)
        # Each is read until the gateway closes it, all within one deadline (main never closes them).
        deadline = opened + IDLE_TIMEOUT + 5
        results: list[tuple[bytes, float]] = []
        for sock in sockets:
            received = bytearray()
            with contextlib.suppress(OSError):
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                while chunk := sock.recv(1 << 16):
                    received += chunk
            results.append((bytes(received), time.monotonic() - opened))
            sock.close()
    bystander.check()
    assert sampler.growth_mb < RSS_GROWTH_LIMIT_MB, f"gateway RSS grew {sampler.growth_mb:.0f} MB"
    reached = [arrival.request_id for arrival in canary.arrivals if arrival.request_id.startswith("slow-")]
    assert reached == [], f"slow bodies reached the upstream: {reached}"
    for answered, closed_after in results:
        assert answered, "a slow body got no answer before the timeout"
        status, headers, payload = answer_of(answered)
        assert status == 408 and payload["reason"] == "body_timeout", (status, payload)
        assert "HOKUSAI_BODY_IDLE_TIMEOUT" in payload["message"]
        assert headers.get("connection") == "close"
        assert closed_after < IDLE_TIMEOUT + 3, f"a slow body stayed open {closed_after:.1f} s"


def test_a_body_dripped_faster_than_the_idle_timeout_is_still_cut_off(
    deployment: Deployment, canary: Canary
) -> None:
    """A byte every half second never trips the idle timeout, so alone it would hold its buffered bytes
    (and its share of the byte budget) for as long as it likes: below the minimum average rate it gets 408
    soon after the idle timeout."""
    with attack(deployment) as (bystander, sampler):
        sock = socket.create_connection(("127.0.0.1", deployment.port), timeout=IDLE_TIMEOUT + 10)
        sock.sendall(
            head(
                "POST",
                "/mlflow/api/2.0/mlflow/experiments/search",
                deployment.port,
                deployment.read_key,
                {"Content-Type": "application/json", "Content-Length": "1000", "X-Request-Id": "drip"},
            )
        )
        started = time.monotonic()
        answered = b""
        with contextlib.suppress(OSError):
            sock.settimeout(0.5)
            while time.monotonic() - started < IDLE_TIMEOUT + 10 and not answered:
                sock.sendall(b" ")
                with contextlib.suppress(TimeoutError):
                    answered = sock.recv(1 << 16)
        cut_after = time.monotonic() - started
        with contextlib.suppress(OSError):  # the rest of the answer, up to the close
            sock.settimeout(5)
            while chunk := sock.recv(1 << 16):
                answered += chunk
        sock.close()
    bystander.check()
    assert sampler.growth_mb < RSS_GROWTH_LIMIT_MB, f"gateway RSS grew {sampler.growth_mb:.0f} MB"
    assert answered, f"a dripped body was still being read after {cut_after:.0f} s"
    status, headers, payload = answer_of(answered)
    assert status == 408 and payload["reason"] == "body_timeout", (status, payload)
    assert "HOKUSAI_BODY_MIN_RATE_KB" in payload["message"]
    assert headers.get("connection") == "close"
    assert cut_after < IDLE_TIMEOUT + 3, f"a dripped body was cut after {cut_after:.1f} s"
    assert arrivals(canary, "drip") == []


def test_api_bodies_in_memory_stay_within_the_byte_budget(deployment: Deployment, canary: Canary) -> None:
    """Twelve clients send 16 MiB API bodies at once: the gateway holds at most its byte budget (32 MiB
    by default), answers the others 503 with Retry-After, and stays under 150 MB."""
    # runs/search: not one the gateway inspects (those take at most 4 MiB), so the API limit applies.
    body = b'{"experiment_ids": ["0"], "filter": "' + b"a" * (API_LIMIT - 64) + b'"}'
    outcomes: list[tuple[int, dict[str, str]]] = []

    def client(number: int) -> None:
        data = head(
            "POST",
            "/mlflow/api/2.0/mlflow/runs/search",
            deployment.port,
            deployment.write_key,
            {"Content-Length": str(len(body)), "X-Request-Id": f"budget-{number}"},
        )
        status, headers, _ = answer_of(send_and_read(deployment.port, data, iter([body])))
        outcomes.append((status, headers))

    with attack(deployment) as (bystander, sampler):
        threads = [threading.Thread(target=client, args=(number,)) for number in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    bystander.check()
    # Twelve bodies held at once would be 192 MiB; the budget keeps it to 32 MiB and read buffers.
    assert sampler.growth_mb < BODY_BUDGET_MB + 32, f"gateway RSS grew {sampler.growth_mb:.0f} MB"
    statuses = sorted(status for status, _ in outcomes)
    assert len(statuses) == 12 and set(statuses) <= {200, 503} and 200 in statuses, statuses
    assert all(headers.get("retry-after") == "1" for status, headers in outcomes if status == 503)
    for arrival in canary.arrivals:
        assert arrival.body_length <= API_LIMIT, (arrival.request_id, arrival.body_length)


# ---------------------------------------------------------------------------------------------------
# Defect 4: bodies the gateway parses itself


@pytest.mark.parametrize(
    ("target", "key_name"),
    [
        ("/api/v1/keys/validate", None),
        ("/api/v1/keys", "admin_key"),
        ("/login", None),
    ],
)
def test_bodies_of_the_gateways_own_routes_are_capped(
    deployment: Deployment, target: str, key_name: str | None
) -> None:
    """A 300 MB Content-Length is refused at once, before any body byte; 64 MiB sent chunked is refused
    after 64 KiB, with the gateway's memory flat."""
    key = getattr(deployment, key_name) if key_name else None
    kind = "application/x-www-form-urlencoded" if target == "/login" else "application/json"
    declared = head(
        "POST",
        target,
        deployment.port,
        key,
        {
            "Content-Type": kind,
            "Content-Length": str(300 << 20),
            "Origin": f"http://127.0.0.1:{deployment.port}",
        },
    )
    started = time.monotonic()
    status, _, payload = answer_of(send_and_read(deployment.port, declared, timeout=5))
    assert status == 413 and payload["reason"] == "body_too_large", (status, payload)
    assert time.monotonic() - started < 2

    chunked = head(
        "POST",
        target,
        deployment.port,
        key,
        {
            "Content-Type": kind,
            "Transfer-Encoding": "chunked",
            "Origin": f"http://127.0.0.1:{deployment.port}",
        },
    )
    piece = b"%x\r\n%b\r\n" % (1 << 20, b'{"a": "' + b"x" * ((1 << 20) - 9) + b'"}')
    with attack(deployment) as (bystander, sampler):
        data = send_and_read(deployment.port, chunked, repeated(piece, 64 * len(piece)))
    bystander.check()
    status, _, payload = answer_of(data)
    assert status == 413 and "64 KiB" in payload["message"], (status, payload)
    assert sampler.growth_mb < 20, f"gateway RSS grew {sampler.growth_mb:.0f} MB"


# ---------------------------------------------------------------------------------------------------
# Defect 5: bodies on transfers that take none


BODYLESS = [
    ("GET", "/mlflow/get-artifact?path=m&run_uuid=r"),
    ("GET", "/mlflow/model-versions/get-artifact?path=m&name=n&version=1"),
    ("GET", "/api/mlflow/get-artifact?path=m&run_uuid=r"),
    ("GET", "/get-artifact?path=m&run_uuid=r"),
    ("GET", "/mlflow/ajax-api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m"),
    ("GET", "/mlflow/api/2.0/mlflow-artifacts/artifacts?path=1/r"),
    ("HEAD", "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m"),
    ("DELETE", "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m"),
]


@pytest.mark.parametrize(("method", "target"), BODYLESS)
def test_transfers_without_a_body_refuse_one_at_once(
    deployment: Deployment, canary: Canary, method: str, target: str
) -> None:
    request_id = f"bodyless-{method}-{abs(hash(target))}"
    data = head(
        method,
        target,
        deployment.port,
        deployment.write_key,
        {"Content-Length": str(400 << 20), "X-Request-Id": request_id},
    )
    started = time.monotonic()
    received = send_and_read(deployment.port, data, timeout=5)
    assert received, "no answer before the body"
    answers, _ = parse_answers(received, head_only=method == "HEAD")
    assert answers[0].status == 413 and time.monotonic() - started < 2
    if method != "HEAD":
        assert answers[0].json()["reason"] == "body_not_allowed"
    assert arrivals(canary, request_id) == [], "the request reached the upstream"


def test_a_large_body_on_get_artifact_never_reaches_the_upstream(
    deployment: Deployment, canary: Canary
) -> None:
    size = 64 << 20
    data = head(
        "GET",
        "/mlflow/get-artifact?path=m&run_uuid=r",
        deployment.port,
        deployment.read_key,
        {"Content-Length": str(size), "X-Request-Id": "bodyless-large"},
    )
    with attack(deployment) as (bystander, sampler):
        received = send_and_read(deployment.port, data, repeated(b"\0" * (1 << 20), size))
    bystander.check()
    assert sampler.growth_mb < RSS_GROWTH_LIMIT_MB, f"gateway RSS grew {sampler.growth_mb:.0f} MB"
    assert answer_of(received)[0] == 413
    got = arrivals(canary, "bodyless-large")
    assert got == [], f"{got[0].body_length} body bytes reached the upstream"


def test_artifact_uploads_still_stream_any_size(deployment: Deployment, canary: Canary) -> None:
    size = 40 << 20  # over the API limit
    data = head(
        "PUT",
        "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/big.bin",
        deployment.port,
        deployment.write_key,
        {"Content-Length": str(size), "X-Request-Id": "upload-large"},
    )
    with RssSampler(deployment.gateway.pid) as sampler:
        received = send_and_read(deployment.port, data, repeated(os.urandom(1 << 20), size))
    assert answer_of(received)[0] == 200
    (arrival,) = arrivals(canary, "upload-large")
    assert arrival.complete and arrival.body_length == size
    assert sampler.growth_mb < RSS_GROWTH_LIMIT_MB, f"gateway RSS grew {sampler.growth_mb:.0f} MB"


# ---------------------------------------------------------------------------------------------------
# Defect 6: compressed bodies


def gzip_bomb(expanded: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = b"\0" * (1 << 20)
    return b"".join(compressor.compress(zeros) for _ in range(expanded >> 20)) + compressor.flush()


def decoded_length(arrival: Arrival) -> int:
    """What an arrival expands to, as MLflow would decode it."""
    coding = next(iter(arrival.values("content-encoding")), "").lower()
    body = bytes(arrival.body)
    if coding == "gzip":
        return len(gzip.decompress(body))
    if coding == "deflate":
        return len(zlib.decompress(body))
    return arrival.body_length


OTLP_HEADERS = {"Content-Type": "application/x-protobuf", "X-Mlflow-Experiment-Id": "0"}


def test_a_gzip_bomb_on_otlp_is_refused_on_its_decoded_size(deployment: Deployment, canary: Canary) -> None:
    bomb = gzip_bomb(256 << 20)
    data = head(
        "POST",
        "/mlflow/v1/traces",
        deployment.port,
        deployment.write_key,
        {
            **OTLP_HEADERS,
            "Content-Encoding": "gzip",
            "Content-Length": str(len(bomb)),
            "X-Request-Id": "bomb",
        },
    )
    with attack(deployment) as (bystander, sampler):
        received = send_and_read(deployment.port, data + bomb)
    bystander.check()
    assert sampler.growth_mb < RSS_GROWTH_LIMIT_MB, f"gateway RSS grew {sampler.growth_mb:.0f} MB"
    status, _, payload = answer_of(received)
    for arrival in arrivals(canary, "bomb"):
        assert decoded_length(arrival) <= API_LIMIT, f"{decoded_length(arrival)} decoded bytes reached it"
    assert status == 413 and "after decompression" in payload["message"], (status, payload)


PAYLOAD = b'{"resourceSpans": []}'


@pytest.mark.parametrize(
    ("coding", "coded"),
    [
        pytest.param("gzip", gzip.compress(PAYLOAD), id="gzip"),
        pytest.param("x-gzip", gzip.compress(PAYLOAD), id="x-gzip"),
        pytest.param("GZIP", gzip.compress(PAYLOAD), id="GZIP"),
        pytest.param("gzip", gzip.compress(PAYLOAD[:9]) + gzip.compress(PAYLOAD[9:]), id="gzip-two-members"),
        pytest.param("deflate", zlib.compress(PAYLOAD), id="deflate-zlib"),
        pytest.param("Deflate", zlib.compress(PAYLOAD)[2:-4], id="deflate-raw"),  # as some clients send it
        pytest.param("identity", PAYLOAD, id="identity"),
    ],
)
def test_otlp_bodies_are_decoded_and_forwarded_identity_coded(
    deployment: Deployment, canary: Canary, coding: str, coded: bytes
) -> None:
    request_id = f"otlp-{coding}-{len(coded)}"
    data = head(
        "POST",
        "/mlflow/v1/traces",
        deployment.port,
        deployment.write_key,
        {
            **OTLP_HEADERS,
            "Content-Encoding": coding,
            "Content-Length": str(len(coded)),
            "X-Request-Id": request_id,
        },
    )
    assert answer_of(send_and_read(deployment.port, data + coded))[0] == 200
    (arrival,) = arrivals(canary, request_id)
    assert bytes(arrival.body) == PAYLOAD
    assert arrival.values("content-encoding") == []
    assert arrival.values("content-length") == [str(len(PAYLOAD))]


@pytest.mark.parametrize(
    ("target", "coding"),
    [
        ("/mlflow/api/2.0/mlflow/runs/log-batch", "gzip"),
        ("/mlflow/api/2.0/mlflow/runs/log-batch", "deflate"),
        ("/mlflow/ajax-api/2.0/mlflow/runs/log-batch", "GZIP"),
        ("/api/mlflow/api/3.0/mlflow/traces", "x-gzip"),
        ("/mlflow/graphql", "gzip"),
        ("/mlflow/api/2.0/mlflow/runs/create", "gzip"),
        ("/mlflow/gateway/chat/mlflow/invocations", "zstd"),
        ("/mlflow/v1/traces", "br"),
        ("/mlflow/v1/traces", "zstd"),
        ("/mlflow/v1/traces", "compress"),
        ("/mlflow/v1/traces", "gzip, gzip"),
        ("/mlflow/v1/traces", "identity, gzip, gzip"),
    ],
)
def test_codings_mlflow_does_not_decode_are_refused(
    deployment: Deployment, canary: Canary, target: str, coding: str
) -> None:
    request_id = f"coding-{abs(hash((target, coding)))}"
    body = gzip.compress(b'{"experiment_id": "0"}')
    data = head(
        "POST",
        target,
        deployment.port,
        deployment.write_key,
        {
            **OTLP_HEADERS,
            "Content-Type": "application/json",
            "Content-Encoding": coding,
            "Content-Length": str(len(body)),
            "X-Request-Id": request_id,
        },
    )
    status, _, payload = answer_of(send_and_read(deployment.port, data + body))
    assert arrivals(canary, request_id) == [], "a coded body reached the upstream"
    assert status == 415 and payload["reason"] == "unsupported_coding", (status, payload)
    assert coding.split(",")[-1].strip().lower() in payload["message"]


# ---------------------------------------------------------------------------------------------------
# The real MLflow: OTLP with gzip keeps working, the bomb never reaches it


def mlflow_root(url: str) -> psutil.Process:
    """The `mlflow server` process listening on the URL's port (its workers are its children)."""
    port = url.rsplit(":", 1)[1]
    found = [
        process
        for process in psutil.process_iter(["cmdline"])
        if any("mlflow" in part for part in process.info["cmdline"] or []) and port in process.info["cmdline"]
    ]
    assert found, "MLflow's processes not found"
    pids = {process.pid for process in found}
    return next(process for process in found if process.ppid() not in pids)


def tree_rss_mb(root: psutil.Process) -> float:
    total: int = root.memory_info().rss
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 2**20


def otlp_request(trace_id: bytes) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    now = time.time_ns()
    span = Span(trace_id=trace_id, span_id=os.urandom(8), name="gzip-through-gateway")
    span.start_time_unix_nano = now - 1_000_000
    span.end_time_unix_nano = now
    request = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[span])])]
    )
    serialized: bytes = request.SerializeToString()
    return serialized


def test_gzip_otlp_reaches_mlflow_and_a_bomb_does_not(
    gateway: GatewayProcess, mlflow_server: str, api_key: str
) -> None:
    auth = {"Authorization": f"Bearer {api_key}"}
    created = requests.post(
        gateway.url + "/mlflow/api/2.0/mlflow/experiments/create",
        json={"name": f"otlp-{os.urandom(6).hex()}"},
        headers=auth,
        timeout=30,
    )
    # Traces go into an experiment of the key's owner (permissions on: the Default one is nobody's).
    experiment = {"X-Mlflow-Experiment-Id": created.json()["experiment_id"]}
    headers = {**OTLP_HEADERS, **experiment, **auth, "Content-Encoding": "gzip"}
    trace_id = os.urandom(16)
    answer = requests.post(
        gateway.url + "/mlflow/v1/traces",
        data=gzip.compress(otlp_request(trace_id)),
        headers=headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    found = requests.get(
        gateway.url + f"/mlflow/api/3.0/mlflow/traces/tr-{trace_id.hex()}",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )
    assert found.status_code == 200 and trace_id.hex() in found.text, found.text[:300]

    root = mlflow_root(mlflow_server)
    before = tree_rss_mb(root)
    bomb = gzip_bomb(256 << 20)
    with RssSampler(root.pid) as mlflow_peak:
        answer = requests.post(gateway.url + "/mlflow/v1/traces", data=bomb, headers=headers, timeout=120)
    print(f"MLflow RSS {before:.0f} MB, peak during the bomb {mlflow_peak.peak_mb:.0f} MB")
    assert mlflow_peak.peak_mb - before < 64, f"MLflow went {before:.0f} -> {mlflow_peak.peak_mb:.0f} MB"
    assert answer.status_code == 413, answer.text[:300]
    assert json.loads(answer.text)["reason"] == "body_too_large"
