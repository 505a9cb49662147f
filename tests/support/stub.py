"""A stand-in MLflow on loopback: a real HTTP server (the gateway's upstream client is a socket client)
that records exactly what reached it and answers canned JSON.

By default every request gets `{"ok": true, "target": <raw target>}` with a hop-by-hop header and a
cookie the gateway must filter; `answers` maps a path to a canned (status, content type, body), and
`handler` replaces the answer altogether (e.g. to send the request back into the gateway)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from tests.support.loop import LoopThread

Canned = tuple[int, str, bytes]
Handler = Callable[["Arrival", web.Request], Awaitable[web.StreamResponse]]

# What a healthy MLflow answers to the gateway's health probes (ops/health.py).
MLFLOW_HEALTH_ANSWERS: dict[str, Canned] = {
    "/health": (200, "text/plain", b"OK"),
    "/api/2.0/mlflow/experiments/search": (200, "application/json", b'{"experiments": []}'),
    "/api/2.0/mlflow/registered-models/search": (200, "application/json", b"{}"),
    "/api/2.0/mlflow-artifacts/artifacts": (200, "application/json", b"{}"),
    # The enforcement probe (sent unsigned): an MLflow with permissions on refuses it.
    "/api/2.0/mlflow/experiments/get": (
        401,
        "application/json",
        b'{"error_code": "UNAUTHENTICATED", "message": "MLflow accepts only requests a Hokusai Registry '
        b'gateway authenticated: the request carries no gateway assertion."}',
    ),
}


@dataclasses.dataclass
class Arrival:
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


class StubUpstream:
    def __init__(self, answers: Mapping[str, Canned] | None = None, handler: Handler | None = None) -> None:
        self.requests: list[Arrival] = []
        self.answers = dict(answers or {})
        self.handler = handler
        self.port = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(handler_args={"max_line_size": 131072, "max_field_size": 131072})
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def header(self, index: int, name: str) -> list[str]:
        return self.requests[index].header(name)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        arrival = Arrival(
            request.method,
            request.raw_path,
            [(k.decode(), v.decode()) for k, v in request.raw_headers],
            await request.read(),
        )
        self.requests.append(arrival)
        if self.handler is not None:
            return await self.handler(arrival, request)
        canned = self.answers.get(request.path)
        if canned is not None:
            status, content_type, body = canned
            return web.Response(status=status, body=body, headers={"Content-Type": content_type})
        response = web.Response(
            body=json.dumps({"ok": True, "target": request.raw_path}).encode(),
            content_type="application/json",
        )
        response.headers["Connection"] = "keep-alive, X-Upstream-Hop"
        response.headers["X-Upstream-Hop"] = "must not reach the client"
        response.headers["Keep-Alive"] = "timeout=5"
        response.set_cookie("upstream_session", "secret-cookie")
        return response


class ThreadedStub:
    """The stub on a loop thread of its own, for gateway processes to forward to."""

    def __init__(self, answers: Mapping[str, Canned] | None = None, handler: Handler | None = None) -> None:
        self.stub = StubUpstream(answers, handler)
        self._thread = LoopThread()
        self.loop = self._thread.loop  # where `handler` runs
        self._thread.run(self.stub.start())
        self.port, self.url = self.stub.port, self.stub.url
        self.requests = self.stub.requests  # appended to by the stub as requests arrive

    def header(self, index: int, name: str) -> list[str]:
        return self.stub.header(index, name)

    def stop(self) -> None:
        self._thread.run(self.stub.stop())
        self._thread.stop()
