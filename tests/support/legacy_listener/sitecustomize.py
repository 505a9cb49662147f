"""On the PYTHONPATH of an `mlflow server`, uvicorn binds its multi-worker listener the way uvicorn <= 0.54
did: without IPPROTO_TCP (Kludex/uvicorn#3149). Accepted sockets inherit protocol 0, so the asyncio loop
never sets TCP_NODELAY on them: the MLflow a gateway meets when someone else started it on such an
environment. Python runs this module at start-up in every process of that server."""

import socket

import uvicorn.config

_bind_socket = uvicorn.config.Config.bind_socket


def _legacy_bind_socket(self: uvicorn.config.Config) -> socket.socket:
    bound = _bind_socket(self)
    # The same listening socket, described as uvicorn 0.54's `socket.socket(family=family)` made it.
    legacy = socket.socket(bound.family, bound.type, 0, fileno=bound.detach())
    legacy.set_inheritable(True)
    return legacy


uvicorn.config.Config.bind_socket = _legacy_bind_socket  # type: ignore[method-assign]
