"""The real gateway in this process: `build_gateway` on a real SQLite key store in front of a stub
upstream, wrapped and started exactly as uvicorn runs it (its configured app, lifespan), and
driven through an httpx client whose transport performs the ASGI exchange without a socket.

httpx's own ASGITransport normalises the URL (`/a/../b` becomes `/b`) and builds `path` from it; this
transport takes the request target as given (the `target` extension, else the URL) and derives `path`,
`raw_path` and `query_string` the way uvicorn's httptools protocol does, so encoded and climbing paths
reach the gateway as a server would hand them over."""

from __future__ import annotations

import asyncio
import http.cookiejar
import urllib.parse
from pathlib import Path
from typing import Any

import httptools
import httpx
from uvicorn.lifespan.on import LifespanOn

from hokusai_registry.core.asgi import Scope
from hokusai_registry.gateway.app import Gateway
from hokusai_registry.gateway.assembly import build_gateway, open_key_store
from hokusai_registry.run.server import GatewayServer
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import ADMIN_SCOPES, DEFAULT_SCOPES
from tests.support.loop import LoopThread

URL = "http://gateway.test"
CLIENT = ("127.0.0.1", 50123)  # a caller on loopback, as the live tests' clients are


async def exchange(
    app: Any, method: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """One HTTP exchange with an ASGI app, the scope built as uvicorn's httptools protocol builds it."""
    parsed = httptools.parse_url(target)
    path = parsed.path.decode("ascii")
    if "%" in path:
        path = urllib.parse.unquote(path)
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 80),
        "client": CLIENT,
        "scheme": "http",
        "root_path": "",
        "headers": headers,
        "state": {},
        "method": method,
        "path": path,
        "raw_path": parsed.path,
        "query_string": parsed.query or b"",
    }
    sent = False
    finished = asyncio.Event()
    status = 0
    response_headers: list[tuple[bytes, bytes]] = []
    parts: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:  # a client that stays connected until the answer is complete
            await finished.wait()
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, response_headers
        if message["type"] == "http.response.start":
            status = message["status"]
            response_headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            if method != "HEAD":
                parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)
    assert finished.is_set(), "the gateway returned without finishing its answer"
    return status, response_headers, b"".join(parts)


class _InProcessTransport(httpx.BaseTransport):
    def __init__(self, app: Any, loop: LoopThread) -> None:
        self._app = app
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = request.extensions.get("target") or request.url.raw_path
        headers = [(name.lower(), value) for name, value in request.headers.raw]
        status, answer_headers, body = self._loop.run(
            exchange(self._app, request.method, target, headers, request.read())
        )
        return httpx.Response(status, headers=answer_headers, content=body, request=request)


class InProcessGateway:
    def __init__(
        self, loop: LoopThread, upstream_url: str, data_dir: Path, events: Any = None, **settings: Any
    ) -> None:
        # Many tests send bad keys on purpose: the failure throttle has its own tests.
        self.settings = Settings.load(
            data_dir=data_dir, mlflow_server_url=upstream_url, **{"auth_failure_limit": 0, **settings}
        )
        self.data_dir = data_dir
        self.url = URL
        self._loop = loop
        self.store = open_key_store(self.settings)
        self._events = events  # the registry events' sink (None: nobody listens)
        self.gateway, self.app, self._lifespan = loop.run(self._start(upstream_url))
        # No cookie jar: tests send cookies by hand, as a browser would, and see every Set-Cookie.
        no_cookies = http.cookiejar.CookieJar(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.client = httpx.Client(
            transport=_InProcessTransport(self.app, loop), base_url=URL, cookies=no_cookies, timeout=30
        )

    async def _start(self, upstream_url: str) -> tuple[Gateway, Any, LifespanOn]:
        gateway = build_gateway(self.settings, self.store, upstream_url, self._events)
        config = GatewayServer(gateway, self.settings).config
        config.load()  # the app uvicorn serves, as it configures it
        lifespan = LifespanOn(config)
        await lifespan.startup()
        assert not lifespan.startup_failed
        return gateway, config.loaded_app, lifespan

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(method, path, **kwargs)

    def raw(
        self, method: str, target: str | bytes, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        """The target exactly as given (no client normalises it), like `tests.helpers.raw_request`;
        header names lower-cased."""
        raw_target = target.encode("latin-1") if isinstance(target, str) else target
        response = self.client.request(
            method, "/", headers=headers, content=body, extensions={"target": raw_target}
        )
        return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.content

    def create_key(self, name: str, *, admin: bool = False, **kwargs: Any) -> str:
        return self.create_key_with_id(name, admin=admin, **kwargs)[1]

    def create_key_with_id(self, name: str, *, admin: bool = False, **kwargs: Any) -> tuple[str, str]:
        kwargs.setdefault("scopes", ADMIN_SCOPES if admin else DEFAULT_SCOPES)
        record, key = self.store.create(name, environment="live", **kwargs)
        return record.key_id, key

    def close(self) -> None:
        self.client.close()
        self._loop.run(self._lifespan.shutdown())
        self.store.close()
