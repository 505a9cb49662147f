"""Hostile input catalogue (issue 7, part 3): every case in `hostile_cases.yaml`, sent byte for byte to a
real gateway process in front of a canary upstream.

The canary records every byte that reaches it, parsed with llhttp (the parser the gateway itself uses on
both sides), and answers every request it can parse with 200, whatever its headers or size. It is not
`tests.support.stub.StubUpstream`: that one answers 500 to a header value that is not UTF-8 and 400 to a
header over 128 KiB, without recording either, so it could neither prove what arrived nor stay out of the
statuses the gateway is judged by. Here any 5xx is the gateway's own.

For each case the test proves the expected answer (status, MLflow error code, who answered), that no
answer is a 5xx, that nothing reached the canary for a request without a valid key, and, for requests
that were forwarded, exactly what arrived: the authorized path, no client credential, the gateway's own
identity and forwarding headers, and no key material anywhere. Each request carries its case's
`X-Request-Id`, which the gateway forwards, so every arrival is attributed to its case without timing;
the last test fails on anything that arrived for no case or after its case was over.

Cases marked `xfail` in the data are known gateway bugs: they hold the correct expectation and fail
until the gateway is fixed (strict: a fix shows up as a failing XPASS, the cue to drop the mark).

`python -m tests.e2e.test_hostile` prints the case count with outcomes by class (for the closing note).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as dt
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httptools
import pytest
import yaml

from hokusai_registry.policy import keys
from hokusai_registry.policy.assertions import verify
from hokusai_registry.store.key_store import ADMIN_SCOPES, DEFAULT_SCOPES
from tests.helpers import GatewayProcess, assertion_secret, key_store, raw_request

CASES_FILE = Path(__file__).with_name("hostile_cases.yaml")
CLASSES = ("traversal", "method", "header", "credential", "body")
# What the spec's list names, per class: the catalogue must cover each (`topic` of a case).
REQUIRED_TOPICS = {
    "traversal": {
        "dot-dot",
        "encoded-dot",
        "encoded-slash",
        "encoded-backslash",
        "overlong-utf8",
        "double-encoding",
        "semicolon",
        "double-slash",
        "absolute-form",
        "nul",
    },
    "method": {"trace", "connect", "override"},
    "header": {
        "cl-and-te",
        "duplicate-cl",
        "invalid-chunking",
        "oversized-headers",
        "too-many-headers",
        "crlf-injection",
        "host-spoofing",
        "x-forwarded-spoofing",
        "identity-headers",
        "request-id",
    },
    "credential": {
        "malformed",
        "query-string",
        "wrong-checksum",
        "truncated",
        "other-environment",
        "basic-empty-password",
        "long-token",
        "both-headers",
    },
    "body": {
        "huge-json",
        "large-artifact",
        "content-type",
        # Step 10 bodies
        "bodyless-transfer",
        "content-coding",
        "own-route-body",
    },
}
# Gateways the cases run on: the default one, and one whose client is not a trusted proxy.
GATEWAY_ENV = {
    # Many cases send bad keys from 127.0.0.1 on purpose: the failure throttle has its own tests.
    "default": {"HOKUSAI_AUTH_FAILURE_LIMIT": "0"},
    "untrusted-client": {"HOKUSAI_AUTH_FAILURE_LIMIT": "0", "HOKUSAI_FORWARDED_ALLOW_IPS": "192.0.2.1"},
}
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "cookie", "proxy-authorization")
# Never forwarded, whatever the client sent: hop-by-hop and gateway-owned names.
NEVER_FORWARDED = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "origin",
)
# Reserved for values a client forges (in headers or bodies): they must never reach the upstream.
FORGED = b"FORGED"
KEEP_BODY = 8 << 20  # bytes of each request body the canary keeps (to search)
SOCKET_TIMEOUT = 30.0  # a case that gets no answer (or close) within this is a hang


def load_catalogue() -> tuple[dict[str, str], list[dict[str, Any]]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when installed: the file is large
    data = yaml.load(CASES_FILE.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    return data["bugs"], data["cases"]


BUGS, CASES = load_catalogue()


# ---------------------------------------------------------------------------------------------------
# The canary upstream


@dataclasses.dataclass
class Arrival:
    """One request as it reached the canary (complete, or cut off when the connection closed)."""

    label: str  # the case running when its head arrived
    connection: int
    method: str = ""
    target: str = ""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    body_length: int = 0
    body: bytearray = dataclasses.field(default_factory=bytearray)  # the first KEEP_BODY bytes
    complete: bool = False

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]

    @property
    def request_id(self) -> str:
        found = self.values("x-request-id")
        return found[0] if found else ""

    def text(self) -> bytes:
        """Everything that arrived for this request that can be searched (target, headers, body)."""
        head = self.target + "".join(f"\n{name}: {value}" for name, value in self.headers)
        return head.encode("latin-1") + b"\n" + bytes(self.body)


class _CanaryConnection:
    """httptools callbacks for one connection."""

    def __init__(self, canary: Canary, number: int) -> None:
        self.canary = canary
        self.number = number
        self.current: Arrival | None = None
        self.url = b""
        self.finished: list[Arrival] = []
        self.parser = httptools.HttpRequestParser(self)

    def on_message_begin(self) -> None:
        self.url = b""
        self.current = Arrival(label=self.canary.label, connection=self.number)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.current.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        assert self.current is not None
        self.current.method = self.parser.get_method().decode("latin-1")
        self.current.target = self.url.decode("latin-1")
        self.current.label = self.canary.label
        self.canary.add(self.current)

    def on_body(self, body: bytes) -> None:
        assert self.current is not None
        self.current.body_length += len(body)
        room = KEEP_BODY - len(self.current.body)
        if room > 0:
            self.current.body += body[:room]

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.current.complete = True
        self.finished.append(self.current)
        self.current = None


class Canary:
    """A stand-in MLflow on loopback that records everything arriving and always answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.authority = f"127.0.0.1:{self.port}"
        self.label = "(between cases)"
        self.arrivals: list[Arrival] = []
        self.unparsable: list[str] = []
        self._lock = threading.Lock()
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def add(self, arrival: Arrival) -> None:
        with self._lock:
            self.arrivals.append(arrival)

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._server.accept()
            except OSError:
                return
            self._connections += 1
            threading.Thread(target=self._serve, args=(connection, self._connections), daemon=True).start()

    def _serve(self, connection: socket.socket, number: int) -> None:
        state = _CanaryConnection(self, number)
        with connection:
            while True:
                try:
                    data = connection.recv(1 << 16)
                except OSError:
                    return
                if not data:
                    return
                try:
                    state.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    self.unparsable.append(f"{self.label}: {exc} in {data[:200]!r}")
                    _answer(connection, "GET", {"canary": "unparsable"})
                    return
                for arrival in state.finished:
                    _answer(connection, arrival.method, {"canary": True, "target": arrival.target})
                state.finished.clear()

    def for_case(self, request_id: str, label: str, known_ids: set[str]) -> list[Arrival]:
        """Arrivals carrying the case's request id, and those that came while it ran without a known id
        (the gateway replaces an X-Request-Id it does not accept)."""
        with self._lock:
            return [
                arrival
                for arrival in self.arrivals
                if arrival.request_id == request_id
                or (arrival.label == label and arrival.request_id not in known_ids)
            ]

    def stop(self) -> None:
        self._server.close()


def _answer(connection: socket.socket, method: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    # With a hop-by-hop header the gateway must not pass on to the client.
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"connection: keep-alive, x-canary-hop\r\nx-canary-hop: 1\r\n\r\n" % len(body)
    )
    with contextlib.suppress(OSError):
        connection.sendall(head if method == "HEAD" else head + body)


# ---------------------------------------------------------------------------------------------------
# Keys and placeholders


@dataclasses.dataclass
class Deployment:
    name: str
    gateway: GatewayProcess
    values: dict[str, str]  # placeholder -> text
    secrets: list[bytes]  # key material that must never reach the upstream or an answer


def _resigned(body: str) -> str:
    """A well-formed key: `body` with its correct checksum."""
    return body + keys.checksum(body)


def _key_values(gateway: GatewayProcess) -> dict[str, str]:
    store = key_store(gateway.data_dir)
    try:
        made: dict[str, str] = {}
        for name, scopes, extra in (
            ("KEY", DEFAULT_SCOPES, {"owner": "hostile-owner"}),
            ("READ_KEY", ("read",), {}),
            ("ADMIN_KEY", ADMIN_SCOPES, {}),
            ("REVOKED_KEY", DEFAULT_SCOPES, {}),
            ("EXPIRED_KEY", DEFAULT_SCOPES, {"expires_at": dt.datetime.now(dt.UTC) - dt.timedelta(days=1)}),
            ("OTHER_SERVICE_KEY", DEFAULT_SCOPES, {"service_ids": ("another-service",)}),
        ):
            record, text = store.create(name.lower(), environment="live", scopes=scopes, **extra)
            made[name] = text
            made[name + "_ID"] = record.key_id
        store.revoke(made["REVOKED_KEY_ID"])
    finally:
        store.close()
    key, key_id = made["KEY"], made["KEY_ID"]
    secret = key[21:]  # after "hk_live_<12-character id>_"
    swapped = "Z" if key[21] != "Z" else "Y"
    made.update(
        KEY_SECRET=secret,
        KEY_HASH=keys.digest(key),
        KEY_BAD_CHECKSUM=key[:-1] + ("Q" if key[-1] != "Q" else "R"),
        KEY_CUT_1=key[:-1],
        KEY_CUT_HALF=key[: len(key) // 2],
        KEY_EXTRA_CHAR=key + "x",
        KEY_NO_CHECKSUM=key[:-6],
        KEY_PREFIX_AND_ID=f"hk_live_{key_id}",
        KEY_NO_PREFIX=key[len("hk_live_") :],
        KEY_UPPER=key.upper(),
        KEY_AS_TEST="hk_test_" + key[len("hk_live_") :],
        KEY_AS_TEST_RESIGNED=_resigned("hk_test_" + key[len("hk_live_") : -6]),
        KEY_FORGED_SECRET=_resigned(f"hk_live_{key_id}_{swapped}{secret[1:32]}"),
        KEY_OTHER_ID=_resigned(f"hk_live_{made['READ_KEY_ID']}_{secret[:32]}"),
        KEY_DASH=key[:30] + "-" + key[31:],
        KEY_SPACE=key[:30] + " " + key[31:],
        KEY_PCT=key.replace("_", "%5F"),
        KEY_PCT_ALL="".join(f"%{byte:02X}" for byte in key.encode()),
        UNKNOWN_LIVE_KEY=keys.generate("live").text,
        UNKNOWN_TEST_KEY=keys.generate("test").text,
    )
    return made


def _secrets(values: Mapping[str, str]) -> list[bytes]:
    found = []
    for name in ("KEY", "READ_KEY", "ADMIN_KEY", "REVOKED_KEY", "EXPIRED_KEY", "OTHER_SERVICE_KEY"):
        text = values[name]
        found += [text[21:53].encode(), keys.digest(text).encode()]  # the random secret, the stored hash
    return found


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    server = Canary()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployments(canary: Canary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Deployment]]:
    """One gateway per setting in GATEWAY_ENV, all in front of the canary, started and stopped side by side
    (their keys are made one after the other: alembic's migration context is not thread-safe)."""
    gateways: dict[str, GatewayProcess] = {}

    def start(name: str) -> None:
        gateways[name] = GatewayProcess(
            canary.url, tmp_path_factory.mktemp(f"hostile-{name}"), env=GATEWAY_ENV[name]
        )

    try:
        with ThreadPoolExecutor(len(GATEWAY_ENV)) as pool:
            for future in [pool.submit(start, name) for name in GATEWAY_ENV]:
                future.result()
        started = {}
        for name, gateway in gateways.items():
            values = _key_values(gateway)
            values.update(HOST=f"127.0.0.1:{gateway.port}", CANARY=canary.authority)
            started[name] = Deployment(name, gateway, values, _secrets(values))
        yield started
    finally:
        with ThreadPoolExecutor(len(GATEWAY_ENV)) as pool:
            list(pool.map(GatewayProcess.stop, gateways.values()))


# ---------------------------------------------------------------------------------------------------
# Requests and answers

_PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
_REPEAT = re.compile(r"\{repeat:(\d+):([^{}]*)\}")
_B64 = re.compile(r"\{b64:([^{}]*)\}")


def fill(text: str, values: Mapping[str, str]) -> str:
    """Placeholders ({KEY}, {HOST}, ...), then {repeat:N:text}, then {b64:text} (base64 of latin-1)."""
    text = _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)
    text = _REPEAT.sub(lambda match: match.group(2) * int(match.group(1)), text)
    return _B64.sub(lambda match: base64.b64encode(match.group(1).encode("latin-1")).decode(), text)


def _generated_body(spec: Mapping[str, Any]) -> bytes:
    size = int(spec["size"])
    if spec["kind"] == "json":  # a JSON object of exactly `size` bytes
        head, tail = b'{"experiment_id": "0", "pad": "', b'"}'
        return head + b"a" * (size - len(head) - len(tail)) + tail
    pattern = bytes(range(256))
    return (pattern * (size // 256 + 1))[:size]


def _chunked(body: bytes, size: int = 1 << 16) -> bytes:
    parts = [
        b"%x\r\n%b\r\n" % (len(body[i : i + size]), body[i : i + size]) for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def render(case: Mapping[str, Any], values: Mapping[str, str]) -> bytes:
    """The exact bytes of the case's request (every request carries its case's X-Request-Id)."""
    request = case["request"]
    if "raw_head" in request:  # CRLF lines, an empty line, and whatever follows
        request = {"raw": "\r\n".join(request["raw_head"]) + "\r\n\r\n" + request.get("raw_after", "")}
    if "raw" in request:
        raw = fill(request["raw"], values)
        if "{RID}" not in request["raw"] and "x-request-id:" not in raw.lower():
            line, sep, rest = raw.partition("\r\n")
            raw = f"{line}{sep}X-Request-Id: {values['RID']}\r\n{rest}" if sep else raw
        return raw.encode("latin-1")
    headers = request.get("headers") or {}
    pairs = [
        (fill(str(name), values), fill(str(value), values))
        for name, value in (headers.items() if isinstance(headers, dict) else headers)
    ]
    names = {name.lower() for name, _ in pairs}
    if "body" in request:
        body = fill(request["body"], values).encode("latin-1")
    elif "generated_body" in request:
        body = _generated_body(request["generated_body"])
    else:
        body = b""
    lines = [f"{fill(request['method'], values)} {fill(request['target'], values)} HTTP/1.1"]
    if "host" not in names and request.get("host", True):
        lines.append(f"Host: {values['HOST']}")
    lines += [f"{name}: {value}" for name, value in pairs]
    if "x-request-id" not in names:
        lines.append(f"X-Request-Id: {values['RID']}")
    if request.get("chunked"):
        lines.append("Transfer-Encoding: chunked")
        body = _chunked(body)
    elif "content-length" not in names and (body or request["method"] in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    if "connection" not in names:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclasses.dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(port: int, data: bytes, *, half_close: bool = False) -> bytes:
    """Send `data` (from a thread, so a server that answers before reading everything is still heard)
    and read until the server closes. Raises TimeoutError when the server neither answers nor closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT) as sock:

        def send() -> None:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the server answered and closed first

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        received = bytearray()
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except ConnectionResetError:
            pass  # closed with our bytes unread: what arrived before still counts
        except TimeoutError:
            raise TimeoutError(f"no answer and no close within {SOCKET_TIMEOUT:g} s") from None
        sender.join(SOCKET_TIMEOUT)
        return bytes(received)


def parse_answers(data: bytes, head_only: bool = False) -> tuple[list[Answer], list[int]]:
    """Final answers in order, and the statuses of interim (1xx) ones."""
    answers: list[Answer] = []
    interim: list[int] = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        status_line, *lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            interim.append(status)
            data = rest
            continue
        if head_only:
            body, data = b"", rest
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = bytearray()
            while True:
                size_line, _, rest = rest.partition(b"\r\n")
                size = int(size_line.split(b";")[0] or b"0", 16)
                if size == 0:
                    _, _, rest = rest.partition(b"\r\n")
                    break
                chunks += rest[:size]
                rest = rest[size + 2 :]
            body, data = bytes(chunks), rest
        elif "content-length" in headers:
            length = int(headers["content-length"])
            body, data = rest[:length], rest[length:]
        else:
            body, data = rest, b""
        answers.append(Answer(status, headers, body))
    return answers, interim


def wait_until_idle(deployment: Deployment, case_id: str) -> None:
    """Returns once the gateway handles no request but this one: whatever a case started (a forward the
    client abandoned) has finished, so anything it sent upstream has been sent. The request's access line
    (id `hx-idle.<case>`) closes the case's part of the gateway log."""
    headers = {"Authorization": f"Bearer {deployment.values['KEY']}", "X-Request-Id": f"hx-idle.{case_id}"}
    for _ in range(200):
        status, _, body = raw_request(deployment.gateway.url, "GET", "/metrics", headers)
        assert status == 200
        match = re.search(rb"^hokusai_requests_in_flight (\S+)$", body, re.MULTILINE)
        assert match is not None
        if float(match.group(1)) <= 1:
            return
    raise AssertionError("the gateway kept requests in flight after the case")


# ---------------------------------------------------------------------------------------------------
# Expectations


def _statuses(expected: Any) -> list[int | str]:
    return list(expected) if isinstance(expected, list) else [expected]


def check_answer(
    case: Mapping[str, Any], answers: list[Answer], interim: list[int], secrets: list[bytes]
) -> None:
    expect = case["expect"]
    for answer in answers:
        assert answer.status < 500, f"the gateway answered {answer.status}: {answer.body[:300]!r}"
        shown = answer.body + "".join(answer.headers.values()).encode("latin-1")
        assert not any(secret in shown for secret in secrets), "key material in an answer"
    outcome: int | str = answers[0].status if answers else "closed"
    assert outcome in _statuses(expect["status"]), f"answered {outcome}, expected {expect['status']}"
    if "later_statuses" in expect:
        assert [answer.status for answer in answers[1:]] == expect["later_statuses"]
    if expect.get("no_interim"):
        assert interim == [], f"interim answers {interim} before the final one"
    if not answers:
        return
    first = answers[0]
    answered_by = expect.get("answered_by") or (
        "gateway" if "error_code" in expect else "upstream" if expect["reaches_upstream"] else None
    )
    # A list of statuses names the expected one first; the others are acceptable alternatives (a parser
    # limit, a closed connection) whose answers are not the gateway's JSON.
    if answered_by == "gateway" and first.status == _statuses(expect["status"])[0]:
        assert first.headers.get("x-hokusai-origin") == "gateway", first.headers
        payload = first.json()
        assert payload["error_code"] == expect["error_code"], payload
        assert "Hokusai Registry gateway" in payload["message"]
    elif answered_by == "upstream" and case["request"].get("method") != "HEAD":
        assert "x-hokusai-origin" not in first.headers
        assert first.json().get("canary") is True, first.body[:300]
    elif answered_by == "parser":  # the HTTP parser's plain-text refusal, before the gateway's code
        assert "x-hokusai-origin" not in first.headers
    for name, value in (expect.get("answer_headers") or {}).items():
        assert first.headers.get(name) == value, (name, first.headers)
    for name in expect.get("answer_absent") or []:
        assert name not in first.headers, (name, first.headers)
    if expect["reaches_upstream"]:
        assert "x-canary-hop" not in first.headers


def check_arrival(arrival: Arrival, case: Mapping[str, Any], deployment: Deployment, canary: Canary) -> None:
    """What every forwarded request must look like, then what this case expects of it."""
    names = [name for name, _ in arrival.headers]
    for name in CREDENTIAL_HEADERS + NEVER_FORWARDED:
        assert name not in names, f"{name} reached the upstream: {arrival.values(name)}"
    assert arrival.values("host") == [canary.authority]
    upstream = case["expect"].get("upstream") or {}
    key_name = upstream.get("key", "KEY")
    assert arrival.values("x-hokusai-key-id") == [deployment.values[key_name + "_ID"]]
    marks = arrival.values("x-hokusai-gateway")
    assert len(marks) == 1 and re.fullmatch(r"[0-9a-f]{24}", marks[0]), marks
    assert {name for name in names if name.startswith("x-hokusai-")} <= {
        "x-hokusai-key-id",
        "x-hokusai-gateway",
        "x-hokusai-assertion",
    }
    # Exactly the gateway's own assertion (permissions on): one, made for this very request.
    (assertion,) = arrival.values("x-hokusai-assertion")
    path, _, query = arrival.target.partition("?")
    verify(assertion_secret(), assertion, arrival.method, path, query, now=time.time())
    for single in ("x-forwarded-for", "x-forwarded-proto", "x-request-id"):
        assert len(arrival.values(single)) == 1, (single, arrival.values(single))
    assert len(arrival.values("x-forwarded-host")) <= 1
    assert len(arrival.values("content-length")) + len(arrival.values("transfer-encoding")) <= 1
    text = arrival.text()
    assert FORGED not in text, f"a forged value reached the upstream: {text[:2000]!r}"
    assert not any(secret in text for secret in deployment.secrets), "key material reached the upstream"
    if not arrival.complete:
        return
    values = deployment.values
    request = case["request"]
    method = upstream.get("method") or request.get("method")
    if method:
        assert arrival.method == method
    if "target" in upstream:
        assert arrival.target == fill(upstream["target"], values)
    for name, expected in (upstream.get("headers") or {}).items():
        wanted = expected if isinstance(expected, list) else [expected]
        assert arrival.values(name) == [fill(str(value), values) for value in wanted], name
    for name, pattern in (upstream.get("header_patterns") or {}).items():
        assert len(arrival.values(name)) == 1 and re.fullmatch(pattern, arrival.values(name)[0]), name
    for name in upstream.get("absent") or []:
        assert name not in names, f"{name} reached the upstream: {arrival.values(name)}"
    if "body_length" in upstream:
        assert arrival.body_length == upstream["body_length"]
    for text_part in upstream.get("contains") or []:
        assert fill(text_part, values).encode() in text, text_part
    for text_part in upstream.get("not_contains") or []:
        assert fill(text_part, values).encode() not in text, text_part


def access_line(gateway: GatewayProcess, request_id: str) -> bytes:
    """The gateway's access-log line for a request (lines are flushed every 0.2 s), as bytes."""
    marker = f"access: {request_id} ".encode()
    for _ in range(100):
        found = [line for line in gateway.log_path.read_bytes().split(b"\n") if marker in line]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no access line for {request_id}")


def run_case(case: Mapping[str, Any], deployment: Deployment, canary: Canary) -> None:
    request_id = f"hx.{case['id']}"
    values = {**deployment.values, "RID": request_id}
    data = render(case, values)
    canary.label = case["id"]
    try:
        received = exchange(
            deployment.gateway.port, data, half_close=case["request"].get("half_close", False)
        )
        wait_until_idle(deployment, case["id"])
    finally:
        canary.label = "(between cases)"
    answers, interim = parse_answers(received, head_only=case["request"].get("method") == "HEAD")
    expect = case["expect"]
    arrivals = canary.for_case(request_id, case["id"], KNOWN_IDS)
    if not case["valid_key"]:
        assert arrivals == [], "a request without a valid key reached the upstream"
    for arrival in arrivals:
        check_arrival(arrival, case, deployment, canary)
    complete = [arrival for arrival in arrivals if arrival.complete]
    if expect["reaches_upstream"]:
        count = (expect.get("upstream") or {}).get("count", 1)
        assert len(complete) == count, f"{len(complete)} requests reached the upstream, expected {count}"
    else:
        assert complete == [], f"reached the upstream: {[(a.method, a.target) for a in complete]}"
        if not expect.get("partial_upstream"):
            assert arrivals == [], "part of the request reached the upstream"
    check_answer(case, answers, interim, deployment.secrets)
    for arrival in arrivals:  # judged: the bodies are not needed any more
        arrival.body = bytearray()
    if expect.get("access_log") == "intact":  # one physical line, ending in its key field, no controls
        line = access_line(deployment.gateway, request_id)
        assert re.search(rb" key=\S+$", line) and not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", line), line


KNOWN_IDS = {f"hx.{case['id']}" for case in CASES}
RAN: set[str] = set()  # cases run in this session


def _param(case: dict[str, Any]) -> Any:
    marks = (
        [pytest.mark.xfail(strict=True, reason="BUG: " + BUGS[case["xfail"]])] if case.get("xfail") else []
    )
    return pytest.param(case, id=case["id"], marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_hostile_case(case: dict[str, Any], deployments: dict[str, Deployment], canary: Canary) -> None:
    RAN.add(case["id"])
    run_case(case, deployments[case.get("gateway", "default")], canary)


# ---------------------------------------------------------------------------------------------------
# The catalogue as a whole


def outcome_label(case: Mapping[str, Any]) -> str:
    expect = case["expect"]
    statuses = _statuses(expect["status"])
    if case.get("xfail"):
        return "known bug (xfail)"
    if expect["reaches_upstream"]:
        return "forwarded, sanitized"
    if expect.get("partial_upstream"):
        return "refused by the HTTP parser mid-body (head may be forwarded, never the request)"
    if "error_code" in expect:
        return f"{statuses[0]} {expect['error_code']} from the gateway"
    if expect.get("answered_by") == "parser" or "closed" in statuses:
        return "refused by the HTTP parser / connection closed"
    if expect.get("answered_by") == "redirect":
        return "redirected by the gateway"
    return "refused " + "/".join(map(str, statuses))


def summary(cases: list[dict[str, Any]] | None = None) -> dict[str, Counter[str]]:
    """Case count by class and expected outcome."""
    by_class: dict[str, Counter[str]] = {name: Counter() for name in CLASSES}
    for case in cases if cases is not None else CASES:
        by_class[case["class"]][outcome_label(case)] += 1
    return by_class


def summary_table(cases: list[dict[str, Any]] | None = None) -> str:
    cases = cases if cases is not None else CASES
    lines = [f"Hostile-input catalogue: {len(cases)} cases"]
    for name, outcomes in summary(cases).items():
        lines.append(f"  {name}: {sum(outcomes.values())}")
        lines += [f"    {count:4d}  {label}" for label, count in sorted(outcomes.items())]
    bugs = Counter(case["xfail"] for case in cases if case.get("xfail"))
    lines.append(f"  known bugs: {len(bugs)} ({sum(bugs.values())} cases)")
    lines += [f"    {count:4d}  {bug}" for bug, count in sorted(bugs.items())]
    return "\n".join(lines)


def test_catalogue_covers_the_spec() -> None:
    ids = [case["id"] for case in CASES]
    assert len(CASES) >= 200
    assert len(set(ids)) == len(ids), [i for i, n in Counter(ids).items() if n > 1]
    for case in CASES:
        assert case["class"] in CLASSES, case["id"]
        assert isinstance(case["valid_key"], bool), case["id"]
        assert isinstance(case["expect"]["reaches_upstream"], bool), case["id"]
        assert case.get("gateway", "default") in GATEWAY_ENV, case["id"]
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", case["id"]), case["id"]
        if case["expect"]["reaches_upstream"]:
            assert case["valid_key"], f"{case['id']}: only a request with a valid key may reach MLflow"
        if case["expect"].get("partial_upstream"):
            assert case["valid_key"], case["id"]
        if case.get("xfail"):
            assert case["xfail"] in BUGS, case["id"]
    assert {case.get("xfail") for case in CASES} - {None} == set(BUGS), "a bug no case shows"
    for name, topics in REQUIRED_TOPICS.items():
        covered = {case["topic"] for case in CASES if case["class"] == name}
        assert topics <= covered, f"{name}: nothing covers {sorted(topics - covered)}"
    print("\n" + summary_table())


def _may_reach_upstream(case: Mapping[str, Any]) -> bool:
    expect = case["expect"]
    return bool(case["valid_key"] and (expect["reaches_upstream"] or expect.get("partial_upstream")))


CRASH = re.compile(r"Traceback|Exception in ASGI application|ASGI callable returned without")


def log_by_case(name: str, gateway: GatewayProcess) -> dict[str, str]:
    """The gateway's log split by case: everything up to a case's `hx-idle.<case>` access line is its own
    (the lines after the last case are "(after)")."""
    marker = re.compile(r"access: hx-idle\.(\S+) ")
    ran = [case["id"] for case in CASES if case["id"] in RAN and case.get("gateway", "default") == name]
    for _ in range(100):  # lines are flushed every 0.2 s
        if not ran or f"access: hx-idle.{ran[-1]} " in gateway.log():
            break
        time.sleep(0.1)
    parts: dict[str, str] = {}
    pending: list[str] = []
    for line in gateway.log().splitlines():
        pending.append(line)
        found = marker.search(line)
        if found:
            parts[found.group(1)] = parts.get(found.group(1), "") + "\n".join(pending) + "\n"
            pending = []
    parts["(after)"] = "\n".join(pending)
    return parts


def test_nothing_else_reached_the_canary(deployments: dict[str, Deployment], canary: Canary) -> None:
    """After the cases: every arrival at the canary belongs to a case allowed to reach MLflow (including any
    that arrived after its case was judged; known bugs are judged by their own case), the canary could
    parse everything, and no gateway logged an unhandled exception outside a known bug's case."""
    if not RAN:
        pytest.skip("checks what the cases left behind: run it after test_hostile_case")
    by_id = {case["id"]: case for case in CASES}
    stray = []
    for arrival in canary.arrivals:
        case: dict[str, Any] | None
        if arrival.request_id in KNOWN_IDS:  # its own case, whenever it arrived (a cut-off head may lag)
            case = by_id[arrival.request_id[len("hx.") :]]
        else:  # an id the gateway replaced: the case that was running
            case = by_id.get(arrival.label)
        if case is None or not (case.get("xfail") or _may_reach_upstream(case)):
            stray.append((arrival.label, arrival.request_id, arrival.method, arrival.target[:200]))
    assert stray == []
    assert canary.unparsable == []
    for deployment in deployments.values():
        crashed = {
            case_id
            for case_id, text in log_by_case(deployment.name, deployment.gateway).items()
            if CRASH.search(text)
        }
        assert {case_id for case_id in crashed if not by_id.get(case_id, {}).get("xfail")} == set()


if __name__ == "__main__":
    print(summary_table())
