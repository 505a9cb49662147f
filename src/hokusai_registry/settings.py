"""One validated settings object, read from flags and environment variables at start-up.

Every setting has exactly one environment variable and at most one flag; `docs/configuration.md` is
generated from this class (`hokusai-registry config-reference`), so the reference cannot drift.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hokusai_registry.core.net import is_internal_host, is_unspecified, redact_url, same_machine
from hokusai_registry.policy.forwarding import TrustedProxies
from hokusai_registry.policy.keys import SERVICE_ID, parse_duration


def _listed(value: str) -> tuple[str, ...]:
    """A comma-separated setting as its non-empty items."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


class ConfigError(Exception):
    """A setting is missing or wrong; the message names the variable and the fix."""


def _setting(default: Any, env: str, flag: str | None, description: str) -> Any:
    extra: dict[str, Any] = {"env": env}
    if flag:
        extra["flag"] = flag
    return Field(default, validation_alias=env, description=description, json_schema_extra=extra)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(validate_by_name=True, validate_by_alias=True, extra="ignore")

    data_dir: Path = _setting(
        Path("registry-data"),
        "HOKUSAI_DATA_DIR",
        "--data-dir",
        "Directory for the key store and, in `serve`, MLflow's SQLite database and artifacts.",
    )
    host: str = _setting("127.0.0.1", "HOKUSAI_HOST", "--host", "Address the gateway listens on.")
    port: int = _setting(8000, "HOKUSAI_PORT", "--port", "Port the gateway listens on (0 picks a free port).")
    workers: int = _setting(
        1,
        "HOKUSAI_WORKERS",
        "--workers",
        "Gateway worker processes sharing the port, in `serve` and `gateway`: `/metrics` counts all of "
        "them; each keeps its own key cache and, without REDIS_URL, its own rate-limit counts "
        "(`docs/deployment.md`).",
    )
    public_url: str | None = _setting(
        None,
        "HOKUSAI_PUBLIC_URL",
        "--public-url",
        "URL clients use to reach the gateway, if not `http://HOST:PORT` (for example behind a load "
        "balancer). Printed in the export lines; the gateway refuses an upstream equal to it.",
    )
    mlflow_server_url: str | None = _setting(
        None,
        "MLFLOW_SERVER_URL",
        "--mlflow-url",
        "Internal URL of the MLflow server the gateway forwards to (`gateway` requires it; `serve` sets "
        "it to the MLflow it starts). Must not point back at the gateway.",
    )
    upstream_api_prefix: Literal["api", "ajax-api"] = _setting(
        "api",
        "MLFLOW_UPSTREAM_API_PREFIX",
        "--upstream-api-prefix",
        "`ajax-api` translates client `/api/<v>/...` paths to `/ajax-api/<v>/...` for an upstream MLflow "
        "that only serves UI-style paths. Chosen by configuration only, never by host name.",
    )
    log_format: Literal["text", "json"] = _setting(
        "text",
        "LOG_FORMAT",
        "--log-format",
        "`json` writes one JSON object per log line (access lines included).",
    )
    debug: bool = _setting(
        False,
        "MLFLOW_PROXY_DEBUG",
        "--debug",
        "Debug logging: each request's path rewrite, forwarded headers (credentials redacted) and upstream "
        "timing.",
    )
    key_store_url: str | None = _setting(
        None,
        "DATABASE_URL",
        "--database-url",
        "The key store's database: `postgresql://USER:PASSWORD@HOST:5432/DB` (shared by all gateway "
        "replicas; migrate it with `hokusai-registry db upgrade`) or any SQLAlchemy URL. Default: "
        "`sqlite:///DATA_DIR/keys.db`, migrated automatically.",
    )
    key_environment: Literal["live", "test"] = _setting(
        "live",
        "HOKUSAI_KEY_ENVIRONMENT",
        "--environment",
        "Environment written into new keys: `hk_live_...` or `hk_test_...`.",
    )
    key_cache_ttl: float = _setting(
        60.0,
        "HOKUSAI_KEY_CACHE_TTL",
        None,
        "Seconds a successful key check is reused in-process before the key store is asked again.",
    )
    key_revision_poll_interval: float = _setting(
        1.0,
        "HOKUSAI_KEY_REVISION_POLL_INTERVAL",
        None,
        "Seconds between checks for key changes made by other processes (a revoked key stops working "
        "within this interval).",
    )
    last_used_interval: float = _setting(
        30.0,
        "HOKUSAI_LAST_USED_INTERVAL",
        None,
        "Seconds between batched writes of keys' last use to the key store (one write per interval, not "
        "one per request).",
    )
    session_idle_timeout: float = _setting(
        1800.0,
        "HOKUSAI_SESSION_IDLE_TIMEOUT",
        None,
        "Seconds a browser session (MLflow UI, `/admin/keys`) lives without use; last use is recorded at "
        "most once a minute, so the end is exact to that.",
    )
    session_max_age: float = _setting(
        43200.0,
        "HOKUSAI_SESSION_MAX_AGE",
        None,
        "Seconds a browser session lives at most after sign-in, however active (sooner if its key expires "
        "or is revoked).",
    )
    service_id: str = _setting(
        "mlflow",
        "AUTH_SERVICE_ID",
        "--service-id",
        "This gateway's service id: keys restricted to other service ids are refused here, and it is "
        "sent to the auth service in remote mode.",
    )
    auth_service_url: str | None = _setting(
        None,
        "AUTH_SERVICE_URL",
        "--auth-service-url",
        "Validate keys through this auth service (`POST <url>/api/v1/keys/validate`, e.g. another "
        "Hokusai gateway) instead of the local key store.",
    )
    auth_service_timeout: float = _setting(
        5.0, "AUTH_SERVICE_TIMEOUT", None, "Seconds to wait for the auth service before answering 503."
    )
    rate_limit_per_minute: int = _setting(
        0,
        "HOKUSAI_RATE_LIMIT_PER_MINUTE",
        None,
        "Requests per minute allowed per key unless the key sets its own limit; 0 means unlimited.",
    )
    rate_limit_per_hour: int = _setting(
        0,
        "HOKUSAI_RATE_LIMIT_PER_HOUR",
        None,
        "Requests per hour allowed per key unless the key sets its own limit; 0 means unlimited.",
    )
    auth_failure_limit: int = _setting(
        30,
        "HOKUSAI_AUTH_FAILURE_LIMIT",
        None,
        "Failed authentications per minute from one client address before its requests get 429; 0 "
        "disables the throttle.",
    )
    redis_url: str | None = _setting(
        None,
        "REDIS_URL",
        "--redis-url",
        "Redis for rate-limit counters shared by all gateway replicas (`redis://host:6379/0`). Without "
        "it, or while it is unreachable, each process counts on its own.",
    )
    audit_log: str = _setting(
        "stderr",
        "HOKUSAI_AUDIT_LOG",
        "--audit-log",
        "Where audit events go as JSON lines: `stderr`, or a file path (appended to).",
    )
    upstream_connect_timeout: float = _setting(
        10.0, "HOKUSAI_UPSTREAM_CONNECT_TIMEOUT", None, "Seconds to open a connection to MLflow."
    )
    upstream_read_timeout: float = _setting(
        115.0,
        "HOKUSAI_UPSTREAM_READ_TIMEOUT",
        None,
        "Seconds to wait for MLflow's answer on API routes before answering 504 (just under the "
        "MLflow client's 120 s, so the client sees the gateway's explanation).",
    )
    artifact_read_timeout: float = _setting(
        600.0,
        "HOKUSAI_ARTIFACT_READ_TIMEOUT",
        None,
        "Seconds of silence allowed between chunks on artifact transfers, both ways: from MLflow (then 504) "
        "and from a client uploading (then 408). No total deadline; 0 disables.",
    )
    max_api_body_mb: int = _setting(
        16,
        "HOKUSAI_MAX_API_BODY_MB",
        None,
        "Largest request body, in MiB, for MLflow API calls (JSON, GraphQL, traces; counted after "
        "decompression): larger ones get 413. Artifact uploads have no limit; downloads, listings and "
        "deletions take no body.",
    )
    body_idle_timeout: float = _setting(
        30.0,
        "HOKUSAI_BODY_IDLE_TIMEOUT",
        None,
        "Seconds of silence allowed while an API request body arrives (the gateway reads these whole "
        "before contacting MLflow): then 408 and the connection is closed.",
    )
    body_min_rate_kb: int = _setting(
        16,
        "HOKUSAI_BODY_MIN_RATE_KB",
        None,
        "Slowest average rate, in KiB/s, at which an API request body may arrive: after "
        "HOKUSAI_BODY_IDLE_TIMEOUT, each KiB received buys 1/rate s more, so a body dripped byte by byte "
        "cannot hold its memory for long; then 408 and the connection is closed.",
    )
    body_buffer_mb: int = _setting(
        32,
        "HOKUSAI_BODY_BUFFER_MB",
        None,
        "MiB of API request bodies the gateway holds in memory at once, over all requests: a body that "
        "would go over it gets 503 with Retry-After (the MLflow client retries). At least "
        "HOKUSAI_MAX_API_BODY_MB.",
    )
    graphql_max_tokens: int = _setting(
        2000,
        "HOKUSAI_GRAPHQL_MAX_TOKENS",
        None,
        "Largest GraphQL query, in tokens, the gateway parses to tell a query from a mutation (the MLflow "
        "UI's are about 150): larger ones get 400.",
    )
    direct_artifact_transfers: bool = _setting(
        False,
        "HOKUSAI_DIRECT_ARTIFACT_TRANSFERS",
        "--direct-artifact-transfers",
        "Let clients move artifact bytes straight to and from the bucket through presigned URLs (S3, GCS, "
        "Azure destinations): faster for large files, but around the gateway and only where clients reach "
        "the bucket. Off: every byte streams through the gateway.",
    )
    max_header_kb: int = _setting(
        64,
        "HOKUSAI_MAX_HEADER_KB",
        None,
        "Largest request line, and largest block of request headers, in KiB as sent: the gateway stops "
        "reading there and answers 414 (request line) or 431 (headers), then closes the connection.",
    )
    header_timeout: float = _setting(
        30.0,
        "HOKUSAI_HEADER_TIMEOUT",
        None,
        "Seconds a client has to send a request's line and headers, from the head's first byte; then 408 "
        "and the connection closes.",
    )
    keepalive_timeout: int = _setting(
        5,
        "HOKUSAI_KEEPALIVE_TIMEOUT",
        None,
        "Seconds a connection may stay silent, new or between requests, before the gateway closes it "
        "(behind a load balancer, set it above the balancer's idle timeout).",
    )
    upstream_pool_size: int = _setting(
        256, "HOKUSAI_UPSTREAM_POOL_SIZE", None, "Maximum open connections to MLflow (one shared pool)."
    )
    health_check_timeout: float = _setting(
        5.0, "HOKUSAI_HEALTH_CHECK_TIMEOUT", None, "Deadline in seconds for each MLflow health check."
    )
    health_cache_seconds: float = _setting(
        5.0,
        "HOKUSAI_HEALTH_CACHE_SECONDS",
        None,
        "Seconds a health result is reused, so frequent health calls cannot load MLflow.",
    )
    forwarded_allow_ips: str = _setting(
        "127.0.0.1",
        "HOKUSAI_FORWARDED_ALLOW_IPS",
        None,
        "Comma-separated addresses and CIDR networks of the proxies in front of the gateway (behind a load "
        "balancer: its subnets). From them, the client is the rightmost `X-Forwarded-For` address that is "
        "not one of them, and `X-Forwarded-Proto` is believed; empty trusts nobody. `*` is refused.",
    )
    mlflow_host: str = _setting(
        "127.0.0.1",
        "HOKUSAI_MLFLOW_HOST",
        None,
        "Address MLflow listens on in `serve` and `mlflow` (the `mlflow` command's `--host`).",
    )
    mlflow_port: int | None = _setting(
        None,
        "HOKUSAI_MLFLOW_PORT",
        None,
        "Port MLflow listens on (the `mlflow` command's `--port`). Default: a free port in `serve`, 5000 "
        "in `mlflow`.",
    )
    mlflow_workers: int = _setting(2, "HOKUSAI_MLFLOW_WORKERS", None, "MLflow server worker processes.")
    mlflow_backend_store_uri: str | None = _setting(
        None,
        "HOKUSAI_MLFLOW_BACKEND_STORE_URI",
        "--backend-store-uri",
        "MLflow's backend store, e.g. `postgresql://USER:PASSWORD@HOST:5432/mlflow` (`serve` and `mlflow`). "
        "Default: `sqlite:///DATA_DIR/mlflow.db`.",
    )
    mlflow_artifacts_destination: str | None = _setting(
        None,
        "HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION",
        "--artifacts-destination",
        "Where MLflow stores artifacts it serves (`--artifacts-destination`). Default: `DATA_DIR/artifacts`.",
    )
    mlflow_allowed_hosts: str | None = _setting(
        None,
        "HOKUSAI_MLFLOW_ALLOWED_HOSTS",
        None,
        "MLflow's `--allowed-hosts`; set it to `NAME,NAME:*` when the gateway reaches MLflow by a DNS name.",
    )
    mlflow_kek_passphrase_file: Path | None = _setting(
        None,
        "HOKUSAI_MLFLOW_KEK_PASSPHRASE_FILE",
        None,
        "File with the passphrase MLflow encrypts its AI-gateway secrets with (`serve` and `mlflow` pass it "
        "as `MLFLOW_CRYPTO_KEK_PASSPHRASE`, which wins when already set). Default: "
        "`DATA_DIR/mlflow-kek-passphrase`, created once with a random one (mode 0600) when missing; a file "
        "named here must exist (a missing one is a start-up error, never a new passphrase).",
    )
    mlflow_startup_timeout: float = _setting(
        300.0, "HOKUSAI_MLFLOW_STARTUP_TIMEOUT", None, "Seconds `serve` waits for MLflow's `/health`."
    )
    permissions: bool = _setting(
        True,
        "HOKUSAI_PERMISSIONS",
        None,
        "Per-resource permissions (`docs/permissions.md`): MLflow's auth app decides what each owner may "
        "read and change, and accepts only requests a gateway signed. `off` keeps every `write` key able to "
        "change everything (the behaviour before permissions); gateways and MLflow must agree.",
    )
    default_permission: Literal["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"] = _setting(
        "READ",
        "HOKUSAI_DEFAULT_PERMISSION",
        None,
        "What an owner may do with a resource nobody granted them anything on (MLflow's "
        "`default_permission`, set when `serve` and `mlflow` start MLflow). `NO_PERMISSIONS` hides other "
        "owners' experiments and models completely.",
    )
    mlflow_assertion_secret_file: Path | None = _setting(
        None,
        "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE",
        None,
        "File with the secret the gateways sign MLflow requests with and MLflow checks them with (with "
        "permissions on). Default: `DATA_DIR/mlflow-assertion-secret`, created once (mode 0600) when "
        "missing; a file named here must exist. Gateway replicas and MLflow need the same file.",
    )
    mlflow_assertion_secret: SecretStr | None = _setting(
        None,
        "HOKUSAI_MLFLOW_ASSERTION_SECRET",
        None,
        "The same secret as a value, for platforms that hand secrets to containers as environment variables "
        "(ECS task secrets); wins over `HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE`. At least 16 characters; "
        "gateway replicas and MLflow need the same value.",
    )
    mlflow_auth_database_uri: str | None = _setting(
        None,
        "HOKUSAI_MLFLOW_AUTH_DATABASE_URI",
        None,
        "Database of MLflow's auth app (users, roles, grants) in `serve` and `mlflow`, e.g. "
        "`postgresql://USER:PASSWORD@HOST:5432/mlflow_auth`. Default: `sqlite:///DATA_DIR/mlflow-auth.db`.",
    )

    oidc_issuer: str | None = _setting(
        None,
        "HOKUSAI_OIDC_ISSUER",
        None,
        "Issuer URL of the identity provider people sign in with (`docs/sso.md`); its "
        "`/.well-known/openid-configuration` is read at start-up. Unset: sign-in with a key only.",
    )
    oidc_client_id: str | None = _setting(
        None,
        "HOKUSAI_OIDC_CLIENT_ID",
        None,
        "The gateway's client id at the identity provider (required with `HOKUSAI_OIDC_ISSUER`). Its "
        "redirect URI is `HOKUSAI_PUBLIC_URL` + `/login/oidc/callback`.",
    )
    oidc_client_secret: SecretStr | None = _setting(
        None,
        "HOKUSAI_OIDC_CLIENT_SECRET",
        None,
        "The client's secret (a confidential client; required with `HOKUSAI_OIDC_ISSUER`).",
    )
    oidc_display_name: str | None = _setting(
        None,
        "HOKUSAI_OIDC_DISPLAY_NAME",
        None,
        "Name on the sign-in button (`Sign in with NAME`). Default: the issuer's host name.",
    )
    oidc_scopes: str = _setting(
        "openid profile email",
        "HOKUSAI_OIDC_SCOPES",
        None,
        "Space-separated scopes asked for at sign-in (`openid` is always included); add the provider's "
        "groups scope where it needs one (for example `groups`).",
    )
    oidc_username_claim: str = _setting(
        "preferred_username",
        "HOKUSAI_OIDC_USERNAME_CLAIM",
        None,
        "Claim whose value is the user's name and owner (MLflow user); falls back to `email` when absent.",
    )
    oidc_auto_create_users: bool = _setting(
        True,
        "HOKUSAI_OIDC_AUTO_CREATE_USERS",
        None,
        "Create a user the first time someone signs in; `off` admits only users an admin created.",
    )
    oidc_groups_claim: str = _setting(
        "groups",
        "HOKUSAI_OIDC_GROUPS_CLAIM",
        None,
        "Claim listing the user's groups; on each sign-in the user's teams follow it (a team whose name "
        "is one of the groups).",
    )
    oidc_admin_groups: str = _setting(
        "",
        "HOKUSAI_OIDC_ADMIN_GROUPS",
        None,
        "Comma-separated groups whose members are admins when they sign in. Empty: nobody becomes an "
        "admin by signing in.",
    )
    oidc_user_scope: Literal["read", "write"] = _setting(
        "write",
        "HOKUSAI_OIDC_USER_SCOPE",
        None,
        "Scope of people who sign in and are not admins (their keys never exceed it).",
    )
    oidc_audience: str | None = _setting(
        None,
        "HOKUSAI_OIDC_AUDIENCE",
        None,
        "Audience (`aud`) a bearer token must carry. Default: `HOKUSAI_OIDC_CLIENT_ID`.",
    )
    jwt_issuers: str = _setting(
        "",
        "HOKUSAI_JWT_ISSUERS",
        None,
        "Comma-separated extra issuers whose signed tokens are accepted as `Authorization: Bearer` (for "
        "example a Kubernetes service-account issuer); their keys come from their discovery document.",
    )
    jwt_scope_claim: str = _setting(
        "scope",
        "HOKUSAI_JWT_SCOPE_CLAIM",
        None,
        "Claim of a bearer token holding its scopes (space-separated or a list); `mlflow.read`, "
        "`mlflow.write` and `mlflow.admin` in it map to the gateway's scopes.",
    )
    jwt_default_scope: Literal["none", "read", "write"] = _setting(
        "none",
        "HOKUSAI_JWT_DEFAULT_SCOPE",
        None,
        "Scope of a bearer token that carries no `mlflow.*` scope (for example a Kubernetes service-account "
        "token); `none` refuses such tokens.",
    )
    jwt_allow_admin: bool = _setting(
        False,
        "HOKUSAI_JWT_ALLOW_ADMIN",
        None,
        "Let a bearer token's `mlflow.admin` scope make it an admin. Off: admin rights come only from keys "
        "and from signing in as a member of `HOKUSAI_OIDC_ADMIN_GROUPS`.",
    )
    jwt_leeway: float = _setting(
        30.0,
        "HOKUSAI_JWT_LEEWAY",
        None,
        "Seconds of clock difference allowed when checking a bearer token's `exp` and `nbf` (at most 60).",
    )
    max_key_lifetime: str = _setting(
        "90d",
        "HOKUSAI_MAX_KEY_LIFETIME",
        None,
        "Longest lifetime of a key people create for themselves (`My keys`, `POST /api/v1/keys` as a "
        "non-admin): such keys must expire. `90d`, `12h` or `30m`.",
    )
    webhook_timeout: float = _setting(
        10.0,
        "HOKUSAI_WEBHOOK_TIMEOUT",
        None,
        "Seconds a webhook receiver has to answer one delivery attempt (connecting included); no answer in "
        "time is a failed attempt (`docs/webhooks.md`).",
    )
    webhook_max_attempts: int = _setting(
        10,
        "HOKUSAI_WEBHOOK_MAX_ATTEMPTS",
        None,
        "Attempts per webhook delivery before it is marked failed (1: no retries).",
    )
    webhook_retry_base: float = _setting(
        5.0,
        "HOKUSAI_WEBHOOK_RETRY_BASE",
        None,
        "Seconds before the first retry of a failed delivery; each later retry waits twice as long (±20% "
        "jitter), at most `HOKUSAI_WEBHOOK_RETRY_MAX`.",
    )
    webhook_retry_max: float = _setting(
        3600.0,
        "HOKUSAI_WEBHOOK_RETRY_MAX",
        None,
        "Longest wait in seconds between two attempts of a delivery (a receiver's `Retry-After` is honoured "
        "up to this).",
    )
    webhook_poll_interval: float = _setting(
        2.0,
        "HOKUSAI_WEBHOOK_POLL_INTERVAL",
        None,
        "Seconds between looks at the delivery queue for retries that came due and events other gateways "
        "queued (this gateway's own events are sent at once).",
    )
    webhook_retention_days: float = _setting(
        30.0,
        "HOKUSAI_WEBHOOK_RETENTION_DAYS",
        None,
        "Days a finished webhook delivery (delivered, failed or cancelled) and its attempts stay in the "
        "delivery log; pending ones stay until they finish.",
    )
    webhook_secret_key_file: Path | None = _setting(
        None,
        "HOKUSAI_WEBHOOK_SECRET_KEY_FILE",
        None,
        "File with the key webhook signing secrets are sealed with in the key store's database. Default: "
        "`DATA_DIR/webhook-secret-key`, created once (mode 0600) when missing; a file named here must "
        "exist. Gateway replicas sharing a database need the same file.",
    )
    webhook_secret_key: SecretStr | None = _setting(
        None,
        "HOKUSAI_WEBHOOK_SECRET_KEY",
        None,
        "The same key as a value, for platforms that hand secrets to containers as environment variables "
        "(ECS task secrets); wins over `HOKUSAI_WEBHOOK_SECRET_KEY_FILE`. At least 16 characters; every "
        "gateway replica needs the same value, kept for as long as its webhooks.",
    )

    @field_validator("key_store_url", "mlflow_backend_store_uri", "mlflow_auth_database_uri")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = urlsplit(value).scheme
        # Plain postgres URLs (as hosting providers hand them out) use the installed psycopg 3 driver.
        if scheme in ("postgres", "postgresql"):
            return "postgresql+psycopg" + value[len(scheme) :]
        if not scheme:
            raise ValueError(
                f"expected a database URL such as postgresql://HOST/DB, got {redact_url(value)!r}"
            )
        return value

    @field_validator("mlflow_assertion_secret", "webhook_secret_key")
    @classmethod
    def _assertion_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # an empty variable means unset
        if len(value.get_secret_value().strip()) < 16:
            raise ValueError("must be at least 16 characters (a random value: openssl rand -base64 32)")
        return SecretStr(value.get_secret_value().strip())

    @field_validator("oidc_issuer")
    @classmethod
    def _issuer(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected the issuer's https:// URL, got {redact_url(value)!r}")
        return value

    @field_validator("jwt_issuers")
    @classmethod
    def _issuers(cls, value: str) -> str:
        for issuer in _listed(value):
            parts = urlsplit(issuer)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected comma-separated https:// issuer URLs, got {redact_url(issuer)!r}")
        return value

    @field_validator("jwt_leeway")
    @classmethod
    def _leeway(cls, value: float) -> float:
        if not 0 <= value <= 60:
            raise ValueError("must be between 0 and 60 seconds")
        return value

    @field_validator("max_key_lifetime")
    @classmethod
    def _lifetime(cls, value: str) -> str:
        parse_duration(value)
        return value.strip()

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # an empty variable means unset
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"expected redis://HOST:PORT/DB, rediss://... or unix://PATH, got {redact_url(value)!r}"
            )
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        TrustedProxies.parse(value)
        return value

    @field_validator("service_id")
    @classmethod
    def _service_id(cls, value: str) -> str:
        if not SERVICE_ID.fullmatch(value):
            raise ValueError("must be 1-100 of A-Z a-z 0-9 . _ : - (keys limited to services name it)")
        return value

    @field_validator("rate_limit_per_minute", "rate_limit_per_hour", "auth_failure_limit")
    @classmethod
    def _limit(cls, value: int) -> int:
        if value < 0:
            raise ValueError("must be 0 (unlimited) or more")
        return value

    @field_validator(
        "workers",
        "upstream_pool_size",
        "mlflow_workers",
        "max_api_body_mb",
        "max_header_kb",
        "keepalive_timeout",
        "graphql_max_tokens",
        "body_buffer_mb",
        "body_min_rate_kb",
        "webhook_max_attempts",
    )
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1")
        return value

    @field_validator(
        "upstream_connect_timeout",
        "upstream_read_timeout",
        "health_check_timeout",
        "key_revision_poll_interval",
        "mlflow_startup_timeout",
        "last_used_interval",
        "auth_service_timeout",
        "session_idle_timeout",
        "session_max_age",
        "header_timeout",
        "body_idle_timeout",
        "webhook_timeout",
        "webhook_retry_base",
        "webhook_retry_max",
        "webhook_poll_interval",
        "webhook_retention_days",
    )
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0 seconds")
        return value

    @field_validator("key_cache_ttl", "health_cache_seconds", "artifact_read_timeout")
    @classmethod
    def _not_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative")
        return value

    @field_validator("body_buffer_mb")
    @classmethod
    def _room_for_one_body(cls, value: int, info: ValidationInfo) -> int:
        largest = info.data.get("max_api_body_mb")
        if largest is not None and value < largest:
            raise ValueError(
                f"must be at least HOKUSAI_MAX_API_BODY_MB ({largest}), or no such body could be read"
            )
        return value

    @field_validator("mlflow_server_url", "public_url", "auth_service_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL with a host, got {redact_url(value)!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _oidc_client(self) -> Settings:
        if self.oidc_issuer and not (self.oidc_client_id and self.oidc_client_secret):
            raise ValueError(
                "HOKUSAI_OIDC_ISSUER needs HOKUSAI_OIDC_CLIENT_ID and HOKUSAI_OIDC_CLIENT_SECRET (the "
                "gateway's client at the identity provider; docs/sso.md)"
            )
        if self.oidc_issuer and self.auth_service_url:
            raise ValueError(
                "HOKUSAI_OIDC_ISSUER needs this gateway's own key store (the keys behind signed-in "
                "sessions live there): unset AUTH_SERVICE_URL, or sign people in at the auth service"
            )
        if self.trusted_jwt_issuers and not self.token_audience:
            raise ValueError(
                "HOKUSAI_JWT_ISSUERS needs HOKUSAI_OIDC_AUDIENCE: the audience its tokens must carry"
            )
        return self

    @classmethod
    def load(cls, **overrides: Any) -> Settings:
        """Environment first, then any flag that was given; a bad value becomes a ConfigError."""
        given = {name: value for name, value in overrides.items() if value is not None}
        try:
            return cls(**given)
        except ValidationError as exc:
            problems = []
            for error in exc.errors():
                message = error["msg"].removeprefix("Value error, ")
                if not error["loc"]:  # a check across settings names them itself
                    problems.append(message)
                    continue
                name = str(error["loc"][0])
                field = cls.model_fields.get(name)
                env = (field.json_schema_extra or {}).get("env", name) if field else name  # type: ignore[union-attr]
                problems.append(f"{env}: {message}")
            raise ConfigError("invalid configuration: " + "; ".join(problems)) from None

    @property
    def oidc_configured(self) -> bool:
        return self.oidc_issuer is not None

    @property
    def admin_groups(self) -> tuple[str, ...]:
        return _listed(self.oidc_admin_groups)

    @property
    def sso_name(self) -> str:
        """The identity provider's name on the sign-in button."""
        return self.oidc_display_name or urlsplit(self.oidc_issuer or "").hostname or ""

    @property
    def trusted_jwt_issuers(self) -> tuple[str, ...]:
        """Every issuer whose bearer tokens are accepted: the sign-in issuer first, then the extra ones."""
        listed = _listed(self.jwt_issuers)
        return tuple(dict.fromkeys(((self.oidc_issuer,) if self.oidc_issuer else ()) + listed))

    @property
    def token_audience(self) -> str | None:
        return self.oidc_audience or self.oidc_client_id

    @property
    def max_key_lifetime_delta(self) -> dt.timedelta:
        return parse_duration(self.max_key_lifetime)

    @property
    def assertion_secret_path(self) -> Path:
        return self.mlflow_assertion_secret_file or self.data_dir / "mlflow-assertion-secret"

    @property
    def webhook_secret_key_path(self) -> Path:
        return self.webhook_secret_key_file or self.data_dir / "webhook-secret-key"

    @property
    def trusted_proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.forwarded_allow_ips)

    @property
    def resolved_key_store_url(self) -> str:
        return self.key_store_url or f"sqlite:///{self.data_dir.resolve() / 'keys.db'}"

    @property
    def gateway_url(self) -> str:
        if self.public_url:
            return self.public_url
        # A gateway listening on every address is reached on loopback from here.
        host = "127.0.0.1" if is_unspecified(self.host) else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def check_data_dir(self) -> None:
        """The data directory exists (created if missing) and this user can write to it."""
        path = self.data_dir
        if path.exists() and not path.is_dir():
            raise ConfigError(f"HOKUSAI_DATA_DIR ({path}) is not a directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"HOKUSAI_DATA_DIR ({path}) cannot be created: {exc.strerror}") from None
        if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
            raise ConfigError(f"HOKUSAI_DATA_DIR ({path}) is not readable and writable by this user")

    def upstream_warnings(self, upstream: str) -> list[str]:
        """Questionable but workable choices, logged at start-up."""
        parts = urlsplit(upstream)
        if parts.scheme == "http" and not is_internal_host(parts.hostname or ""):
            return [
                f"MLFLOW_SERVER_URL ({redact_url(upstream)}) is plain http to a public address: requests "
                "and their identity headers cross the network unencrypted. Use https, or keep MLflow on a "
                "private network reachable only from the gateway."
            ]
        return []

    def require_upstream(self) -> str:
        if not self.mlflow_server_url:
            raise ConfigError(
                "MLFLOW_SERVER_URL is not set: pass --mlflow-url http://<internal-mlflow>:5000 (the private "
                "address of `mlflow server --serve-artifacts`, never the gateway's public URL)"
            )
        self.check_upstream_is_not_self(self.mlflow_server_url)
        return self.mlflow_server_url

    def check_upstream_is_not_self(self, upstream: str) -> None:
        """Refuse the configuration that made every artifact upload 404: the gateway forwarding to itself."""
        up = urlsplit(upstream)
        up_port = up.port or (443 if up.scheme == "https" else 80)
        if self.public_url:
            pub = urlsplit(self.public_url)
            pub_port = pub.port or (443 if pub.scheme == "https" else 80)
            if (up.hostname or "").lower() == (pub.hostname or "").lower() and up_port == pub_port:
                raise ConfigError(
                    f"MLFLOW_SERVER_URL ({redact_url(upstream)}) is the gateway's own public URL "
                    f"(HOKUSAI_PUBLIC_URL={self.public_url}); requests would loop through the gateway. "
                    "Point it at the internal MLflow address instead."
                )
        if up_port == self.port and same_machine(up.hostname or "", self.host):
            raise ConfigError(
                f"MLFLOW_SERVER_URL ({redact_url(upstream)}) points at the gateway's own listener "
                f"({self.host}:{self.port}); requests would loop through the gateway. "
                "Point it at the internal MLflow address instead."
            )


def reference_markdown() -> str:
    """The configuration reference in `docs/configuration.md`, generated from the fields above."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `hokusai_registry.settings.Settings` by `hokusai-registry config-reference`;",
        "a test fails when this file is out of date. Flags win over environment variables.",
        "",
        "| Setting | Flag | Environment variable | Default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = f"`{extra['flag']}`" if "flag" in extra else "—"
        default = "—" if field.default is None else f"`{field.default}`"
        lines.append(f"| `{name}` | {flag} | `{extra['env']}` | {default} | {field.description} |")
    return "\n".join(lines) + "\n"
