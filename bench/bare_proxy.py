"""The floor of the gateway's design, measured beside it: a proxy with no policy at all.

The same server as the gateway (uvicorn, uvloop, the head-bounded httptools protocol with its gathered
writes: `run/protocol.py`) and the gateway's own upstream pool (`transport/upstream.py`), forwarding
every request to one upstream and answering with what it said. No key, no checks, no assertion, no
header rules, no access log, no metrics. What the gateway costs beyond this is its policy; what this
costs beyond the hello world (bench/hello.py) is being a proxy on this stack at all.

`python -m bench.bare_proxy --port P --upstream URL` serves it until SIGTERM.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn

from bench.hello import Receive, Send, lifespan
from hokusai_registry.run.protocol import BoundedHttpToolsProtocol, HeadLimits
from hokusai_registry.settings import Settings
from hokusai_registry.transport.forward import SMALL_ANSWER_BYTES
from hokusai_registry.transport.request import UpstreamRequest
from hokusai_registry.transport.upstream import UpstreamPool


def _default(name: str) -> Any:
    return Settings.model_fields[name].default


def proxy(pool: UpstreamPool) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            pool.close()
            return
        query = scope["query_string"]
        target = scope["raw_path"] + (b"?" + query if query else b"")
        request = UpstreamRequest(scope["method"], target, (), None, False, True, 30.0, False)
        response = await pool.send(request)
        try:
            body = await response.small_body(SMALL_ANSWER_BYTES)
            headers = [(name.lower(), value) for name, value in response.headers]
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            await send({"type": "http.response.body", "body": body or b""})
        finally:
            response.release()

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_proxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://host:port of what it forwards to")
    args = parser.parse_args()
    pool = UpstreamPool.for_url(args.upstream, limit=64, connect_timeout=5, pool_timeout=15, headers=[])
    uvicorn.run(
        proxy(pool),
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http=BoundedHttpToolsProtocol.bounded(
            HeadLimits(_default("max_header_kb") * 1024, _default("header_timeout"))
        ),
        lifespan="on",
        proxy_headers=False,
        server_header=False,
        date_header=False,
        access_log=False,
        timeout_keep_alive=_default("keepalive_timeout"),
        log_level="warning",
    )


if __name__ == "__main__":
    main()
