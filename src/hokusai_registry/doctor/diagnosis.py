"""From evidence to the most likely root cause and the next thing to check (pure, no I/O).

Rules are tried in order; the first that recognises the evidence wins. They rely on facts, not guesses:
who answered (the gateway marks its own answers with X-Hokusai-Origin), the status, MLflow's error code
and message, the network layer that failed, and what the gateway's detailed health said.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Any

from hokusai_registry.core.refusals import PRODUCT, Reason
from hokusai_registry.doctor.evidence import Answer, KeepAlive
from hokusai_registry.policy.assertions import ADMIN_USER, ASSERTION_REFUSAL_MARK

# A delayed ACK costs ~40 ms on Linux: kept-alive requests this much slower than fresh ones wait for one.
STALL_MS = 25.0

# The gateway's refusals of a key, by their `reason`.
_KEY_FAILURES = {
    Reason.REVOKED_KEY.value: "the key was revoked",
    Reason.EXPIRED_KEY.value: "the key has expired",
    Reason.UNKNOWN_KEY.value: "the key is not known to this registry (another environment, or deleted)",
    Reason.MALFORMED_KEY.value: "the key is malformed (mistyped, cut off, or not a Hokusai key)",
    Reason.MISSING_KEY.value: "no key was sent",
}


@dataclass(frozen=True)
class Diagnosis:
    cause: str
    next_check: str


@dataclass
class Context:
    """What the doctor knew when the evidence was gathered."""

    step: str  # reach, auth, tracking, artifacts, large, registry, cleanup
    url: str
    tracking_ok: bool = False
    health: dict[str, Any] | None = None  # the detailed health answer, if the key could read it
    size_bytes: int = 0  # of the upload that failed, if any


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size} B"


def _artifacts_check(health: dict[str, Any] | None) -> str | None:
    if not health:
        return None
    check = (health.get("checks") or {}).get("artifacts")
    return str(check.get("status")) if isinstance(check, dict) else None


def _upstream_of(health: dict[str, Any] | None) -> str:
    routing = (health or {}).get("routing") or {}
    return str(routing.get("upstream") or "MLFLOW_SERVER_URL")


def network(answer: Answer, context: Context) -> Diagnosis | None:
    if answer.network == "dns":
        return Diagnosis(
            f"the host name in {context.url} does not resolve (DNS)",
            "check the URL for typos and that its DNS record exists where this command runs",
        )
    if answer.network == "refused":
        return Diagnosis(
            f"nothing accepts connections at {context.url} (connection refused)",
            "check that the gateway is running and listening on that host and port",
        )
    if answer.network == "connect_timeout":
        return Diagnosis(
            f"no TCP connection to {context.url} (timed out)",
            "check firewalls, security groups and that the address is reachable from here",
        )
    if answer.network == "tls":
        return Diagnosis(
            f"TLS failed: {answer.network_detail}",
            "a certificate problem: check the certificate's host name, chain and expiry (or use http:// if "
            "the gateway has no TLS)",
        )
    if answer.network == "read_timeout":
        return Diagnosis(
            f"{answer.method} {answer.path} got no answer within the doctor's timeout",
            "something between here and MLflow holds requests: check the gateway log for this path",
        )
    if answer.network:
        return Diagnosis(
            f"the connection broke during {answer.method} {answer.path}: {answer.network_detail}",
            "check the gateway's and any load balancer's logs",
        )
    return None


def gateway_refusal(answer: Answer, context: Context) -> Diagnosis | None:
    if not answer.from_gateway:
        return None
    message, reason = answer.message, answer.reason
    if reason == Reason.LOOP.value:
        return Diagnosis(
            "MLFLOW_SERVER_URL points back at the gateway itself (a routing loop)",
            "set MLFLOW_SERVER_URL to MLflow's internal address, e.g. "
            "http://mlflow.<project>-<env>.local:5000, never the gateway's public URL",
        )
    if answer.status == 401:
        what = _KEY_FAILURES.get(reason or "")
        if what is not None:
            return Diagnosis(
                f"authentication failed: {what}",
                "create a new key (`hokusai-registry keys create` or POST /api/v1/keys) and pass it with "
                "--api-key or MLFLOW_TRACKING_TOKEN",
            )
        return Diagnosis(f"authentication failed: {message}", "check the key")
    if reason == Reason.SCOPE.value:
        # The refusal's reason says what failed; the scope's name is only read out for the advice.
        needed = re.search(r"needs the '(\w+)' scope", message)
        if needed:
            request = re.search(r"may not (\w+ \S+?):", message)
            what = request.group(1) if request else f"{answer.method} {answer.path}"
            return Diagnosis(
                f"the key lacks the '{needed.group(1)}' scope (refused: {what})",
                f"use a key created with --scope {needed.group(1)} (or ask an admin for one)",
            )
    if reason == Reason.PERMISSION.value:
        return Diagnosis(
            f"MLflow's permissions refuse this owner: {message.removeprefix(PRODUCT + ': ')}",
            "ask an owner with MANAGE on it, or an admin, for a grant (`hokusai-registry grants add`); "
            "after an upgrade from a registry without permissions, an admin runs "
            "`hokusai-registry grants backfill`",
        )
    if reason == Reason.ASSERTION_REFUSED.value:
        return Diagnosis(
            "MLflow refuses this gateway's signature: the gateway and MLflow hold different assertion "
            "secrets, or their clocks differ",
            SIGNING_FIX,
        )
    if reason == Reason.SERVICE.value:
        return Diagnosis(
            "the key is limited to other service ids than this gateway's (AUTH_SERVICE_ID)",
            "create a key for this service, or check AUTH_SERVICE_ID on the gateway",
        )
    if answer.status == 403:
        return Diagnosis(f"the gateway refused the request: {message}", "see the message")
    if answer.status == 429:
        return Diagnosis(
            f"rate limited: {message}", "wait for Retry-After, or ask an admin for a higher per-key limit"
        )
    if answer.status == 502:
        found = re.search(r"MLflow at (\S+)", message)
        address = found.group(1) if found else _upstream_of(context.health)
        return Diagnosis(
            f"the gateway cannot reach MLflow at {address} (upstream down or wrong address)",
            "check that MLflow runs and that MLFLOW_SERVER_URL is its internal address and port",
        )
    if answer.status == 504:
        if reason == Reason.UPSTREAM_CONNECT_TIMEOUT.value:
            stage = "connecting to MLflow (connect timeout)"
            setting = "HOKUSAI_UPSTREAM_CONNECT_TIMEOUT, and the network path from the gateway to MLflow"
        elif reason == Reason.TRANSFER_TIMEOUT.value:
            stage = "waiting for the next chunk of an artifact transfer"
            setting = "HOKUSAI_ARTIFACT_READ_TIMEOUT, and MLflow's artifact store"
        else:
            stage = "waiting for MLflow's response (read timeout)"
            setting = "HOKUSAI_UPSTREAM_READ_TIMEOUT, and MLflow's load, workers and database"
        return Diagnosis(f"MLflow timed out while {stage}", f"check {setting}")
    if answer.status == 503 and answer.error_code == "TEMPORARILY_UNAVAILABLE":
        return Diagnosis(
            f"the gateway cannot check keys: {message}",
            "check the key store database (DATABASE_URL) or the auth service (AUTH_SERVICE_URL)",
        )
    if answer.status == 413:
        return Diagnosis(
            f"the gateway refused a JSON body as too large ({message})", "send smaller API bodies"
        )
    return None


def upstream_or_front(answer: Answer, context: Context) -> Diagnosis | None:
    """Answers the gateway relayed from MLflow, or made by something in front of it."""
    if answer.from_gateway or answer.status is None:
        return None
    body = answer.body
    if answer.status == 403 and "Invalid Host header" in body:
        return Diagnosis(
            "MLflow's allowed-hosts check rejects the Host header the gateway sends (MLflow 3 DNS-rebinding "
            "protection)",
            "start MLflow with --allowed-hosts '<internal name>,<internal name>:*' "
            "(HOKUSAI_MLFLOW_ALLOWED_HOSTS with `hokusai-registry mlflow`)",
        )
    if answer.status == 413:
        size = f" at {_human(context.size_bytes)}" if context.size_bytes else ""
        server = f" ({answer.server})" if answer.server else ""
        return Diagnosis(
            f"a proxy or load balancer in front of the gateway{server} limits request bodies (413{size}); "
            "the gateway itself has no limit on artifact uploads",
            "raise that proxy's body limit for this host (nginx: client_max_body_size 0; and turn off "
            "proxy_request_buffering)",
        )
    if answer.status == 401 and ASSERTION_REFUSAL_MARK.decode() in body:
        return Diagnosis(
            "MLflow accepts only requests a gateway signed, and this gateway does not sign: "
            "HOKUSAI_PERMISSIONS is off on the gateway but on for MLflow",
            "set HOKUSAI_PERMISSIONS the same for MLflow and every gateway (on, the default, with one shared "
            "assertion secret; or off on all of them) and restart them",
        )
    serving_off = "--no-serve-artifacts" in body or "Artifact serving is disabled" in body
    if answer.status == 503 and (serving_off or _artifacts_check(context.health) == "disabled"):
        return Diagnosis(
            "MLflow runs without --serve-artifacts, so it refuses artifact uploads and downloads",
            "start MLflow with --serve-artifacts and --artifacts-destination (as `hokusai-registry mlflow` "
            "does)",
        )
    if context.step in ("artifacts", "large") and answer.status == 404:
        if answer.mlflow_json or _artifacts_check(context.health) == "disabled":
            return Diagnosis(
                "MLflow answers tracking but has no artifact routes: it runs without --serve-artifacts",
                "start MLflow with --serve-artifacts (as `hokusai-registry mlflow` does)",
            )
        return Diagnosis(
            "artifact requests reach something that is not MLflow (404 without MLflow's JSON) while tracking "
            "works: the proxy routes artifact paths to the wrong upstream (for example its own public URL)",
            "point every MLflow path, /api/2.0/mlflow-artifacts/ included, at MLflow's internal address "
            f"({_upstream_of(context.health)})",
        )
    if answer.status in (502, 504) and not answer.headers.get("x-request-id"):
        return Diagnosis(
            f"a proxy in front of the gateway answered {answer.status}"
            + (f" ({answer.server})" if answer.server else "")
            + ": it could not reach the gateway or gave up waiting",
            "check that proxy's upstream address and timeouts (uploads need minutes, not 60 s)",
        )
    return None


RULES = (network, gateway_refusal, upstream_or_front)

# The fix for a gateway and an MLflow that do not agree on the assertion secret (advice, not a secret).
SIGNING_FIX = (
    "give MLflow and every gateway the same secret (one mounted file in "
    "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE, or the value in HOKUSAI_MLFLOW_ASSERTION_SECRET), keep their "
    "clocks in sync (NTP), and restart them"
)


def diagnose(answer: Answer, context: Context) -> Diagnosis:
    for rule in RULES:
        found = rule(answer, context)
        if found is not None:
            return found
    what = f"{answer.error_code}: {answer.message}" if answer.error_code else answer.body[:200]
    return Diagnosis(
        f"unexpected answer to {answer.method} {answer.path}: {answer.status} {what}".strip(),
        "check the gateway log for this request (its X-Request-ID is in the evidence)",
    )


def artifact_location(location: str) -> Diagnosis | None:
    """New experiments must store artifacts through the gateway (`mlflow-artifacts:`)."""
    if location.startswith("mlflow-artifacts:"):
        return None
    return Diagnosis(
        f"new experiments get the artifact location {location!r}, so clients write artifacts around the "
        "gateway (with their own storage credentials) instead of through it",
        "start MLflow with --serve-artifacts --artifacts-destination <store> and without "
        "--default-artifact-root",
    )


def auth_is_off(answer: Answer) -> Diagnosis:
    """An invalid key was accepted."""
    if not answer.from_gateway and "x-request-id" not in answer.headers:
        return Diagnosis(
            "the URL reaches MLflow directly, not through the Hokusai gateway: anyone can read and write",
            "give clients the gateway's URL, and keep MLflow on a private network",
        )
    return Diagnosis(
        "the gateway accepted a key that does not exist: authentication is not enforced",
        "check what answers at this URL; it must be `hokusai-registry gateway` or `serve`",
    )


def keep_alive_stall(timings: KeepAlive, url: str, *, from_gateway: bool) -> Diagnosis | None:
    """Requests on a kept-alive connection consistently ~40 ms slower than on new ones: the server sends its
    responses in more than one piece with Nagle's algorithm on (no TCP_NODELAY), so each waits for the
    delayed ACK of the first piece, which Linux sends at once only early in a connection."""
    if len(timings.kept_ms) < 3 or not timings.fresh_ms:
        return None
    fresh = statistics.median(timings.fresh_ms)
    slower = [kept - fresh for kept in timings.kept_ms]
    # Consistently: every kept-alive request but at most one is that much slower.
    if sum(delay >= STALL_MS for delay in slower) < len(slower) - 1:
        return None
    kept = statistics.median(timings.kept_ms)
    cause = (
        f"requests on a kept-alive connection to {url} take {kept:.0f} ms, {kept - fresh:.0f} ms more than "
        f"on a new connection ({fresh:.0f} ms): the server leaves Nagle's algorithm on (no TCP_NODELAY) and "
        "each response waits for a delayed ACK"
    )
    if from_gateway:
        return Diagnosis(
            cause + " — something in front of the gateway (a proxy or load balancer)",
            "turn on TCP_NODELAY in that proxy towards its clients (nginx: tcp_nodelay on, the default)",
        )
    return Diagnosis(
        cause + " — likely MLflow under uvicorn with several workers (uvicorn 0.54 or older, asyncio loop)",
        "start MLflow with --uvicorn-opts '--loop uvloop' (as `hokusai-registry mlflow` and `serve` do), or "
        "with uvicorn 0.55 or newer, or with --workers 1; a Hokusai gateway in front acknowledges at once "
        "(TCP_QUICKACK), so clients of the gateway do not wait",
    )


# -- permissions (the doctor's permissions step)


def permissions_off() -> str:
    return (
        "permissions are off on this gateway (HOKUSAI_PERMISSIONS=off): every write key can change "
        "everything, and MLflow trusts whoever reaches it"
    )


def not_enforced(check: dict[str, Any]) -> Diagnosis:
    """The gateway's `permissions` health check failed: MLflow answered a request it did not sign, or the
    gateway could not ask."""
    if check.get("http_status") is None:
        return Diagnosis(
            f"the gateway could not check whether MLflow enforces permissions: {check.get('detail')}",
            "check that MLflow runs and that MLFLOW_SERVER_URL is its internal address",
        )
    return Diagnosis(
        f"MLflow answered {check.get('http_status')} to a request the gateway did not sign: it does not "
        "enforce permissions, and anyone who reaches its address can act as anyone",
        "start MLflow with `hokusai-registry mlflow` (or `serve`): MLflow's auth app with the gateway's "
        "authorization function; " + SIGNING_FIX + ". Or set HOKUSAI_PERMISSIONS=off on every gateway to run "
        "without permissions",
    )


def creator_lacks_manage(user: str, level: str | None, experiment_id: str) -> Diagnosis:
    """The owner created an experiment but does not hold MANAGE on it."""
    held = f"holds {level}" if level else "holds no grant"
    return Diagnosis(
        f"{user} created experiment {experiment_id} but {held} on it: MLflow did not give the creator "
        "MANAGE, so owners cannot manage (delete, share) what they make",
        "start MLflow with `hokusai-registry mlflow` (its auth app grants creators MANAGE), not a "
        "hand-written `mlflow server --app-name basic-auth`; and look for a DENY on a team of "
        f"{user}'s (`hokusai-registry grants list --owner {user}`)",
    )


def manage_refused(user: str, action: str, answer: Answer) -> Diagnosis:
    """The owner could not change or delete the experiment it just created."""
    return Diagnosis(
        f"{user} may not {action} the experiment it just created ({answer.status} {answer.error_code or ''}"
        f"{': ' + answer.message[:200] if answer.message else ''}): creators cannot manage what they make",
        "start MLflow with `hokusai-registry mlflow` (its auth app grants creators MANAGE), and look for a "
        f"DENY on a team of {user}'s (`hokusai-registry grants list --owner {user}`)",
    )


def acts_as_admin(user: str) -> bool:
    return user == ADMIN_USER
