"""The gateway as one pure-ASGI application.

Every request is parsed once (`policy/request.py`): its head measured, its route looked up in the route
table (`policy/routes.py`). Then, in order: head limits → the gateway's own routes (health, metrics, the
admin API and its docs, the pages; never forwarded), each with the caller it needs → for MLflow paths,
the ordered checks of `checks.py` (loop guard, path, method, key in URL, origin, `path` parameter) → the
caller (`auth/caller.py`: a key in the headers or a browser session; failure throttle, key, service id,
rate limit; the UI page without one goes to `/login`) → the caller checks (scope, artifact transfer
policy) → inspected bodies (attribution, reserved tags, GraphQL mutations, audit) → the forwarder. Every
refusal is a `Refusal`, answered as MLflow JSON by `core/refusals.py`, but on the gateway's own pages
(`admin/pages.py`), which answer in HTML. Registry writes MLflow answered 2xx become events for the
webhooks (`policy/registry_events.py`, `events/`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

from hokusai_registry.admin.api import IDENTITY
from hokusai_registry.admin.pages import WebPages
from hokusai_registry.admin.rendering import send_redirect
from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.auth.caller import Access, client_address
from hokusai_registry.core.asgi import Message, Receive, Scope, Send
from hokusai_registry.core.bodies import read_body, replay, with_length
from hokusai_registry.core.record import RequestRecord, counted
from hokusai_registry.core.refusals import Reason, Refusal, send_body, send_json, send_refusal
from hokusai_registry.events.hub import Events
from hokusai_registry.gateway.checks import (
    BEFORE_TARGET,
    ON_CALLER,
    ON_TARGET,
    Policy,
    first_refusal,
    method_refusal,
    permission_refusal,
)
from hokusai_registry.gateway.protection import ProtectionGuard
from hokusai_registry.ops.audit import audit
from hokusai_registry.ops.health import Health
from hokusai_registry.ops.logs import flush_periodically, log_access
from hokusai_registry.ops.metrics import Metrics
from hokusai_registry.policy.assertions import body_digest, mlflow_user
from hokusai_registry.policy.delete_bodies import unlabelled_delete_body
from hokusai_registry.policy.forwarding import TrustedProxies
from hokusai_registry.policy.forwarding import resolve as resolve_forwarded
from hokusai_registry.policy.headers import SAFE_METHODS, request_id
from hokusai_registry.policy.inspection import Inspection, inspect, inspection
from hokusai_registry.policy.inspection import parse as parse_json
from hokusai_registry.policy.navigation import login_location
from hokusai_registry.policy.paths import Redirect, Target
from hokusai_registry.policy.protection import (
    PROMOTION_TAG_PREFIX,
    Action,
    Touch,
    action,
    names_promotion_tag,
    tags_versions,
    touched,
)
from hokusai_registry.policy.registry_events import MAX_ANSWER, event_data, event_for
from hokusai_registry.policy.request import Request
from hokusai_registry.policy.request import parse as parse_request
from hokusai_registry.policy.routes import Caller, Family, Handler, OwnRoute
from hokusai_registry.policy.scopes import grants
from hokusai_registry.policy.transfers import is_server_info, without_direct_transfers
from hokusai_registry.transport.bodies import RequestBodies
from hokusai_registry.transport.forward import Forwarder
from hokusai_registry.transport.upstream import UpstreamError

Endpoint = Callable[[Scope, Receive, Send], Awaitable[None]]
log = logging.getLogger(__name__)


def _is_ui_page(target: Target, method: str) -> bool:
    """The MLflow UI's page itself, which a browser navigates to (everything else is fetched by it)."""
    return target.family is Family.UI and target.path == "/" and method in ("GET", "HEAD")


class Gateway:
    def __init__(
        self,
        *,
        access: Access,
        pages: WebPages,
        forwarder: Forwarder,
        bodies: RequestBodies,
        health: Health,
        metrics: Metrics,
        keys_api: Endpoint,
        keys_elsewhere: bool,
        direct_transfers: bool,
        public_url: str | None,
        graphql_max_tokens: int,
        proxies: TrustedProxies,
        protection: ProtectionGuard,
        events: Events | None = None,
    ) -> None:
        self.access = access
        self.protection = protection
        # Registry events for the webhooks; the promotion workflow emits through it too.
        self.events = events
        self.proxies = proxies
        self.pages = pages
        self.forwarder = forwarder
        self.bodies = bodies
        self.metrics = metrics
        # Set when keys are validated by a remote auth service, which then also manages them.
        self.keys_elsewhere = keys_elsewhere
        self.policy = Policy(forwarder.mark.encode(), public_url, direct_transfers, graphql_max_tokens)
        self._log_flusher: asyncio.Future[None] | None = None
        # What answers each of the gateway's own routes (the table is `policy/routes.py`).
        self.endpoints: dict[Handler, Endpoint] = {
            Handler.LIVENESS: health.liveness,
            Handler.READINESS: health.readiness,
            Handler.METRICS: metrics.endpoint,
            Handler.MLFLOW_HEALTH: health.mlflow_summary,
            Handler.MLFLOW_HEALTH_DETAILED: health.mlflow_detailed,
            Handler.KEYS: keys_api,
            Handler.VALIDATE: keys_api,
            Handler.DOCS: keys_api,
        }

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
                    if self.events is not None:
                        await self.events.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.events is not None:
                    await self.events.stop()
                await self.access.authenticator.stop()
                await self.access.tokens.issuers.close()
                await self.forwarder.close()
                if self._log_flusher is not None:
                    self._log_flusher.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        self._behind_proxies(scope)
        request = parse_request(scope)
        record = RequestRecord(request_id(request.header(b"x-request-id")))
        self.metrics.in_flight.inc()
        try:
            await self._dispatch(request, scope, receive, send, record)
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

    def _behind_proxies(self, scope: Scope) -> None:
        """The client and scheme as the trusted proxies in front report them, put in the scope that
        everything downstream reads (throttle, access and audit lines, what MLflow is told)."""
        client = scope.get("client")
        if client is None:
            return
        resolved = resolve_forwarded(client[0], scope["headers"], scope["scheme"], self.proxies)
        if resolved is not None:
            address, scope["scheme"] = resolved
            scope["client"] = (address, client[1] if address == client[0] else 0)

    async def _dispatch(
        self, request: Request, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        if request.head_refusal is not None:
            raise request.head_refusal
        if request.own is not None:
            await self._own(request.own, scope, receive, send, record)
        else:
            await self._mlflow(request, scope, receive, send, record)

    async def _own(
        self, route: OwnRoute, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        record.family = Family.GATEWAY.value
        method = scope["method"]
        if route.handler is Handler.PAGES:
            body = await self.bodies.for_gateway(scope, receive)
            if body is None:
                record.status = 499  # the client left while sending its body
                return
            with body:
                await self.pages(body.scope, body.receive, counted(send, record), record)
            return
        if route.local_keys_only and self.keys_elsewhere:
            raise Refusal(
                Reason.KEYS_MANAGED_ELSEWHERE,
                # Not its address: this is answered before any key is checked.
                "this gateway validates keys through an auth service (its AUTH_SERVICE_URL); manage and "
                "validate keys there.",
            )
        if route.handler is Handler.NO_SUCH_API:
            raise Refusal(Reason.NO_SUCH_ENDPOINT, f"no API endpoint {scope['path']}.")
        if route.methods is not None and method not in route.methods:
            raise method_refusal(method)
        if route.caller is Caller.KEY:
            await self.access.identify(scope, record)
        elif route.caller is Caller.HEADER_KEY:
            # Keys in headers only, as for admin routes: a cookie would let other sites' forms in.
            scope = {**scope, IDENTITY: (await self.access.identify(scope, record, sessions=False)).identity}
        elif route.caller in (Caller.ADMIN_KEY, Caller.OWN_KEYS):
            # Keys in headers only: a browser session's cookie is not accepted by the REST API.
            identity = (await self.access.identify(scope, record, sessions=False)).identity
            own = route.caller is Caller.OWN_KEYS and identity.sso_user_id is not None
            if not own and not grants(identity.scopes, "admin"):
                raise permission_refusal(identity.key_id, identity.scopes, method, scope["path"], "admin")
            scope = {**scope, IDENTITY: identity}
        body = await self.bodies.for_gateway(scope, receive)
        if body is None:
            record.status = 499
            return
        with body:
            await self.endpoints[route.handler](body.scope, body.receive, counted(send, record))

    async def _mlflow(
        self, request: Request, scope: Scope, receive: Receive, send: Send, record: RequestRecord
    ) -> None:
        refusal = first_refusal(BEFORE_TARGET, request, self.policy)
        if refusal is not None:
            if refusal.reason is Reason.LOOP:
                record.upstream_error = "loop"
            raise refusal
        target = request.target
        if isinstance(target, Redirect):
            await _redirect(counted(send, record), target.location, request.query)
            return
        assert isinstance(target, Target)  # nosec B101 - path_resolved refused every other outcome
        method = request.method
        # Only writes have an origin to check: reads never look for the session cookie here.
        request.via_session = method not in SAFE_METHODS and self.access.session_id(scope) is not None
        refusal = first_refusal(ON_TARGET, request, self.policy)
        if refusal is not None:
            raise refusal
        record.family = target.family.value
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
        for check in ON_CALLER:
            refusal = check(request, target, identity, self.policy)
            if refusal is not None:
                raise refusal
        # Capped bodies are here whole before MLflow is contacted (`transport/bodies.py`).
        body = await self.bodies.for_mlflow(scope, receive, target)
        if body is None:
            record.status = 499
            return
        with body:
            # After the caller's checks and the route's body rule, as a body check (`delete_bodies.py`).
            refusal = unlabelled_delete_body(method, scope["headers"])
            if refusal is not None:
                raise refusal
            await self._pass_on(body.scope, body.receive, send, record, target, identity, body.digest)

    async def _pass_on(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: RequestRecord,
        target: Target,
        identity: Identity,
        digest: str,
    ) -> None:
        """The authorized request, its body checked (`digest`: what the assertion binds): the server-info
        answer, or forwarded (inspected first where `policy/inspection.py` says so)."""
        method = scope["method"]
        if not self.policy.direct_transfers and method == "GET" and is_server_info(target.path):
            await self._server_info(target.path, scope["query_string"], counted(send, record))
            return
        found = inspection(method, target.path)
        if found is None:
            if method == "DELETE" and action(method, target.path) is Action.DELETE_WORKSPACE:
                # Deleting a workspace deletes (or moves) its models: protected ones with them.
                touch = touched(method, target.path, None)
                await self._forward_guarded(scope, receive, send, record, target, identity, digest, touch)
                return
            await self.forwarder.forward(scope, receive, send, target, record, _acts_as(identity), digest)
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
        inspected = await self._inspect(scope, receive, found, identity, target.path)
        if inspected is None:
            record.status = 499  # the client left while sending its body
            return
        scope, receive, fields, digest, body = inspected
        method, path = scope["method"], target.path
        if tags_versions(method, path) and names_promotion_tag(method, path, parse_json(body)):
            raise _promotion_tag_refusal()
        # Registry writes whose event goes out once MLflow answered 2xx keep MLflow's (small) answer.
        event = event_for(method, path) if self.events is not None else None
        answer = _Answer(send) if event is not None else None
        relay: Send = answer if answer is not None else send
        if action(method, path) is None:
            await self.forwarder.forward(scope, receive, relay, target, record, _acts_as(identity), digest)
        else:
            # Alias and stage changes, version and model deletions and renames: protected ones refused.
            touch = touched(method, path, parse_json(body))
            await self._forward_guarded(scope, receive, relay, record, target, identity, digest, touch)
        if answer is not None and 200 <= record.status < 300:
            self._emit(scope, target, body, answer.body(), identity)
        if found.event is not None:
            audit(
                found.event,
                key_id=identity.key_id,
                owner=identity.user_id,
                client=client_address(scope),
                request_id=record.request_id.decode(),
                status=record.status,
                **fields,
            )

    def _emit(
        self, scope: Scope, target: Target, body: bytes, answer: bytes | None, identity: Identity
    ) -> None:
        """The registry event of a write MLflow answered 2xx, with who made it."""
        assert self.events is not None  # nosec B101 - checked by the caller
        try:
            query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
            found = event_data(scope["method"], target.path, body, query, answer)
            if found is not None:
                event, data = found
                data["actor"] = {"owner": identity.user_id, "key_id": identity.key_id}
                self.events.emit(event, data)
        except Exception:  # the answer is out: an event must never turn into the request's failure
            log.exception("the registry event of %s %s was not emitted", scope["method"], target.path)

    async def _forward_guarded(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        record: RequestRecord,
        target: Target,
        identity: Identity,
        digest: str,
        touch: Touch | None,
    ) -> None:
        """A request that may move or remove an alias or stage: judged by the protection rules (refused,
        or forwarded and recorded in the alias history: `gateway/protection.py`)."""
        user = _acts_as(identity)
        verdict = await self.protection.judge(touch, identity) if touch is not None else None
        if verdict is None:
            await self.forwarder.forward(scope, receive, send, target, record, user, digest)
            return
        await self.protection.forward(
            verdict,
            identity,
            record,
            client_address(scope),
            lambda: self.forwarder.forward(scope, receive, send, target, record, user, digest),
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
        self, scope: Scope, receive: Receive, found: Inspection, identity: Identity, path: str
    ) -> tuple[Scope, Receive, dict[str, str], str, bytes] | None:
        """Reads a small JSON body and lets `policy/inspection.py` judge it (attribution, reserved
        tags, GraphQL operations)."""
        body = await read_body(receive, found.max_body)
        if body is None:
            return None
        inspected = inspect(
            found,
            path,
            body,
            dict(parse_qsl(scope["query_string"].decode("latin-1"))),
            owner=identity.user_id,
            graphql_max_tokens=self.policy.graphql_max_tokens,
        )
        if inspected.needs is not None and not grants(identity.scopes, inspected.needs):
            raise permission_refusal(
                identity.key_id,
                identity.scopes,
                scope["method"],
                f"{path} (a GraphQL mutation)",
                inspected.needs,
            )
        return (
            with_length(scope, len(inspected.body)),
            replay(inspected.body, receive),
            inspected.fields,
            body_digest(inspected.body),  # as rewritten: what MLflow receives
            inspected.body,
        )


class _Answer:
    """`send` that also keeps MLflow's answer when it is small plain JSON (the registry writes' answers are
    a few KiB): relayed as it streams, never delayed, never kept past MAX_ANSWER."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._parts: list[bytes] = []
        self._size = 0
        self._kept = True

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self._kept = not any(name == b"content-encoding" for name, _ in message.get("headers", ()))
        elif self._kept and message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self._size += len(chunk)
            if self._size > MAX_ANSWER:
                self._kept, self._parts = False, []
            elif chunk:
                self._parts.append(chunk)
        await self._send(message)

    def body(self) -> bytes | None:
        return b"".join(self._parts) if self._kept else None


def _promotion_tag_refusal() -> Refusal:
    return Refusal(
        Reason.RESERVED_TAG,
        f"version tags '{PROMOTION_TAG_PREFIX}*' record approved promotions; the gateway sets them when it "
        "applies one, so no request may set or delete them. Use another tag name.",
    )


def _acts_as(identity: Identity) -> str:
    return mlflow_user(identity.user_id, admin=grants(identity.scopes, "admin"))


async def _redirect(send: Send, location: str, query: bytes) -> None:
    target = location.encode() + (b"?" + query if query else b"")
    await send_body(send, 308, b"", [(b"location", target)])
