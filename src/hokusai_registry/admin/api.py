"""The admin REST API (`/api/v1/keys`, `/api/v1/teams` and `/api/v1/grants` from `permissions_api.py`,
`/api/v1/webhooks` from `webhooks_api.py`), the auth-service endpoint (`/api/v1/keys/validate`) and
their OpenAPI docs (`/docs`, Swagger UI served from the package, no external assets).

The gateway authenticates and authorizes admin requests before they get here and passes the caller's
identity in the ASGI scope (`IDENTITY`); this app only does the work, through the same `KeyAdmin` the
CLI uses. Every error is MLflow's error JSON.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import swagger_ui_bundle  # type: ignore[import-untyped]
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from hokusai_registry import __version__
from hokusai_registry.admin.permission_models import ChangeRefused
from hokusai_registry.admin.permissions import PermissionAdmin
from hokusai_registry.admin.permissions_api import add_permission_routes
from hokusai_registry.admin.promotions import Promotions
from hokusai_registry.admin.promotions_api import add_promotion_routes
from hokusai_registry.admin.service import (
    CreatedKey,
    KeyAdmin,
    KeyInfo,
    KeySpec,
    OwnKeys,
    OwnKeySpec,
    problems,
)
from hokusai_registry.admin.users import UserAdmin, UserChange, UserInfo, UserSpec
from hokusai_registry.admin.webhooks import WebhookAdmin
from hokusai_registry.admin.webhooks_api import add_webhook_routes
from hokusai_registry.auth.authenticator import Authenticator, Identity, service_denied
from hokusai_registry.auth.credentials import presented_key
from hokusai_registry.auth.throttle import Guard
from hokusai_registry.core.refusals import ORIGIN_HEADER, Reason, Refusal
from hokusai_registry.policy import keys
from hokusai_registry.policy.forwarding import TrustedProxies, parse_address
from hokusai_registry.policy.routes import DOCS_ASSETS, VALIDATE_PATH
from hokusai_registry.policy.scopes import grants
from hokusai_registry.store.key_store import KeyNameTaken, KeyNotFound
from hokusai_registry.store.user_store import UserNotAllowed, UserNotFound
from hokusai_registry.store.webhook_store import WebhookNotFound

IDENTITY = "hokusai.identity"


class ValidateRequest(BaseModel):
    service_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="The calling service's id; a key limited to other services is refused with 403.",
    )
    client_ip: str | None = Field(
        default=None,
        max_length=64,
        description="The end client's address. Used only from a trusted caller (an address in "
        "HOKUSAI_FORWARDED_ALLOW_IPS); failed validations are otherwise counted against the caller's own.",
    )


class Validated(BaseModel):
    valid: bool = True
    key_id: str
    name: str
    user_id: str
    scopes: list[str]
    service_id: str | None
    service_ids: list[str] = Field(description="Services the key is limited to; empty means any.")
    rate_limit_per_minute: int | None
    rate_limit_per_hour: int | None
    expires_at: dt.datetime | None


def _error(refusal: Refusal) -> Response:
    headers = {ORIGIN_HEADER[0].decode(): ORIGIN_HEADER[1].decode()}
    headers.update((name.decode(), value.decode()) for name, value in refusal.headers)
    return Response(refusal.body(), refusal.http_status, headers, media_type="application/json")


def _identity(request: Request) -> Identity:
    identity: Identity = request.scope[IDENTITY]
    return identity


def _actor(request: Request) -> str:
    return f"key:{_identity(request).key_id}"


def _own(request: Request) -> str | None:
    """The single-sign-on user whose own keys these are, when the caller is not an admin (the gateway
    let in only admins and such users)."""
    identity: Identity = request.scope[IDENTITY]
    return None if grants(identity.scopes, "admin") else identity.sso_user_id


def _own_refused(what: str) -> Refusal:
    return Refusal(
        Reason.OWN_KEYS_ONLY,
        f"{what}: your own keys are made by a token from your identity provider or by signing in at the "
        "My keys page (/keys), never by another key.",
    )


def throttle_address(client_ip: str | None, caller: str, proxies: TrustedProxies) -> str:
    """Whom failed validations are counted against: the caller's own address; for a trusted caller (in
    the trusted proxies' networks, as a gateway validating through this one is) the end client it
    reports, qualified by the caller so that nobody can get another caller's clients throttled. Anyone
    else naming a new `client_ip` with each guess would get unlimited guesses."""
    if client_ip and proxies.trusts(caller):
        address = parse_address(client_ip)
        if address is not None:
            return f"{caller}>{address}"
    return caller


def build_keys_api(
    admin: KeyAdmin,
    authenticator: Authenticator,
    guard: Guard,
    proxies: TrustedProxies,
    permissions: PermissionAdmin,
    own_keys: OwnKeys,
    users: UserAdmin,
    promotions: Promotions,
    webhooks: WebhookAdmin | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Hokusai Registry admin API",
        version=__version__,
        description="Manage API keys, teams, grants, users, webhooks and protection rules (admin keys), "
        "your own keys (a single-sign-on user), request and approve promotions of protected aliases (any "
        "key), and validate keys for other services. Send the key as `Authorization: Bearer hk_live_...`. "
        "Errors are MLflow error JSON "
        "(`error_code`, `message`).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_bundle.swagger_ui_path)), name="assets")

    @app.exception_handler(Refusal)
    async def refused(_: Request, error: Refusal) -> Response:
        return _error(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> Response:
        return _error(Refusal(Reason.INVALID_REQUEST, f"invalid request: {problems(error.errors())}"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code == 405:
            return _error(Refusal(Reason.METHOD_NOT_ALLOWED, f"{request.method} is not allowed here."))
        return _error(Refusal(Reason.NO_SUCH_ENDPOINT, f"no admin API endpoint {request.url.path}."))

    @app.exception_handler(KeyNotFound)
    async def not_found(_: Request, error: KeyNotFound) -> Response:
        return _error(Refusal(Reason.KEY_NOT_FOUND, str(error)))

    @app.exception_handler(KeyNameTaken)
    async def taken(_: Request, error: KeyNameTaken) -> Response:
        return _error(Refusal(Reason.KEY_NAME_TAKEN, str(error)))

    @app.exception_handler(WebhookNotFound)
    async def no_webhook(_: Request, error: WebhookNotFound) -> Response:
        return _error(Refusal(Reason.WEBHOOK_NOT_FOUND, str(error)))

    @app.exception_handler(ChangeRefused)
    async def refused_change(_: Request, error: ChangeRefused) -> Response:
        return _error(Refusal(error.reason, error.message))

    @app.exception_handler(UserNotFound)
    async def no_user(_: Request, error: UserNotFound) -> Response:
        return _error(Refusal(Reason.NOT_FOUND, str(error)))

    @app.exception_handler(UserNotAllowed)
    async def user_exists(_: Request, error: UserNotAllowed) -> Response:
        return _error(Refusal(Reason.ALREADY_EXISTS, str(error)))

    @app.exception_handler(PermissionError)
    async def not_permitted(_: Request, error: PermissionError) -> Response:
        return _error(Refusal(Reason.OWN_KEYS_ONLY, str(error)))

    @app.exception_handler(ValueError)
    async def bad_value(_: Request, error: ValueError) -> Response:
        return _error(Refusal(Reason.INVALID_REQUEST, str(error)))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Hokusai Registry admin API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    # Plain `def` endpoints run in a worker thread (the key store is synchronous); revoke and rotate run
    # it in one themselves, then drop this gateway's cached key checks on the event loop.
    @app.get(
        "/api/v1/keys",
        response_model=list[KeyInfo],
        summary="List keys (never their secrets): all of them for an admin, else the caller's own",
    )
    def list_keys(request: Request) -> list[KeyInfo]:
        user_id = _own(request)
        return admin.list() if user_id is None else own_keys.list(user_id)

    @app.post(
        "/api/v1/keys",
        response_model=CreatedKey,
        status_code=201,
        summary="Create a key (an admin), or one of your own with a token from your identity provider "
        "(body: name, scope, expires_in; acts as you, at most your scope, expires within "
        "HOKUSAI_MAX_KEY_LIFETIME)",
    )
    async def create_key(spec: KeySpec, request: Request) -> CreatedKey:
        user_id = _own(request)
        if user_id is None:
            return await asyncio.to_thread(admin.create, spec, _actor(request))
        identity: Identity = request.scope[IDENTITY]
        if not identity.from_provider:
            raise _own_refused("a key cannot make keys")
        extra = sorted(spec.model_fields_set - set(OwnKeySpec.model_fields))
        if extra:
            raise Refusal(
                Reason.INVALID_REQUEST,
                f"your own keys take name, scope and expires_in only (not {', '.join(extra)}): they act as "
                "you, with the gateway's rate limits.",
            )
        own = OwnKeySpec(name=spec.name, scope=spec.scope, expires_in=spec.expires_in)
        return await asyncio.to_thread(own_keys.create, user_id, own, _actor(request))

    @app.get("/api/v1/keys/{key_id}", response_model=KeyInfo, summary="One key")
    def get_key(key_id: str, request: Request) -> KeyInfo:
        user_id = _own(request)
        if user_id is not None and all(key.key_id != key_id for key in own_keys.list(user_id)):
            raise KeyNotFound(f"you have no key with id {key_id!r}")
        return admin.get(key_id)

    @app.post("/api/v1/keys/{key_id}/revoke", response_model=KeyInfo, summary="Revoke a key")
    async def revoke_key(key_id: str, request: Request) -> KeyInfo:
        user_id = _own(request)
        if user_id is None:
            revoked = await asyncio.to_thread(admin.revoke, key_id, _actor(request))
        else:
            revoked = await asyncio.to_thread(own_keys.revoke, user_id, key_id, _actor(request))
        # At once on this gateway; the others notice the store's revision within their poll interval.
        authenticator.invalidate()
        return revoked

    @app.post(
        "/api/v1/keys/{key_id}/rotate",
        response_model=CreatedKey,
        status_code=201,
        summary="Revoke a key and create its successor (same name, owner, scopes, limits, expiry)",
    )
    async def rotate_key(key_id: str, request: Request) -> CreatedKey:
        if _own(request) is not None:
            raise _own_refused("rotating needs an admin key")
        rotated = await asyncio.to_thread(admin.rotate, key_id, _actor(request))
        authenticator.invalidate()
        return rotated

    add_permission_routes(app, permissions, _actor)
    add_promotion_routes(app, promotions, _identity)
    if webhooks is not None:
        add_webhook_routes(app, webhooks, _actor)

    @app.get("/api/v1/users", response_model=list[UserInfo], summary="List single-sign-on users")
    def list_users() -> list[UserInfo]:
        return users.list()

    @app.post(
        "/api/v1/users",
        response_model=UserInfo,
        status_code=201,
        summary="Add a user before their first sign-in (needed with HOKUSAI_OIDC_AUTO_CREATE_USERS=off)",
    )
    def add_user(spec: UserSpec, request: Request) -> UserInfo:
        return users.add(spec, _actor(request))

    @app.get("/api/v1/users/{name}", response_model=UserInfo, summary="One user")
    def get_user(name: str) -> UserInfo:
        return users.get(name)

    @app.post(
        "/api/v1/users/{name}/disable",
        response_model=UserChange,
        summary="Disable a user: their keys are revoked, their sessions end and their tokens are refused",
    )
    async def disable_user(name: str, request: Request) -> UserChange:
        changed = await asyncio.to_thread(users.disable, name, _actor(request))
        authenticator.invalidate()
        return changed

    @app.post("/api/v1/users/{name}/enable", response_model=UserChange, summary="Enable a disabled user")
    async def enable_user(name: str, request: Request) -> UserChange:
        changed = await asyncio.to_thread(users.enable, name, _actor(request))
        authenticator.invalidate()
        return changed

    @app.post(
        VALIDATE_PATH,
        response_model=Validated,
        summary="Validate a key for a service (the auth-service contract)",
        responses={401: {"description": "Bad key"}, 403: {"description": "Key not allowed for service_id"}},
    )
    async def validate(body: ValidateRequest, request: Request) -> Validated:
        # The scope's client is the caller as the trusted proxies report it (gateway/app.py).
        caller = request.client.host if request.client else "-"
        client = throttle_address(body.client_ip, caller, proxies)
        presented = ""
        try:
            presented = presented_key(request.scope["headers"])
            identity = await guard.authenticate(authenticator, presented, client)
        except Refusal as error:
            await guard.refused(client, "POST", VALIDATE_PATH, keys.hint(presented), error)
            raise
        denied = service_denied(identity, body.service_id) if body.service_id is not None else None
        if denied is not None:
            await guard.refused(client, "POST", VALIDATE_PATH, identity.key_id, denied)
            raise denied
        return Validated(
            key_id=identity.key_id,
            name=identity.name,
            user_id=identity.user_id,
            scopes=list(identity.scopes),
            service_id=body.service_id,
            service_ids=list(identity.service_ids),
            rate_limit_per_minute=identity.rate_limit_per_minute,
            rate_limit_per_hour=identity.rate_limit_per_hour,
            expires_at=identity.expires_at,
        )

    return app
