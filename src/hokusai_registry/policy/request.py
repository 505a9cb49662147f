"""One request, parsed once (pure): its route and the headers the gateway's checks need, found in a single
pass over the header list, which also counts the headers."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hokusai_registry.core.asgi import Scope
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.headers import LOOP_MARK, MAX_HEADER_COUNT
from hokusai_registry.policy.paths import Redirect, Target, resolve
from hokusai_registry.policy.routes import OwnRoute, own_route

_WANTED = frozenset(
    {b"x-request-id", LOOP_MARK, b"origin", b"referer", b"host", b"authorization", b"x-api-key", b"cookie"}
)


# Routes of this many recent paths are kept: the lookup (decoding, escape checks, the route table's
# patterns) depends on the path alone, and clients call the same few paths over and over. Longer paths
# (artifact paths deep in a run) are looked up every time, so the kept paths stay within ~1 MiB.
KEPT_ROUTES = 1024
KEPT_PATH_BYTES = 1024


@dataclass(slots=True)
class Request:
    method: str
    path: str  # as the server decoded it
    query: bytes
    # The first value of each header in `_WANTED`, by name.
    found: dict[bytes, bytes]
    # The refusal of the head as a whole (too many headers, two Hosts, a transfer coding other than
    # chunked), or None. Their size was bounded while they were read (run/protocol.py).
    head_refusal: Refusal | None
    # The gateway's own route, or None for a path meant for MLflow.
    own: OwnRoute | None
    # For MLflow paths: what the path resolves to, or why it cannot be forwarded.
    target: Target | Redirect | Refusal | None
    # Set by the gateway for writes authorized by a browser session cookie (their origin is checked).
    via_session: bool = False

    def header(self, name: bytes) -> bytes | None:
        return self.found.get(name)

    @property
    def sends_key(self) -> bool:
        """A key in the headers, which always wins over a session cookie."""
        return b"authorization" in self.found or b"x-api-key" in self.found


def parse(scope: Scope) -> Request:
    found: dict[bytes, bytes] = {}
    hosts = 0
    refusal: Refusal | None = None
    headers = scope["headers"]
    for name, value in headers:
        if name in _WANTED:
            found.setdefault(name, value)
            if name == b"host":
                hosts += 1
        elif name == b"transfer-encoding" and refusal is None and value.strip().lower() != b"chunked":
            refusal = _refused_head(Reason.BAD_HEADERS, "its Transfer-Encoding is not plain 'chunked'")
    # The same order of findings as a reader of the head would meet them: count, coding, Host.
    if len(headers) > MAX_HEADER_COUNT:
        refusal = _refused_head(Reason.HEADERS_TOO_LARGE, f"it has more than {MAX_HEADER_COUNT} headers")
    elif refusal is None and hosts > 1:
        refusal = _refused_head(Reason.BAD_HEADERS, "it has more than one Host header")
    path = scope["path"]
    raw_path = scope.get("raw_path") or path.encode()
    target: Target | Redirect | Refusal | None = None
    resolved: Target | Redirect | Refusal | None
    try:
        own, resolved = (_kept_route if len(raw_path) <= KEPT_PATH_BYTES else _route)(path, raw_path)
    except Refusal as bad_path:
        own, resolved = None, bad_path
    if own is None and refusal is None:
        target = resolved or _not_mlflow(path)
    return Request(scope["method"], path, scope["query_string"], found, refusal, own, target)


def _route(path: str, raw_path: bytes) -> tuple[OwnRoute | None, Target | Redirect | None]:
    """The gateway's own route, or else what the raw path resolves to; a bad path raises its Refusal
    (which is never kept: each request gets its own)."""
    own = own_route(path)
    return (own, None) if own is not None else (None, resolve(raw_path))


_kept_route = functools.lru_cache(maxsize=KEPT_ROUTES)(_route)


def _not_mlflow(path: str) -> Refusal:
    return Refusal(
        Reason.NOT_AN_MLFLOW_PATH,
        f"{path} is not an MLflow path. Tracking URIs end in /mlflow, /api/mlflow or the bare host.",
    )


def _refused_head(reason: Reason, problem: str) -> Refusal:
    return Refusal(reason, f" refused the request: {problem}.")
