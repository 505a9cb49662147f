"""The streaming forwarder: request and response bodies flow through, MLflow's answer is relayed,
and upstream failures become MLflow-shaped errors that name the upstream and what to check.

Memory is independent of body size: request chunks go from the ASGI server to the upstream socket
as they arrive and response chunks the other way, each side waiting for the other (backpressure).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import unquote, urlsplit

from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.net import redact_url
from hokusai_registry.core.record import RequestRecord, counted
from hokusai_registry.core.redaction import redact_headers
from hokusai_registry.core.refusals import Reason, Refusal, send_body, send_refusal
from hokusai_registry.policy.assertions import (
    ADMIN_USER,
    ASSERTION_HEADER,
    ASSERTION_REFUSAL_MARK,
    EMPTY_BODY,
    Signer,
    body_digest,
)
from hokusai_registry.policy.headers import (
    LOOP_MARK,
    client_response_headers,
    header_value,
    upstream_request_headers,
)
from hokusai_registry.policy.paths import Target, upstream_path
from hokusai_registry.policy.permissions import MLFLOW_DENIAL, denial_message
from hokusai_registry.policy.routes import Family
from hokusai_registry.transport.nonces import new_nonce
from hokusai_registry.transport.request import Header, UpstreamRequest
from hokusai_registry.transport.upstream import (
    ConnectFailed,
    ConnectTimeout,
    ReadTimeout,
    UpstreamError,
    UpstreamPool,
    UpstreamResponse,
)

log = logging.getLogger(__name__)

CHECK_HINT = "Check that MLflow is running and that MLFLOW_SERVER_URL is its internal address."
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})
PROBE_LIMIT = 1 << 20
# Answers declared this long or shorter are read whole before their head goes to the client.
SMALL_ANSWER_BYTES = 64 << 10


def _error_kind(exc: UpstreamError) -> str:
    if isinstance(exc, ConnectFailed):
        return "refused"
    if isinstance(exc, ConnectTimeout | ReadTimeout):
        return "timeout"
    return "reset"


class ClientGone(Exception):
    """The client disconnected while its request body was being forwarded."""


class ClientIdle(Exception):
    """The client stopped sending a streamed request body (an artifact upload)."""


async def _request_body(
    receive: Receive, record: RequestRecord, idle_timeout: float | None
) -> AsyncIterator[bytes]:
    """The client's body as it arrives; capped bodies were read whole before (`transport/bodies.py`),
    streamed ones (artifact uploads) time out after `idle_timeout` seconds of silence."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                message = await receive()
        except TimeoutError:
            raise ClientIdle from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        body = message.get("body", b"")
        if body:
            record.bytes_in += len(body)
            yield body
        if not message.get("more_body", False):
            return


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


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
        assertion_secret: bytes | None = None,
    ) -> None:
        parts = urlsplit(upstream_url)
        # Everything every request to MLflow carries besides its own headers: Host (the pool's) and,
        # for an upstream MLflow with its own basic-auth, its credentials.
        credentials: list[Header] = []
        if parts.username is not None:
            login = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            credentials.append((b"authorization", b"Basic " + base64.b64encode(login)))
        self.pool = UpstreamPool.for_url(
            upstream_url,
            limit=pool_size,
            connect_timeout=connect_timeout,
            pool_timeout=connect_timeout * 3,
            headers=credentials,
        )
        self._base_path = parts.path.rstrip("/")
        self._upstream_base = f"{parts.scheme}://{self.pool.authority}{self._base_path}"
        self.upstream_display = redact_url(upstream_url)
        self._api_prefix = api_prefix
        self.mark = mark
        # With permissions on, every forwarded request carries the gateway's assertion of its user.
        self._signer = Signer(assertion_secret) if assertion_secret is not None else None
        self._probe_headers = ((LOOP_MARK, mark.encode()), (b"user-agent", b"hokusai-registry-health-check"))
        self._probe_json_headers = (*self._probe_headers, (b"content-type", b"application/json"))
        self._admin_headers = ((LOOP_MARK, mark.encode()), (b"user-agent", b"hokusai-registry-admin"))
        self._admin_json_headers = (*self._admin_headers, (b"content-type", b"application/json"))
        # Read once: the level is set before the gateway is built (MLFLOW_PROXY_DEBUG).
        self._debug = log.isEnabledFor(logging.DEBUG)
        self._read_timeouts = {
            Family.REST: read_timeout,
            Family.UI: read_timeout,
            Family.TRANSFER: transfer_idle_timeout or None,
        }
        # Silence allowed while a streamed request body arrives: the transfer idle timeout, both ways.
        self._transfer_idle_timeout = transfer_idle_timeout or None

    async def close(self) -> None:
        """Connections are opened on first use; closing drops the idle ones."""
        self.pool.close()

    def target_bytes(self, target: Target, query: bytes) -> bytes:
        path = (self._base_path + upstream_path(target.path, self._api_prefix)).encode("ascii")
        return path + b"?" + query if query else path

    def assertion(self, method: str, target: bytes, user: str, body: str = EMPTY_BODY) -> Header:
        """The header asserting that `user` sends this request, with the body whose digest is `body`
        (`policy/assertions.py`)."""
        assert self._signer is not None  # nosec B101 - callers check `signs`
        path, _, query = target.partition(b"?")
        value = self._signer.sign(
            user,
            method,
            path.decode("ascii"),
            query.decode("latin-1"),
            now=time.time(),
            nonce=new_nonce(),
            body=body,
        )
        return (ASSERTION_HEADER, value)

    @property
    def signs(self) -> bool:
        return self._signer is not None

    def _request(
        self, scope: Scope, receive: Receive, target: Target, record: RequestRecord, user: str, body: str
    ) -> UpstreamRequest:
        """The request for MLflow: the client's headers as `upstream_request_headers` leaves them, and
        its body streamed (framed as the client framed it) when it has one."""
        client = scope.get("client")
        headers = upstream_request_headers(
            scope["headers"],
            client_ip=client[0] if client else "",
            scheme=scope["scheme"],
            key_id=record.key_id,
            mark=self.mark,
            request_id=record.request_id,
        )
        length = header_value(headers, b"content-length")
        chunked = length is None and header_value(scope["headers"], b"transfer-encoding") is not None
        has_body = chunked or (length is not None and length.strip() != b"0")
        upstream_target = self.target_bytes(target, scope["query_string"])
        record.upstream = upstream_target.decode("ascii")
        method = scope["method"]
        if self._signer is not None:
            headers.append(self.assertion(method, upstream_target, user, body))
        if self._debug:
            log.debug(
                "%s rewrite: %s -> mount %r, MLflow path %s -> upstream %s%s",
                record.request_id.decode(),
                scope["raw_path"].decode("latin-1"),
                target.mount,
                target.path,
                self.upstream_display,
                record.upstream,
            )
            log.debug(
                "%s forwarded headers: %s",
                record.request_id.decode(),
                redact_headers(self.pool.fixed_headers + headers),
            )
        # Positional: keywords cost about 0.1 us each here, on every forwarded request.
        return UpstreamRequest(
            method,
            upstream_target,
            headers,
            _request_body(receive, record, self._transfer_idle_timeout) if has_body else None,
            chunked,
            method in IDEMPOTENT,  # idempotent
            self._read_timeouts[target.family],  # read_timeout
            method == "HEAD",  # head_only
        )

    async def probe(
        self, method: str, path: str, query: bytes, body: bytes | None, *, signed: bool = True
    ) -> tuple[int, bytes]:
        """A request of the gateway's own (health checks), sent through the same pool, path translation
        and fixed headers as users' requests, as MLflow's administrator (unless not `signed`: the check
        that MLflow refuses such requests). Reads at most PROBE_LIMIT bytes of the answer."""
        headers = self._probe_headers if body is None else self._probe_json_headers
        return await self._own_request(method, path, query, body, headers, signed=signed, limit=PROBE_LIMIT)

    async def administer(
        self,
        method: str,
        path: str,
        query: bytes,
        body: bytes | None,
        limit: int = 64 << 20,
        *,
        user: str = ADMIN_USER,
    ) -> tuple[int, bytes]:
        """A request of MLflow's administrator for teams and grants (`admin/permissions.py`), sent as
        `probe` sends it, with a JSON `body` if any. Reads at most `limit` bytes of the answer (a longer
        one is cut there, so no longer parses): every user's roles and grants come in one answer. With
        `user`, asked as that MLflow user instead (what may they read: `admin/promotions.py`)."""
        headers = self._admin_headers if body is None else self._admin_json_headers
        return await self._own_request(
            method, path, query, body, headers, signed=True, limit=limit, user=user
        )

    async def _own_request(
        self,
        method: str,
        path: str,
        query: bytes,
        body: bytes | None,
        headers: tuple[Header, ...],
        *,
        signed: bool,
        limit: int,
        user: str = ADMIN_USER,
    ) -> tuple[int, bytes]:
        target = (self._base_path + upstream_path(path, self._api_prefix)).encode("ascii")
        target = target + b"?" + query if query else target
        if signed and self._signer is not None:
            headers = (*headers, self.assertion(method, target, user, body_digest(body or b"")))
        request = UpstreamRequest(
            method,
            target,
            headers,
            body,
            idempotent=method == "GET",
            read_timeout=self._read_timeouts[Family.REST],
        )
        return await self.pool.exchange(request, limit)

    async def forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        target: Target,
        record: RequestRecord,
        user: str,
        body: str,
    ) -> None:
        """Forward one request for MLflow's `user`, its body the one whose digest is `body` (or
        UNBOUND_BODY, streamed), and stream the answer back."""
        method = scope["method"]
        request = self._request(scope, receive, target, record, user, body)
        started = time.perf_counter()
        read_timeout = request.read_timeout
        try:
            response = await self.pool.send(request)
        except ClientGone:
            record.status = 499  # nginx's "client closed request": nothing was sent
            return
        except ClientIdle:  # the upstream connection was closed mid-body: MLflow saw no whole request
            idle = self._transfer_idle_timeout
            await send_refusal(
                counted(send, record),
                Refusal(
                    Reason.BODY_TIMEOUT,
                    f"the upload stopped arriving: nothing for {idle:g} s (HOKUSAI_ARTIFACT_READ_TIMEOUT) "
                    f"after {record.bytes_in} bytes. The connection is closed.",
                    ((b"connection", b"close"),),
                ),
            )
            return
        except UpstreamError as exc:
            await self._refuse_failed(exc, method, target, read_timeout, send, record)
            return
        record.upstream_ms = (time.perf_counter() - started) * 1000
        if self._signer is not None and response.status in (401, 403):
            # Raised (MLflow's permission refusal, or its refusal of our signature) for the gateway to
            # answer, audit and count as it does its own refusals; other 401s and 403s are relayed.
            await self._relay_refusal(response, method, target, user, counted(send, record), record)
            return
        try:
            try:
                # A small answer is sent whole, head and body in one write, once all of it is here;
                # MLflow writes them apart, and a head sent alone costs a write of its own.
                whole = await response.small_body(SMALL_ANSWER_BYTES)
            except UpstreamError as exc:  # nothing is sent yet: the client gets a clear error
                await self._refuse_failed(exc, method, target, read_timeout, send, record)
                return
            record.status = response.status
            headers = client_response_headers(
                response.headers, upstream_base=self._upstream_base, mount=target.mount
            )
            headers.append((b"x-request-id", record.request_id))
            await send({"type": "http.response.start", "status": response.status, "headers": headers})
            if whole is not None:
                record.bytes_out += len(whole)
                await send({"type": "http.response.body", "body": whole, "more_body": False})
            elif target.family is Family.TRANSFER:
                await self._stream_until_disconnect(response, receive, send, target, record)
            else:
                await self._stream(response, send, target, record)
        finally:
            response.release()
            if self._debug:
                log.debug(
                    "%s upstream answered %d: head after %.1f ms, done after %.1f ms; response headers: %s",
                    record.request_id.decode(),
                    response.status,
                    record.upstream_ms,
                    (time.perf_counter() - started) * 1000,
                    redact_headers(response.headers),
                )

    async def _refuse_failed(
        self,
        exc: UpstreamError,
        method: str,
        target: Target,
        read_timeout: float | None,
        send: Send,
        record: RequestRecord,
    ) -> None:
        """The client's answer when MLflow failed before any of its answer went out: 502 or 504."""
        record.upstream_error = _error_kind(exc)
        error = self._upstream_error(exc, target, read_timeout)
        log.warning(
            "%s upstream %s %s failed: %s", record.request_id.decode(), method, target.path, error.message
        )
        await send_refusal(counted(send, record), error)

    async def _relay_refusal(
        self,
        response: UpstreamResponse,
        method: str,
        target: Target,
        user: str,
        send: Send,
        record: RequestRecord,
    ) -> None:
        """MLflow's 401 or 403 (small: read whole). Its permission refusal is raised as a Refusal that
        names what is needed; its refusal of the gateway's own assertion as the misconfiguration it is;
        anything else is relayed as it was."""
        body = b""
        try:
            async for chunk in response.chunks():
                body += chunk
                if len(body) > PROBE_LIMIT:
                    raise UpstreamError("MLflow's refusal is longer than 1 MiB")
        except UpstreamError as exc:
            record.upstream_error = _error_kind(exc)
            raise self._upstream_error(exc, target, None) from None
        finally:
            response.release()
        if response.status == 403 and body.strip() == MLFLOW_DENIAL:
            raise Refusal(Reason.PERMISSION, denial_message(user, method, target.path))
        if response.status == 401 and ASSERTION_REFUSAL_MARK in body:
            log.error("MLflow refused this gateway's assertion: %s", body[:300].decode("utf-8", "replace"))
            raise Refusal(
                Reason.ASSERTION_REFUSED,
                f": MLflow at {self.upstream_display} refused this gateway's signature. Its "
                "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE (or HOKUSAI_MLFLOW_ASSERTION_SECRET) must hold the "
                "same secret as every gateway's, and their clocks must agree within seconds.",
            )
        headers = client_response_headers(
            response.headers, upstream_base=self._upstream_base, mount=target.mount
        )
        headers = [(name, value) for name, value in headers if name != b"content-length"]
        await send_body(send, response.status, body, [*headers, (b"x-request-id", record.request_id)])

    async def _stream(
        self, response: UpstreamResponse, send: Send, target: Target, record: RequestRecord
    ) -> None:
        try:
            async for chunk in response.chunks():
                record.bytes_out += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            record.upstream_error = _error_kind(exc)
            # Headers are out: the only honest signal left is to cut the connection, which
            # returning without the final body message does.
            log.warning("upstream broke off %s mid-response: %s", target.path, exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream_until_disconnect(
        self, response: UpstreamResponse, receive: Receive, send: Send, target: Target, record: RequestRecord
    ) -> None:
        """Large downloads stop, and give up their upstream connection, when the client leaves."""
        streaming = asyncio.ensure_future(self._stream(response, send, target, record))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            done, _ = await asyncio.wait({streaming, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if streaming not in done:
                log.info("client left during %s; upstream connection closed", target.path)
        finally:
            for task in (streaming, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _upstream_error(self, exc: UpstreamError, target: Target, read_timeout: float | None) -> Refusal:
        upstream = self.upstream_display
        if isinstance(exc, ReadTimeout):
            transfer = target.family is Family.TRANSFER
            setting = "HOKUSAI_ARTIFACT_READ_TIMEOUT" if transfer else "HOKUSAI_UPSTREAM_READ_TIMEOUT"
            return Refusal(
                Reason.TRANSFER_TIMEOUT if transfer else Reason.UPSTREAM_TIMEOUT,
                f"MLflow at {upstream} did not answer {target.path} within "
                f"{read_timeout:g} s (waiting for the response). MLflow may be overloaded; the timeout "
                f"is {setting}.",
            )
        if isinstance(exc, ConnectTimeout):
            return Refusal(
                Reason.UPSTREAM_CONNECT_TIMEOUT,
                f" timed out connecting to MLflow at {upstream} ({exc}). {CHECK_HINT}",
            )
        if isinstance(exc, ConnectFailed):
            return Refusal(
                Reason.UPSTREAM_REFUSED,
                f" could not connect to MLflow at {upstream} ({exc}). {CHECK_HINT}",
            )
        return Refusal(
            Reason.UPSTREAM_LOST,
            f" lost the connection to MLflow at {upstream} while {exc.stage} ({exc}). {CHECK_HINT}",
        )
