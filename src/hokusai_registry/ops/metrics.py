"""Prometheus metrics of one gateway process, served at `/metrics` (a key is required).

Label values come from small fixed sets (route family, method, status class, error kind, auth failure
reason), never from paths, keys or key ids.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.refusals import send_body

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Time to MLflow's response head: from fast REST reads to slow model-registry writes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "hokusai_requests",
            "Requests answered, by route family (rest, transfer, ui, gateway, none), method, status class.",
            ["family", "method", "status_class"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "hokusai_upstream_response_seconds",
            "Seconds until MLflow's response head arrived, by route family.",
            ["family"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._bytes = Counter(
            "hokusai_body_bytes",
            "Body bytes streamed: received from clients (in) and sent to clients (out).",
            ["direction"],
            registry=self.registry,
        )
        self._upstream_errors = Counter(
            "hokusai_upstream_errors",
            "Failed exchanges with MLflow, by kind: refused, reset, timeout, loop.",
            ["kind"],
            registry=self.registry,
        )
        self._auth_failures = Counter(
            "hokusai_auth_failures",
            "Refused credentials, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._webhook_attempts = Counter(
            "hokusai_webhook_attempts",
            "Webhook delivery attempts, by outcome: delivered, retry (failed, tried again later), failed "
            "(failed, attempts used up).",
            ["outcome"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hokusai_requests_in_flight", "Requests being handled now.", registry=self.registry
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
