"""Assembling the gateway from its settings: every component built once and wired together."""

from __future__ import annotations

import secrets
from pathlib import Path

from hokusai_registry.admin.api import build_keys_api
from hokusai_registry.admin.pages import WebPages
from hokusai_registry.admin.permissions import PermissionAdmin
from hokusai_registry.admin.promotions import Promotions
from hokusai_registry.admin.registry import Registry
from hokusai_registry.admin.service import KeyAdmin, OwnKeys
from hokusai_registry.admin.sso import SingleSignOn, SsoRules
from hokusai_registry.admin.users import UserAdmin
from hokusai_registry.admin.webhooks import WebhookAdmin
from hokusai_registry.auth.authenticator import Authenticator, KeySource
from hokusai_registry.auth.bearer_tokens import BearerTokens, TokenRules
from hokusai_registry.auth.caller import Access
from hokusai_registry.auth.issuers import Issuers
from hokusai_registry.auth.local_keys import LocalKeys
from hokusai_registry.auth.oidc import OidcSignIn
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.auth.remote_keys import RemoteKeys
from hokusai_registry.auth.secret_files import SecretFileError, read_secret
from hokusai_registry.auth.sessions import Sessions
from hokusai_registry.auth.throttle import Guard
from hokusai_registry.core.net import redact_url
from hokusai_registry.events.hub import Events
from hokusai_registry.events.outbox import Outbox
from hokusai_registry.events.sealing import Sealer
from hokusai_registry.events.worker import DeliveryWorker, Retries
from hokusai_registry.gateway.app import Gateway
from hokusai_registry.gateway.protection import ProtectionGuard
from hokusai_registry.ops.events import RegistryEvents
from hokusai_registry.ops.health import Health
from hokusai_registry.ops.metrics import Metrics
from hokusai_registry.settings import ConfigError, Settings
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.protection_store import ProtectionStore
from hokusai_registry.store.session_store import SessionStore
from hokusai_registry.store.user_store import UserStore
from hokusai_registry.store.webhook_store import WebhookStore
from hokusai_registry.transport.bodies import RequestBodies
from hokusai_registry.transport.forward import Forwarder


def assertion_secret(settings: Settings) -> bytes:
    """The key gateways sign MLflow requests with (permissions on): HOKUSAI_MLFLOW_ASSERTION_SECRET if set,
    else the file's; the default file is created on first use, by whichever of MLflow and the gateway
    starts first."""
    if settings.mlflow_assertion_secret is not None:
        return settings.mlflow_assertion_secret.get_secret_value().encode()
    try:
        return read_secret(
            settings.assertion_secret_path,
            setting="HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE",
            create=settings.mlflow_assertion_secret_file is None,
            purpose="the gateways sign requests to MLflow with the key in it, and MLflow accepts no others",
        ).encode()
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None


def webhook_sealer(settings: Settings) -> Sealer:
    """What webhook secrets are sealed with: HOKUSAI_WEBHOOK_SECRET_KEY if set, else the key in
    HOKUSAI_WEBHOOK_SECRET_KEY_FILE (the default file is created on first use)."""
    if settings.webhook_secret_key is not None:
        return Sealer(settings.webhook_secret_key.get_secret_value())
    try:
        return Sealer(
            read_secret(
                settings.webhook_secret_key_path,
                setting="HOKUSAI_WEBHOOK_SECRET_KEY_FILE",
                create=settings.webhook_secret_key_file is None,
                purpose="webhook signing secrets are sealed with the key in it; without it they are lost",
            )
        )
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None


def build_events(settings: Settings, store: KeyStore, metrics: Metrics) -> tuple[Events, WebhookAdmin]:
    """The outbox and delivery worker of registry events, and the webhooks' administration."""
    webhooks = WebhookStore(store)
    sealer = webhook_sealer(settings)
    worker = DeliveryWorker(
        webhooks,
        sealer,
        timeout=settings.webhook_timeout,
        retries=Retries(
            max_attempts=settings.webhook_max_attempts,
            base=settings.webhook_retry_base,
            cap=settings.webhook_retry_max,
        ),
        poll_interval=settings.webhook_poll_interval,
        retention_days=settings.webhook_retention_days,
        counted=metrics.webhook_attempt,
    )
    outbox = Outbox(webhooks, max_attempts=settings.webhook_max_attempts, written=worker.wake)
    return Events(outbox, worker), WebhookAdmin(webhooks, sealer, worker)


def build_gateway(
    settings: Settings,
    store: KeyStore,
    upstream_url: str,
    events: RegistryEvents | None = None,
    *,
    metrics_dir: Path | None = None,
) -> Gateway:
    """The gateway. Promotions and overrides are told to `events` when given (tests listen there), else
    to the webhooks, as every other registry event is. `metrics_dir`: where the workers' metrics meet,
    when this is one of several (`ops.metrics.shared_directory`)."""
    forwarder = Forwarder(
        upstream_url,
        api_prefix=settings.upstream_api_prefix,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_read_timeout,
        transfer_idle_timeout=settings.artifact_read_timeout,
        pool_size=settings.upstream_pool_size,
        mark=store.gateway_mark() if not settings.auth_service_url else secrets.token_hex(12),
        assertion_secret=assertion_secret(settings) if settings.permissions else None,
    )
    source: KeySource
    if settings.auth_service_url:
        source = RemoteKeys(
            settings.auth_service_url, service_id=settings.service_id, timeout=settings.auth_service_timeout
        )
    else:
        source = LocalKeys(
            store,
            poll_interval=settings.key_revision_poll_interval,
            last_used_interval=settings.last_used_interval,
        )
    authenticator = Authenticator(source, cache_ttl=settings.key_cache_ttl)
    health = Health(
        forwarder,
        authenticator.check_store,
        timeout=settings.health_check_timeout,
        cache_seconds=settings.health_cache_seconds,
        upstream_url=upstream_url,
        api_prefix=settings.upstream_api_prefix,
        public_url=settings.public_url,
    )
    guard = Guard(
        RateLimits(
            per_minute=settings.rate_limit_per_minute,
            per_hour=settings.rate_limit_per_hour,
            auth_failures_per_minute=settings.auth_failure_limit,
            redis_url=settings.redis_url,
        )
    )
    issuers = Issuers(settings.trusted_jwt_issuers)
    access = Access(
        authenticator,
        guard,
        Sessions(
            SessionStore(store.engine),
            idle_timeout=settings.session_idle_timeout,
            max_age=settings.session_max_age,
        ),
        bearer_tokens(settings, store, issuers),
        service_id=settings.service_id,
        public_url=settings.public_url,
    )
    keys_elsewhere = settings.auth_service_url is not None
    proxies = settings.trusted_proxies
    key_admin = KeyAdmin(store, settings.key_environment)
    # Teams and grants: MLflow's, changed through the forwarder as MLflow's administrator.
    permissions = PermissionAdmin(forwarder)
    oidc, sso = single_sign_on(settings, store, issuers, permissions)
    own_keys = OwnKeys(store, settings.key_environment, settings.max_key_lifetime_delta)
    users = UserAdmin(store)
    metrics = Metrics(metrics_dir)
    webhook_events, webhooks = build_events(settings, store, metrics)
    # Protected aliases and promotions: rules and requests beside the keys, changes on MLflow.
    sink = events if events is not None else webhook_events
    protections = ProtectionStore(store.engine)
    registry = Registry(forwarder)
    promotions = Promotions(protections, registry, permissions, sink)
    return Gateway(
        access=access,
        pages=WebPages(
            access,
            None if keys_elsewhere else key_admin,
            permissions,
            promotions,
            public_url=settings.public_url,
            oidc=oidc,
            sso=sso,
            sso_name=settings.sso_name,
            own_keys=own_keys if sso is not None and not keys_elsewhere else None,
            users=users if not keys_elsewhere else None,
        ),
        forwarder=forwarder,
        bodies=RequestBodies(
            max_api_body=settings.max_api_body_mb << 20,
            buffer_limit=settings.body_buffer_mb << 20,
            idle_timeout=settings.body_idle_timeout,
            min_rate=settings.body_min_rate_kb * 1024,
        ),
        health=health,
        metrics=metrics,
        keys_api=build_keys_api(
            key_admin,
            authenticator,
            guard,
            proxies,
            permissions,
            own_keys,
            users,
            promotions,
            webhooks,
        ),
        keys_elsewhere=keys_elsewhere,
        direct_transfers=settings.direct_artifact_transfers,
        public_url=settings.public_url,
        graphql_max_tokens=settings.graphql_max_tokens,
        proxies=proxies,
        events=webhook_events,
        protection=ProtectionGuard(protections, registry, sink),
    )


def single_sign_on(
    settings: Settings, store: KeyStore, issuers: Issuers, permissions: PermissionAdmin
) -> tuple[OidcSignIn | None, SingleSignOn | None]:
    """The browser sign-in at the identity provider, when one is configured."""
    if not settings.oidc_issuer or not settings.oidc_client_id or not settings.oidc_client_secret:
        return None, None
    oidc = OidcSignIn(
        issuers,
        issuer=settings.oidc_issuer,
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        scopes=settings.oidc_scopes,
        leeway=settings.jwt_leeway,
    )
    rules = SsoRules(
        username_claim=settings.oidc_username_claim,
        groups_claim=settings.oidc_groups_claim,
        admin_groups=settings.admin_groups,
        user_scope=settings.oidc_user_scope,
        create_users=settings.oidc_auto_create_users,
        environment=settings.key_environment,
    )
    return oidc, SingleSignOn(UserStore(store), store, permissions, rules)


def bearer_tokens(settings: Settings, store: KeyStore, issuers: Issuers) -> BearerTokens:
    """Bearer tokens from the trusted issuers (none trusted: every token is refused, saying why)."""
    rules = TokenRules(
        audience=settings.token_audience or "",
        leeway=settings.jwt_leeway,
        scope_claim=settings.jwt_scope_claim,
        username_claim=settings.oidc_username_claim,
        default_scope=settings.jwt_default_scope,
        allow_admin=settings.jwt_allow_admin,
        create_users=settings.oidc_auto_create_users,
        cache_ttl=settings.key_cache_ttl,
    )
    return BearerTokens(issuers, UserStore(store), rules)


def open_key_store(settings: Settings) -> KeyStore:
    """The key store, ready to use. The embedded SQLite store is migrated here; a shared database
    (several gateways) is migrated only by `hokusai-registry db upgrade`, and checked here."""
    if settings.key_store_url is None:
        settings.check_data_dir()
    store = KeyStore(settings.resolved_key_store_url)
    if store.url.startswith("sqlite"):
        store.migrate()
        return store
    try:
        current, needed = store.schema_revisions()
    except Exception as exc:
        store.close()
        raise ConfigError(
            f"DATABASE_URL ({redact_url(store.url)}) cannot be reached: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}"
        ) from None
    if current != needed:
        store.close()
        raise ConfigError(
            f"DATABASE_URL ({redact_url(store.url)}) has key-store schema {current or 'none'}, this version "
            f"needs {needed}: run `hokusai-registry db upgrade` (once, before starting the gateways)"
        )
    return store
