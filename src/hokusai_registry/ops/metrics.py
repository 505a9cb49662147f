"""Prometheus metrics of the gateway, served at `/metrics` (a key is required).

One worker keeps its values in memory. Several workers (`--workers N`) each write theirs to files in a
private directory the parent made before forking them (prometheus-client's multiprocess mode), and a
scrape of any worker merges every worker's files, so the figures are the gateway's and not one worker's.
That mode takes no custom collectors and no `set_function`, and a gauge says how workers' values combine:
the metrics here are counters, histograms and one gauge, summed over the workers alive.

Label values come from small fixed sets (route family, method, status class, error kind, auth failure
reason), never from paths, keys or key ids.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.refusals import send_body

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Time to MLflow's response head: from fast REST reads to slow model-registry writes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def shared_directory() -> Iterator[Path]:
    """A fresh private directory (mode 0700) for the workers' metric files: made by the parent before
    it forks them, so it starts empty, and removed with everything in it when they are gone."""
    directory = Path(tempfile.mkdtemp(prefix="hokusai-metrics-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def worker_exited(directory: Path, pid: int) -> None:
    """A dead worker's requests in flight leave the sum; what it counted stays (it happened)."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]  # prometheus-client: untyped


def _keep_values(directory: Path | None) -> None:
    """prometheus-client picks where values live once per process (from PROMETHEUS_MULTIPROC_DIR when it
    is imported), and each process has one `Metrics`: in memory for one worker (no file writes per
    request, even if the environment names a directory), in this process's files under `directory` for
    several."""
    if directory is None:
        values.ValueClass = values.MutexValue
        return
    os.environ[MULTIPROCESS_DIR_ENV] = str(directory)  # where its files go, read as each one is made
    # The library asks the process id at every update, to notice a fork (a getpid() system call each:
    # six a request). A worker forks no further, so its id is asked once.
    pid = os.getpid()
    values.ValueClass = values.MultiProcessValue(lambda: pid)  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self, shared_dir: Path | None = None) -> None:
        """`shared_dir`: the workers' directory when there are several (`shared_directory`)."""
        _keep_values(shared_dir)
        # With several workers, what is served is the merge of all workers' files; registering the
        # metrics there too would serve this worker's values twice.
        own = CollectorRegistry(auto_describe=True)
        self.registry = own if shared_dir is None else CollectorRegistry()
        if shared_dir is not None:
            MultiProcessCollector(self.registry, path=str(shared_dir))  # type: ignore[no-untyped-call]
        self._requests = Counter(
            "hokusai_requests",
            "Requests answered, by route family (rest, transfer, ui, gateway, none), method, status class.",
            ["family", "method", "status_class"],
            registry=own,
        )
        self._latency = Histogram(
            "hokusai_upstream_response_seconds",
            "Seconds until MLflow's response head arrived, by route family.",
            ["family"],
            buckets=LATENCY_BUCKETS,
            registry=own,
        )
        self._bytes = Counter(
            "hokusai_body_bytes",
            "Body bytes streamed: received from clients (in) and sent to clients (out).",
            ["direction"],
            registry=own,
        )
        self._upstream_errors = Counter(
            "hokusai_upstream_errors",
            "Failed exchanges with MLflow, by kind: refused, reset, timeout, loop.",
            ["kind"],
            registry=own,
        )
        self._auth_failures = Counter(
            "hokusai_auth_failures",
            "Refused credentials, by reason.",
            ["reason"],
            registry=own,
        )
        self._webhook_attempts = Counter(
            "hokusai_webhook_attempts",
            "Webhook delivery attempts, by outcome: delivered, retry (failed, tried again later), failed "
            "(failed, attempts used up).",
            ["outcome"],
            registry=own,
        )
        self.in_flight = Gauge(
            "hokusai_requests_in_flight",
            "Requests being handled now.",
            registry=own,
            multiprocess_mode="livesum",
        )
        self._bytes_in = self._bytes.labels("in")
        self._bytes_out = self._bytes.labels("out")
        self._request_children: dict[tuple[str, str, str], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe(self, record: RequestRecord, method: str) -> None:
        """Counts one finished request from its access record."""
        labels = (record.family, method if method in KNOWN_METHODS else "other", f"{record.status // 100}xx")
        child = self._request_children.get(labels)
        if child is None:
            child = self._request_children[labels] = self._requests.labels(*labels)
        child.inc()
        if record.bytes_in:
            self._bytes_in.inc(record.bytes_in)
        if record.bytes_out:
            self._bytes_out.inc(record.bytes_out)
        if record.upstream_ms is not None:
            histogram = self._latency_children.get(record.family)
            if histogram is None:
                histogram = self._latency_children[record.family] = self._latency.labels(record.family)
            histogram.observe(record.upstream_ms / 1000)
        if record.upstream_error:
            self._upstream_errors.labels(record.upstream_error).inc()
        if record.auth_failure:
            self._auth_failures.labels(record.auth_failure).inc()

    def webhook_attempt(self, outcome: str) -> None:
        self._webhook_attempts.labels(outcome).inc()

    async def endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_body(
            send, 200, generate_latest(self.registry), [(b"content-type", CONTENT_TYPE_LATEST.encode())]
        )
