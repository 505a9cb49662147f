"""Health endpoints, answered by the gateway itself and never forwarded.

- `/health`: the process is alive (no upstream call) — for load-balancer liveness.
- `/ready`: the key store answers and MLflow's `/health` answers `OK`; 503 with the reason otherwise.
  It needs no key, so, like the summary below, it never names an internal address.
- `/mlflow/health/mlflow` (and under `/api/mlflow`): one valid MLflow request per API family, sent through
  the same forwarder, pool and path translation users' requests take. A check passes only on the expected
  status *and* an MLflow-shaped body, so a 404 or an HTML page is never healthy.
- `.../detailed`: the same with timings, versions and routing facts; it needs a key (it names the
  internal upstream), and holds no secret either way.

Results are cached for a few seconds and computed once for concurrent callers, so a flood of health
calls cannot load MLflow.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from hokusai_registry import __version__
from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.net import is_internal_host
from hokusai_registry.core.refusals import send_json
from hokusai_registry.policy.assertions import ASSERTION_REFUSAL_MARK
from hokusai_registry.policy.headers import LOOP_MARK
from hokusai_registry.policy.routes import MLFLOW_HEALTH_PATHS
from hokusai_registry.transport.upstream import UpstreamError

LIVENESS_BODY = b'{"status": "ok"}'


class Prober(Protocol):
    """What health needs of the upstream side (the forwarder is one): a request of the gateway's own,
    sent the way users' requests are (same pool, path translation and fixed headers), and how to name
    the upstream in messages. Failures raise `UpstreamError`."""

    @property
    def upstream_display(self) -> str: ...

    @property
    def signs(self) -> bool: ...

    async def probe(
        self, method: str, path: str, query: bytes, body: bytes | None, *, signed: bool = True
    ) -> tuple[int, bytes]: ...


@dataclass(frozen=True)
class Check:
    status: str  # "ok", "failed" or "disabled"
    http_status: int | None
    response_time_ms: float
    detail: str


@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str
    query: bytes
    body: bytes | None
    expect: Callable[[int, bytes], str | None]  # None when the answer is right, else what is wrong
    signed: bool = True


def _mlflow_json(status: int, body: bytes) -> str | None:
    if status != 200:
        return f"answered {status}" + (" (not an MLflow endpoint at this address)" if status == 404 else "")
    try:
        parsed = json.loads(body)
    except ValueError:
        return "answered 200 but not with MLflow's JSON (is this address really MLflow?)"
    return None if isinstance(parsed, dict) else "answered 200 with JSON that is not an object"


def _health_ok(status: int, body: bytes) -> str | None:
    if status == 200 and body.strip() == b"OK":
        return None
    return f"answered {status} {body[:40]!r}, expected 200 'OK'"


PROBES = (
    Probe("mlflow", "GET", "/health", b"", None, _health_ok),
    Probe(
        "experiments", "POST", "/api/2.0/mlflow/experiments/search", b"", b'{"max_results": 1}', _mlflow_json
    ),
    Probe(
        "registered_models",
        "GET",
        "/api/2.0/mlflow/registered-models/search",
        b"max_results=1",
        None,
        _mlflow_json,
    ),
    Probe("artifacts", "GET", "/api/2.0/mlflow-artifacts/artifacts", b"", None, _mlflow_json),
)
CRITICAL = ("mlflow", "experiments", "registered_models")


def _refuses_unsigned(status: int, body: bytes) -> str | None:
    if status == 401 and ASSERTION_REFUSAL_MARK in body:
        return None
    return (
        f"answered {status} to a request the gateway did not sign: this MLflow does not enforce "
        "permissions. Start it with `hokusai-registry mlflow` (MLflow's auth app with the gateway's "
        "authorization function and HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE), or set HOKUSAI_PERMISSIONS=off "
        "on every gateway"
    )


# With permissions on: MLflow must refuse what the gateway did not sign (anyone on its network could
# otherwise act as anyone).
ENFORCEMENT = Probe(
    "permissions",
    "GET",
    "/api/2.0/mlflow/experiments/get",
    b"experiment_id=0",
    None,
    _refuses_unsigned,
    signed=False,
)


class Health:
    def __init__(
        self,
        prober: Prober,
        store_check: Callable[[], Awaitable[object]],
        *,
        timeout: float,
        cache_seconds: float,
        upstream_url: str,
        api_prefix: str,
        public_url: str | None,
    ) -> None:
        self._prober = prober
        self._probes = (*PROBES, ENFORCEMENT) if prober.signs else PROBES
        self._critical = (*CRITICAL, ENFORCEMENT.name) if prober.signs else CRITICAL
        self._store_check = store_check
        self._timeout = timeout
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._running: asyncio.Task[dict[str, Any]] | None = None
        self._routing = {
            "upstream": prober.upstream_display,
            "upstream_is_internal": is_internal_host(urlsplit(upstream_url).hostname or ""),
            "path_translation": "api -> ajax-api" if api_prefix == "ajax-api" else "off",
            "loop_guard": {
                "mark_header": LOOP_MARK.decode(),
                "refuses_own_listener_and_public_url": True,
                "public_url": public_url,
            },
        }

    # endpoints

    async def liveness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_json(send, 200, LIVENESS_BODY)

    async def readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        report = await self._report()
        problems = []
        if report["key_store"] != "ok":
            problems.append(f"key store: {report['key_store']}")
        mlflow = report["checks"]["mlflow"]
        if mlflow.status != "ok":
            seen = "no answer" if mlflow.http_status is None else f"answered HTTP {mlflow.http_status}"
            problems.append(f"MLflow: {seen} (the reason: {MLFLOW_HEALTH_PATHS[0]}/detailed, with a key)")
        enforcement = report["checks"].get(ENFORCEMENT.name)
        if mlflow.status == "ok" and enforcement is not None and enforcement.status != "ok":
            # Says nothing internal: no address, only what to run.
            problems.append(f"MLflow: {enforcement.detail}")
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        await send_json(send, 200 if not problems else 503, json.dumps(body).encode())

    async def mlflow_summary(self, scope: Scope, receive: Receive, send: Send) -> None:
        report = await self._report()
        body = {
            "status": report["status"],
            "checks": {
                name: {"status": c.status, "http_status": c.http_status}
                for name, c in report["checks"].items()
            },
        }
        await send_json(send, 503 if report["status"] == "unhealthy" else 200, json.dumps(body).encode())

    async def mlflow_detailed(self, scope: Scope, receive: Receive, send: Send) -> None:
        report = await self._report()
        body = {
            "status": report["status"],
            "checks": {name: asdict(check) for name, check in report["checks"].items()},
            "key_store": report["key_store"],
            "mlflow_version": report["mlflow_version"],
            "gateway_version": __version__,
            "routing": self._routing,
            "checked_at": report["checked_at"],
            "cached_for_seconds": self._cache_seconds,
        }
        await send_json(send, 503 if report["status"] == "unhealthy" else 200, json.dumps(body).encode())

    # checks

    async def _report(self) -> dict[str, Any]:
        if self._cached is not None and time.monotonic() - self._cached[0] < self._cache_seconds:
            return self._cached[1]
        if self._running is None:
            self._running = asyncio.ensure_future(self._run_checks())
        running = self._running
        try:
            report = await asyncio.shield(running)
        finally:
            if running.done():
                self._running = None
        self._cached = (time.monotonic(), report)
        return report

    async def _run_checks(self) -> dict[str, Any]:
        all_checks, version, key_store = await asyncio.gather(
            asyncio.gather(*(self._check(probe) for probe in self._probes)),
            self._version(),
            self._key_store(),
        )
        checks = dict(zip((probe.name for probe in self._probes), all_checks, strict=True))
        if (
            any(checks[name].status != "ok" for name in self._critical)
            or checks["artifacts"].status == "failed"
        ):
            status = "unhealthy"
        elif checks["artifacts"].status == "disabled":
            status = "degraded"
        else:
            status = "healthy"
        return {
            "status": status,
            "checks": checks,
            "mlflow_version": version,
            "key_store": key_store,
            "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }

    async def _check(self, probe: Probe) -> Check:
        started = time.perf_counter()
        try:
            status, body = await asyncio.wait_for(
                self._prober.probe(probe.method, probe.path, probe.query, probe.body, signed=probe.signed),
                self._timeout,
            )
        except TimeoutError:
            return Check("failed", None, _ms(started), f"no answer within {self._timeout:g} s")
        except UpstreamError as exc:
            return Check("failed", None, _ms(started), f"{exc} while {exc.stage}")
        if probe.name == "artifacts" and status == 503 and b"--no-serve-artifacts" in body:
            return Check("disabled", status, _ms(started), "MLflow runs without --serve-artifacts")
        problem = probe.expect(status, body)
        return Check("failed" if problem else "ok", status, _ms(started), problem or "ok")

    async def _version(self) -> str | None:
        try:
            status, body = await asyncio.wait_for(
                self._prober.probe("GET", "/version", b"", None), self._timeout
            )
        except (TimeoutError, UpstreamError):
            return None
        return body.decode("utf-8", "replace").strip()[:40] if status == 200 else None

    async def _key_store(self) -> str:
        try:
            await asyncio.wait_for(self._store_check(), self._timeout)
        except TimeoutError:
            return f"no answer within {self._timeout:g} s"
        except Exception as exc:
            return f"unavailable ({type(exc).__name__})"
        return "ok"


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
