"""Running the gateway under uvicorn (httptools parser, uvloop) on a socket bound before anything starts.

uvicorn, not granian: granian bounds heads itself, but in this app's measurements it needed private
APIs to serve a socket bound beforehand, answered an oversized head with an empty 431 and let raw
non-ASCII targets through to the app; docs/benchmarks.md ("Server choice") has the figures. The head
bounds are the small protocol subclass of `run/protocol.py`."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import signal
import socket
from collections.abc import Iterator

import uvicorn

from hokusai_registry.gateway.app import Gateway
from hokusai_registry.run.protocol import BoundedHttpToolsProtocol, HeadLimits
from hokusai_registry.settings import ConfigError, Settings


def raise_file_limit() -> None:
    """Every connection is a file descriptor: take the whole hard limit, not the soft default (often
    1024, or 256) that a few hundred slow clients would exhaust."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind before anything else starts, so a busy port is a clear error and port 0 is resolved."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise ConfigError(f"{host}:{port} {reason}; choose another with --port / HOKUSAI_PORT") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class GatewayServer(uvicorn.Server):
    """uvicorn, shutting down gracefully on SIGINT/SIGTERM and then returning normally.

    Stock uvicorn re-raises the signal after shutdown, which would end `serve` before it stops
    MLflow and turn a clean SIGTERM into a non-zero exit."""

    def __init__(self, gateway: Gateway, settings: Settings) -> None:
        super().__init__(
            uvicorn.Config(
                gateway,
                loop="uvloop",
                http=BoundedHttpToolsProtocol.bounded(
                    HeadLimits(settings.max_header_kb * 1024, settings.header_timeout)
                ),
                lifespan="on",
                # The gateway finds the client behind its trusted proxies itself (policy/forwarding.py).
                proxy_headers=False,
                server_header=False,
                date_header=False,
                access_log=False,
                log_config=None,
                timeout_keep_alive=settings.keepalive_timeout,
                timeout_graceful_shutdown=30,
            )
        )

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
