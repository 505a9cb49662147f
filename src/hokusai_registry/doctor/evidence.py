"""What the doctor sees: every HTTP exchange it makes itself, reduced to the facts a diagnosis needs
(status, who answered, MLflow's error code and message, network failure and where), never a credential."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from hokusai_registry.core.redaction import redact

BODY_EXCERPT = 600


@dataclass
class Answer:
    """One request's outcome. `network` is set (dns, refused, connect_timeout, read_timeout, tls, reset)
    when no HTTP answer came back."""

    method: str
    path: str
    status: int | None = None
    from_gateway: bool = False  # the answer carries the gateway's X-Hokusai-Origin mark
    content_type: str = ""
    server: str = ""
    error_code: str | None = None
    message: str = ""
    reason: str | None = None  # the gateway's machine-readable `reason` for its own refusals
    body: str = ""
    network: str | None = None
    network_detail: str = ""
    elapsed_ms: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] | None = None  # the JSON object answered, if any

    @property
    def mlflow_json(self) -> bool:
        return self.content_type.startswith("application/json") and self.error_code is not None

    def summary(self) -> str:
        request = f"{self.method} {self.path}".strip()
        if self.network:
            return f"{request} -> no answer ({self.network}: {self.network_detail})"
        who = "gateway" if self.from_gateway else (self.server or "upstream")
        what = f"{self.error_code}: {self.message}" if self.error_code else self.body[:120].strip()
        return redact(f"{request} -> {self.status} from {who} ({self.content_type}) {what}")


def _network_kind(exc: requests.RequestException) -> tuple[str, str]:
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls", _tls_reason(text)
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect_timeout", "no connection within the timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read_timeout", "connected, but no answer within the timeout"
    if "NameResolutionError" in text or "Name or service not known" in text or "getaddrinfo" in text:
        return "dns", "the host name does not resolve"
    if "Connection refused" in text:
        return "refused", "connection refused"
    return "reset", text[-200:]


def _tls_reason(text: str) -> str:
    for marker in (
        "certificate verify failed",
        "wrong version number",
        "handshake failure",
        "hostname mismatch",
    ):
        if marker in text:
            start = text.find(marker)
            return text[start : start + 160].split("'")[0].split(")")[0]
    return text[-160:]


class Http:
    """Plain HTTP to the gateway with the key as a Bearer token; no cookies kept, no retries."""

    def __init__(self, key: str | None, timeout: float) -> None:
        self.key = key
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # the doctor tests this URL, not whatever proxy the shell names

    def request(
        self,
        method: str,
        url: str,
        *,
        key: str | bool | None = True,
        json_body: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """`key=True` sends the doctor's key, a string sends that key, None/False sends none."""
        headers = {}
        presented = self.key if key is True else key
        if isinstance(presented, str):
            headers["Authorization"] = f"Bearer {presented}"
        path = urlsplit(url).path
        answer = Answer(method, path)
        started = time.perf_counter()
        try:
            response = self.session.request(
                method,
                url,
                headers=headers,
                json=json_body,
                data=data,
                params=params,
                timeout=timeout or self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            answer.network, answer.network_detail = _network_kind(exc)
            answer.elapsed_ms = (time.perf_counter() - started) * 1000
            return answer
        finally:
            self.session.cookies.clear()
        answer.elapsed_ms = (time.perf_counter() - started) * 1000
        answer.status = response.status_code
        answer.headers = {name.lower(): value for name, value in response.headers.items()}
        answer.from_gateway = answer.headers.get("x-hokusai-origin") == "gateway"
        answer.content_type = answer.headers.get("content-type", "")
        answer.server = answer.headers.get("server", "")
        answer.body = redact(response.text[:BODY_EXCERPT])
        if answer.content_type.startswith("application/json"):
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                answer.data = parsed
                if "error_code" in parsed:
                    answer.error_code = str(parsed["error_code"])
                    answer.message = redact(str(parsed.get("message", "")))
                    if answer.from_gateway and isinstance(parsed.get("reason"), str):
                        answer.reason = parsed["reason"]
        return answer


@dataclass(frozen=True)
class KeepAlive:
    """Milliseconds per GET of one URL: on one kept-alive connection, and on a new connection each."""

    kept_ms: list[float]
    fresh_ms: list[float]


def keep_alive_timings(url: str, count: int, timeout: float) -> KeepAlive | None:
    """`count` GETs of `url` back to back on one kept-alive connection (as clients send them: a pause
    would change how the kernel acknowledges), then `count` on a new connection each; None if any fails."""
    timings = KeepAlive([], [])

    def timed(session: requests.Session, into: list[float], **headers: str) -> None:
        started = time.perf_counter()
        session.get(url, timeout=timeout, headers=headers)  # reads the whole answer
        into.append((time.perf_counter() - started) * 1000)

    try:
        with requests.Session() as kept:
            kept.trust_env = False
            kept.get(url, timeout=timeout)  # opens the connection the others reuse
            for _ in range(count):
                timed(kept, timings.kept_ms)
        for _ in range(count):
            with requests.Session() as fresh:
                fresh.trust_env = False
                timed(fresh, timings.fresh_ms, Connection="close")
    except requests.RequestException:
        return None
    return timings


@dataclass
class Connection:
    """DNS, TCP and TLS to the gateway, each on its own, so a failure names its layer."""

    stage: str  # the first stage that failed, or "ok"
    detail: str
    addresses: list[str]
    tls_version: str | None = None


def connect(url: str, timeout: float) -> Connection:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return Connection("dns", f"{host} does not resolve ({exc.strerror})", [])
    addresses = sorted({str(info[4][0]) for info in infos})
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return Connection("tcp", f"no TCP connection to {host}:{port} within {timeout:g} s", addresses)
    except OSError as exc:
        return Connection("tcp", f"TCP connection to {host}:{port} failed: {exc.strerror or exc}", addresses)
    with sock:
        if parts.scheme != "https":
            return Connection("ok", f"TCP to {host}:{port}", addresses)
        context = ssl.create_default_context()
        try:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                return Connection("ok", f"TLS to {host}:{port}", addresses, tls.version())
        except ssl.SSLCertVerificationError as exc:
            return Connection("tls", f"certificate problem: {exc.verify_message}", addresses)
        except (ssl.SSLError, OSError) as exc:
            return Connection("tls", f"TLS handshake with {host}:{port} failed: {exc}", addresses)
