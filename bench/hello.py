"""The bare ASGI hello world the gateway's small-request figure is compared with: what uvicorn, uvloop and
httptools cost one worker per request with no application work, on this machine in the same run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

# The ~120-byte JSON a fast MLflow answers to experiments/get (the nginx stub returns the same).
STUB_BODY = (
    '{"experiment": {"experiment_id": "1", "name": "Default", "artifact_location": "mlflow-artifacts:/1", '
    '"lifecycle_stage": "active"}}'
)
BODY = STUB_BODY.encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def lifespan(receive: Receive, send: Send) -> None:
    """Lifespan events acknowledged until the shutdown, acknowledged too."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Every HTTP request answered 200 with the stub's ~120-byte JSON; lifespan events acknowledged."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
