"""The streaming forwarder: one shared aiohttp pool to MLflow, bodies streamed both ways.

Memory is independent of body size: request chunks go from the ASGI server to the upstream socket
as they arrive, response chunks the other way, each side waiting for the other (backpressure).
Upstream failures become MLflow-shaped errors that name the upstream and what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from hokusai_registry.asgi import Receive, Scope, Send
from hokusai_registry.errors import GatewayError, send_error
from hokusai_registry.proxy.headers import client_response_headers, header_value, upstream_request_headers
from hokusai_registry.proxy.paths import Target, upstream_path
from hokusai_registry.proxy.routes import Family
from hokusai_registry.settings import redact_url

log = logging.getLogger(__name__)

CHECK_HINT = "Check that MLflow is running and that MLFLOW_SERVER_URL is its internal address."


class _ClientGone:
    """Set when the client disconnects while its request body is being forwarded."""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False


async def _request_body(receive: Receive, client: _ClientGone) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            client.gone = True
            raise ConnectionResetError("client disconnected during upload")
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _has_body(scope: Scope) -> bool:
    headers = scope["headers"]
    length = header_value(headers, b"content-length")
    if length is not None:
        return length.strip() != b"0"
    return header_value(headers, b"transfer-encoding") is not None


class Forwarder:
    def __init__(
        self,
        upstream_url: str,
        *,
        api_prefix: str,
        connect_timeout: float,
        read_timeout: float,
        transfer_idle_timeout: float,
        pool_size: int,
        mark: str,
    ) -> None:
        parts = urlsplit(upstream_url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        self._origin = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        self._base = self._origin + parts.path.rstrip("/")
        self._auth = (
            aiohttp.BasicAuth(parts.username, parts.password or "") if parts.username is not None else None
        )
        self.upstream_display = redact_url(upstream_url)
        self._api_prefix = api_prefix
        self._pool_size = pool_size
        self._mark = mark
        # `connect` covers waiting for a pooled connection too; `sock_read` is the idle time between
        # reads and starts only after the request body was sent, so long uploads are not cut off.
        api = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout * 3, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._timeouts = {
            Family.REST: api,
            Family.UI: api,
            Family.TRANSFER: aiohttp.ClientTimeout(
                total=None,
                connect=connect_timeout * 3,
                sock_connect=connect_timeout,
                sock_read=transfer_idle_timeout or None,
            ),
        }
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._pool_size, limit_per_host=self._pool_size),
            # Never keep cookies: one user's Set-Cookie must not be replayed for the next.
            cookie_jar=aiohttp.DummyCookieJar(),
            # Bytes pass through as MLflow sent them, with their Content-Encoding.
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            max_line_size=65536,
            max_field_size=65536,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Forwarder.start() was not awaited")
        return self._session

    def url_for(self, target: Target, query: bytes) -> str:
        url = self._base + upstream_path(target.path, self._api_prefix)
        return url + "?" + query.decode("latin-1") if query else url

    async def forward(self, scope: Scope, receive: Receive, send: Send, target: Target, key_id: str) -> int:
        """Forward one request and stream the answer back; returns the status sent to the client."""
        client_ip = scope["client"][0] if scope.get("client") else ""
        headers = upstream_request_headers(
            scope["headers"], client_ip=client_ip, scheme=scope["scheme"], key_id=key_id, mark=self._mark
        )
        client = _ClientGone()
        data = _request_body(receive, client) if _has_body(scope) else None
        timeout = self._timeouts[target.family]
        try:
            response = await self.session.request(
                scope["method"],
                URL(self.url_for(target, scope["query_string"]), encoded=True),
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=timeout,
                auth=self._auth,
            )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if client.gone:
                return 499
            error = self._upstream_error(exc, target, timeout)
            log.warning("upstream %s %s failed: %s", scope["method"], target.path, error.message)
            await send_error(send, error)
            return error.http_status
        async with response:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": client_response_headers(
                        response.raw_headers, upstream_base=self._base, mount=target.mount
                    ),
                }
            )
            if target.family is Family.TRANSFER:
                await self._stream_until_disconnect(response, receive, send, target)
            else:
                await self._stream(response, send, target)
        return response.status

    async def _stream(self, response: aiohttp.ClientResponse, send: Send, target: Target) -> None:
        try:
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except (TimeoutError, aiohttp.ClientError) as exc:
            # Headers are out: the only honest signal left is to cut the connection, which
            # returning without the final body message does.
            log.warning("upstream broke off %s mid-response: %r", target.path, exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream_until_disconnect(
        self, response: aiohttp.ClientResponse, receive: Receive, send: Send, target: Target
    ) -> None:
        """Large downloads stop, and release their upstream connection, when the client leaves."""
        streaming = asyncio.ensure_future(self._stream(response, send, target))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        client_left = False
        try:
            done, _ = await asyncio.wait({streaming, watcher}, return_when=asyncio.FIRST_COMPLETED)
            client_left = streaming not in done
        finally:
            for task in (streaming, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if client_left:
            log.info("client left during %s; upstream connection closed", target.path)
            response.close()

    def _upstream_error(
        self, exc: BaseException, target: Target, timeout: aiohttp.ClientTimeout
    ) -> GatewayError:
        upstream = self.upstream_display
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return GatewayError(
                "DEADLINE_EXCEEDED",
                f"Hokusai Registry gateway timed out connecting to MLflow at {upstream} "
                f"(after {timeout.sock_connect:g} s). {CHECK_HINT}",
            )
        if isinstance(exc, asyncio.TimeoutError):
            return GatewayError(
                "DEADLINE_EXCEEDED",
                f"Hokusai Registry gateway: MLflow at {upstream} did not answer {target.path} within "
                f"{timeout.sock_read:g} s (waiting for the response). MLflow may be overloaded; "
                "the timeout is HOKUSAI_UPSTREAM_READ_TIMEOUT.",
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return GatewayError(
                "TEMPORARILY_UNAVAILABLE",
                f"Hokusai Registry gateway could not connect to MLflow at {upstream} "
                f"({exc.os_error.strerror or type(exc.os_error).__name__}). {CHECK_HINT}",
                status=502,
            )
        return GatewayError(
            "TEMPORARILY_UNAVAILABLE",
            f"Hokusai Registry gateway lost the connection to MLflow at {upstream} "
            f"({type(exc).__name__}). {CHECK_HINT}",
            status=502,
        )
