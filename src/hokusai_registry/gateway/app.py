"""The gateway as one pure-ASGI application.

Order on every request: header limits → gateway-owned routes (health, metrics, the admin API, the sign-in
and key pages; never forwarded) → loop guard → path resolution (unknown paths end here) → request policy
(methods, origin — strict for browser sessions —, no keys in URLs, no climbing `path` parameter) → the
caller (`access.py`: a key in the headers or a browser session; failure throttle, key, service id, rate
limit; the UI page without one goes to `/login`) → scope → artifact transfer policy → inspected bodies
(attribution, audit) → the forwarder. Every refusal is MLflow JSON made in `core/refusals.py`, but on the
gateway's own pages (`admin/pages.py`), which answer in HTML.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, unquote_to_bytes

from hokusai_registry.admin.api import DOCS_ASSETS, DOCS_PATHS, IDENTITY, KEYS_PATH, VALIDATE_PATH
from hokusai_registry.admin.pages import WebPages, is_page_path
from hokusai_registry.admin.rendering import send_redirect
from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.auth.caller import Access, client_address
from hokusai_registry.core.asgi import Receive, Scope, Send
from hokusai_registry.core.bodies import read_body, replay
from hokusai_registry.core.record import RequestRecord, counted, request_id
from hokusai_registry.core.refusals import Reason, Refusal, send_body, send_json, send_refusal
from hokusai_registry.ops.audit import audit
from hokusai_registry.ops.health import MLFLOW_HEALTH_PATHS, Health
from hokusai_registry.ops.logs import flush_periodically, log_access
from hokusai_registry.ops.metrics import Metrics
from hokusai_registry.policy.headers import (
    LOOP_MARK,
    SAFE_METHODS,
    head_problem,
    header_value,
    is_cross_origin_write,
)
from hokusai_registry.policy.inspection import (
    MAX_INSPECTED_BODY,
    Inspection,
    attribute_run,
    audit_fields,
    inspection,
    parse,
)
from hokusai_registry.policy.navigation import login_location
from hokusai_registry.policy.paths import Redirect, Target, resolve, unsafe_path_parameter
from hokusai_registry.policy.routes import Family
from hokusai_registry.policy.scopes import grants, required_scope
from hokusai_registry.policy.transfers import is_server_info, mints_urls, without_direct_transfers
from hokusai_registry.transport.forward import Forwarder
from hokusai_registry.transport.upstream import UpstreamError

FORWARDED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]
ADMIN_API_PREFIX = "/api/v1/"


def _method_error(method: str) -> Refusal:
    return Refusal(Reason.METHOD_NOT_ALLOWED, f" does not accept {method[:16]} requests here.")


def _permission_error(
    key_id: str, held: tuple[str, ...], method: str, path: str, needed: str | None
) -> Refusal:
    fix = (
        f": that needs the '{needed}' scope. Ask an admin for a key with --scope {needed}." if needed else "."
    )
    return Refusal(Reason.SCOPE, f"key {key_id} (scopes: {' '.join(held)}) may not {method} {path}{fix}")


def _key_in_url(path: str, query: bytes) -> bool:
    """A key anywhere in the URL, percent-encoded or not (URLs end up in logs and histories)."""
    if b"hk_" in query or b"%" in query:
        decoded = unquote_to_bytes(query).lower()
        if b"hk_live_" in decoded or b"hk_test_" in decoded:
            return True
    return "hk_live_" in path or "hk_test_" in path


def _is_ui_page(target: Target, method: str) -> bool:
    """The MLflow UI's page itself, which a browser navigates to (everything else is fetched by it)."""
    return target.family is Family.UI and target.path == "/" and method in ("GET", "HEAD")


def _loop_error() -> Refusal:
    return Refusal(
        Reason.LOOP,
        " received a request it had forwarded itself: MLFLOW_SERVER_URL points "
        "back at the gateway (directly or through a load balancer). Set it to the internal MLflow address.",
    )


class Gateway:
    def __init__(
        self,
        *,
        access: Access,
        pages: WebPages,
        forwarder: Forwarder,
        health: Health,
        metrics: Metrics,
        keys_api: Handler,
        keys_managed_by: str | None,
        direct_transfers: bool,
        public_url: str | None,
    ) -> None:
        self.access = access
        self.pages = pages
        self.forwarder = forwarder
        self.metrics = metrics
        self.keys_api = keys_api
        # Set when keys are validated by a remote auth service, which then also manages them.
        self.keys_managed_by = keys_managed_by
        self.direct_transfers = direct_transfers
        self.public_url = public_url
        self._loop_mark = forwarder.mark.encode()
        self._log_flusher: asyncio.Future[None] | None = None
        # Exact paths answered by the gateway and never forwarded: the handler, and whether it needs a key.
        self.own_routes: dict[str, tuple[Handler, bool]] = {
            "/health": (health.liveness, False),
            "/ready": (health.readiness, False),
            "/metrics": (metrics.endpoint, True),
        }
        for path in MLFLOW_HEALTH_PATHS:
            self.own_routes[path] = (health.mlflow_summary, False)
            self.own_routes[path + "/detailed"] = (health.mlflow_detailed, True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "websocket":
            # MLflow has no WebSocket routes: refuse the handshake (the server answers 403).
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self._log_flusher = asyncio.ensure_future(flush_periodically())
                    await self.access.authenticator.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.access.authenticator.stop()
                await self.forwarder.close()
                if self._log_flusher is not None:
                    self._log_flusher.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        record = RequestRecord(request_id(header_value(scope["headers"], b"x-request-id")))
        self.metrics.in_flight.inc()
        try:
            await self._dispatch(scope, receive, send, record)
        except Refusal as error:
            await self.access.refused(scope, record, error)
            await send_refusal(counted(send, record), error)
        finally:
            self.metrics.in_flight.dec()
            log_access(
                record,
                client_address(scope),
                scope["method"],
                scope["path"],
                (time.perf_counter() - started) * 1000,
            )
            self.metrics.observe(record, scope["method"])

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        problem = head_problem(scope["headers"])
        if problem is not None:
            raise problem
        path = scope["path"]
        own = self.own_routes.get(path)
        if own is not None:
            await self._own_route(own, scope, receive, send, record)
        elif path.startswith(ADMIN_API_PREFIX) or path in DOCS_PATHS or path.startswith(DOCS_ASSETS + "/"):
            await self._admin_api(scope, receive, send, record)
        elif is_page_path(path):
            await self.pages(scope, receive, counted(send, record), record)
        else:
            await self._mlflow(scope, receive, send, record)

    async def _own_route(
        self, route: tuple[Handler, bool], scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        record.family = "gateway"
        handler, needs_key = route
        if scope["method"] not in ("GET", "HEAD"):
            raise _method_error(scope["method"])
        if needs_key:
            await self.access.identify(scope, record)
        await handler(scope, receive, counted(send, record))

    async def _mlflow(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        target = self._target(scope, record)
        if isinstance(target, Redirect):
            await _redirect(counted(send, record), target.location, scope["query_string"])
            return
        record.family = target.family.value
        method = scope["method"]
        try:
            identity = (await self.access.identify(scope, record)).identity
        except Refusal as error:
            if error.code != "UNAUTHENTICATED" or not _is_ui_page(target, method):
                raise
            # A browser opening the UI without a (live) session signs in first; API paths never redirect.
            await self.access.refused(scope, record, error)
            location = login_location(target.mount + "/", error.reason.value)
            await send_redirect(counted(send, record), location, error.headers)
            return
        needed = required_scope(method, target.path)
        if needed is None or not grants(identity.scopes, needed):
            raise _permission_error(identity.key_id, identity.scopes, method, target.path, needed)
        if not self.direct_transfers:
            if mints_urls(target.path):
                raise Refusal(
                    Reason.TRANSFER_POLICY,
                    "direct (presigned) artifact transfers are off here; every "
                    "artifact byte goes through the gateway. Unset MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD and "
                    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD, or ask the operator to set "
                    "HOKUSAI_DIRECT_ARTIFACT_TRANSFERS.",
                )
            if method == "GET" and is_server_info(target.path):
                await self._server_info(target.path, scope["query_string"], counted(send, record))
                return
        found = inspection(method, target.path)
        if found is None:
            await self.forwarder.forward(scope, receive, send, target, record)
            return
        await self._forward_inspected(scope, receive, send, record, target, found, identity)

    async def _forward_inspected(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: RequestRecord,
        target: Target,
        found: Inspection,
        identity: Identity,
    ) -> None:
        inspected = await self._inspect(scope, receive, found, identity)
        if inspected is None:
            record.status = 499  # the client left while sending its body
            return
        scope, receive, fields = inspected
        await self.forwarder.forward(scope, receive, send, target, record)
        if found.audited:
            audit(
                found.event,
                key_id=identity.key_id,
                owner=identity.user_id,
                client=client_address(scope),
                request_id=record.request_id.decode(),
                status=record.status,
                **fields,
            )

    async def _server_info(self, path: str, query: bytes, send: Send) -> None:
        """MLflow's capability probe, answered so that clients never move bytes around the gateway."""
        try:
            status, body = await self.forwarder.probe("GET", path, query, None)
        except UpstreamError as exc:
            raise Refusal(
                Reason.UPSTREAM_LOST, f" could not ask MLflow for its server info ({exc})."
            ) from None
        await send_json(send, status, without_direct_transfers(body) if status == 200 else body)

    async def _inspect(
        self, scope: Scope, receive: Receive, found: Inspection, identity: Identity
    ) -> tuple[Scope, Receive, dict[str, str]] | None:
        """Reads a small JSON body; for run creation, puts the key's owner in as the run's user."""
        body = await read_body(receive, MAX_INSPECTED_BODY)
        if body is None:
            return None
        data = parse(body)
        if data is None and body.strip():
            # The gateway reads these to attribute and audit them: it forwards none it cannot read.
            raise Refusal(Reason.BODY_NOT_JSON, "the request body is not a JSON object.")
        fields = audit_fields(found, data, dict(parse_qsl(scope["query_string"].decode("latin-1"))))
        if found.attribute:
            # Never forward a run creation the gateway could not attribute.
            try:
                if data is None:
                    raise ValueError("the body must be a JSON object")
                body = attribute_run(data, identity.user_id)
            except (ValueError, RecursionError) as exc:
                raise Refusal(Reason.INVALID_REQUEST, f"invalid runs/create request: {exc}.") from None
        headers = [
            (name, value)
            for name, value in scope["headers"]
            if name not in (b"content-length", b"transfer-encoding")
        ]
        headers.append((b"content-length", str(len(body)).encode()))
        return {**scope, "headers": headers}, replay(body, receive), fields

    async def _admin_api(self, scope: Scope, receive: Receive, send: Send, record: RequestRecord) -> None:
        """Docs and the validate endpoint are open (validate checks the key it is given, and throttles by
        the end client's address); key management needs an admin key."""
        record.family = "gateway"
        path = scope["path"]
        if self.keys_managed_by and (path == KEYS_PATH or path.startswith(KEYS_PATH + "/")):
            raise Refusal(
                Reason.KEYS_MANAGED_ELSEWHERE,
                "this gateway validates keys through the auth service at "
                f"{self.keys_managed_by} (AUTH_SERVICE_URL); manage and validate keys there.",
            )
        if path == KEYS_PATH or (path.startswith(KEYS_PATH + "/") and path != VALIDATE_PATH):
            # Keys in headers only: a browser session's cookie is not accepted by the REST API.
            identity = (await self.access.identify(scope, record, sessions=False)).identity
            if not grants(identity.scopes, "admin"):
                raise _permission_error(identity.key_id, identity.scopes, scope["method"], path, "admin")
            scope = {**scope, IDENTITY: identity}
        elif path != VALIDATE_PATH and path not in DOCS_PATHS and not path.startswith(DOCS_ASSETS + "/"):
            raise Refusal(Reason.NO_SUCH_ENDPOINT, f"no API endpoint {path}.")
        await self.keys_api(scope, receive, counted(send, record))

    def _target(self, scope: Scope, record: RequestRecord) -> Target | Redirect:
        """Everything decided before authentication; raises Refusal for a refusal."""
        headers = scope["headers"]
        if header_value(headers, LOOP_MARK) == self._loop_mark:
            record.upstream_error = "loop"
            raise _loop_error()
        resolved = resolve(scope.get("raw_path") or scope["path"].encode())
        if resolved is None:
            raise Refusal(
                Reason.NOT_AN_MLFLOW_PATH,
                f"{scope['path']} is not an MLflow path. Tracking URIs end in "
                "/mlflow, /api/mlflow or the bare host.",
            )
        if isinstance(resolved, Redirect):
            return resolved
        method = scope["method"]
        if method not in FORWARDED_METHODS:
            raise _method_error(method)
        query = scope["query_string"]
        if _key_in_url(resolved.path, query):
            raise Refusal(
                Reason.KEY_IN_URL,
                "API keys are not accepted in the URL (URLs end up in logs). "
                "Send the key in the Authorization header and revoke the one that was in the URL.",
            )
        # Only writes have an origin to check: reads never look for the session cookie here.
        via_session = method not in SAFE_METHODS and self.access.session_id(scope) is not None
        if is_cross_origin_write(method, headers, self.public_url, origin_required=via_session):
            raise Refusal(
                Reason.CROSS_ORIGIN,
                " blocked a cross-origin write: "
                + (
                    "a write with a browser session must come from this site (Origin or Referer naming it)."
                    if via_session
                    else "the Origin header names another site."
                ),
            )
        if b"path=" in query and unsafe_path_parameter(query):
            raise Refusal(
                Reason.UNSAFE_PATH_PARAMETER,
                " rejected the 'path' parameter: it climbs out with '..' or is "
                "absolute. Nothing was forwarded to MLflow.",
            )
        return resolved


async def _redirect(send: Send, location: str, query: bytes) -> None:
    target = location.encode() + (b"?" + query if query else b"")
    await send_body(send, 308, b"", [(b"location", target)])
