"""Key-store tables. Changes go through a new migration in `migrations/versions/`."""

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("environment", sa.String(8), nullable=False),
    # Space-separated scope names; "admin" keys can manage keys.
    sa.Column("scopes", sa.String(64), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    # The person or system the key acts for (MLflow's user for runs it creates); NULL means the name.
    sa.Column("owner", sa.String(200), nullable=True),
    # Space-separated service ids the key may be validated for; NULL means any.
    sa.Column("service_ids", sa.String(1000), nullable=True),
    # NULL means the gateway's default limit.
    sa.Column("rate_limit_per_minute", sa.Integer, nullable=True),
    sa.Column("rate_limit_per_hour", sa.Integer, nullable=True),
    # Written in batches by the gateways (not per request), so it lags by up to the flush interval.
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    # The single-sign-on user (`users.id`) the key belongs to: keys made at sign-in and by the user
    # themselves. NULL: a key an admin issued. Disabling the user revokes all of them.
    sa.Column("sso_user_id", sa.String(32), nullable=True, index=True),
    # NULL: issued by an admin; "self": made by its user (must expire); "sign-in": stands behind a browser
    # session that began at the identity provider (never shown as a key, revoked at sign-out).
    sa.Column("purpose", sa.String(16), nullable=True),
)

# One row; its revision goes up on every key change so gateways can drop cached checks.
key_store_state = sa.Table(
    "key_store_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    # Sent upstream by every gateway on this store: a request arriving with it has looped (even through
    # another replica behind the same load balancer), while a client cannot guess it.
    sa.Column("gateway_mark", sa.String(32), nullable=True),
)

# Browser sessions of the MLflow UI and the gateway's pages. The cookie holds a random session id; only its
# SHA-256 is stored, and the key the user signed in with is kept encrypted under the id itself, so the table
# alone (a backup, a leaked dump) yields neither sessions nor keys.
ui_sessions = sa.Table(
    "ui_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("key_id", sa.String(12), nullable=False, index=True),
    sa.Column("sealed_key", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # Written at most once a minute per session, so idle expiry is exact to that.
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    # The absolute end: the session's maximum age, or the key's expiry if that comes first.
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    # For sessions begun at the identity provider: its ID token, sealed like the key, sent back as the
    # `id_token_hint` of RP-initiated logout.
    sa.Column("sealed_id_token", sa.Text, nullable=True),
)

# People and machines known through single sign-on, identified by (issuer, subject). Their name is the owner
# their requests act as (MLflow's user); it is unique, so two identities can never act as one owner. A user
# an admin added before their first sign-in has no issuer and subject yet: the first sign-in under that
# name at HOKUSAI_OIDC_ISSUER claims it.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("issuer", sa.String(1000), nullable=True),
    sa.Column("subject", sa.String(255), nullable=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("email", sa.String(320), nullable=True),
    # "person": signs in through the browser; "service": known from bearer tokens (client credentials,
    # workload identities).
    sa.Column("kind", sa.String(16), nullable=False),
    # Space-separated scopes: the most this user's keys and sessions may do, as of the last sign-in.
    sa.Column("scopes", sa.String(64), nullable=False),
    # JSON list of the groups the identity provider named at the last sign-in.
    sa.Column("groups", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("issuer", "subject", name="uq_users_issuer_subject"),
)

# Webhooks: where registry events go (`docs/webhooks.md`). The secret deliveries are signed with is kept
# sealed (AES-GCM under the gateway's webhook key, bound to the webhook's id): shown once when created,
# never listed, never logged. A removed webhook keeps its row (and its delivery log) with `removed_at`.
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("url", sa.Text, nullable=False),
    # Space-separated event names, or "*".
    sa.Column("events", sa.Text, nullable=False),
    sa.Column("sealed_secret", sa.Text, nullable=False),
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
)

# The durable delivery queue: one row per event and webhook, written when the event is emitted. A gateway
# claims a due row by setting its lease (one conditional UPDATE, so two gateways never hold it at once);
# a lease that runs out (the gateway died mid-attempt) makes the row due again: at-least-once delivery.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    # Sent as the delivery id header, the same on every attempt.
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("webhook_id", sa.String(32), nullable=False, index=True),
    sa.Column("event", sa.String(64), nullable=False),
    # The exact JSON body every attempt sends (and signs).
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # pending, delivered, failed (attempts used up), cancelled (the webhook was removed).
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(32), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

# The delivery log: one row per attempt that finished (an attempt cut short by a crash leaves none, and
# is tried again).
webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.String(36), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.String(500), nullable=True),
    sa.Column("duration_ms", sa.Float, nullable=False),
)

# Protected aliases and stages (Step 13): changes to what a rule covers need approvals. Patterns are globs.
protection_rules = sa.Table(
    "protection_rules",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("model_pattern", sa.String(250), nullable=False),
    # Exactly one of the two: an alias rule or a legacy stage rule.
    sa.Column("alias_pattern", sa.String(250), nullable=True),
    sa.Column("stage_pattern", sa.String(250), nullable=True),
    # The team whose members approve (an MLflow role); NULL: admins.
    sa.Column("approvers", sa.String(200), nullable=True),
    sa.Column("approvals", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(250), nullable=False),
)

# A request to point an alias (or move a stage) at a version; the rule's terms are copied in, so removing or
# changing the rule later does not change what a pending request needs.
promotion_requests = sa.Table(
    "promotion_requests",
    metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("model", sa.String(500), nullable=False, index=True),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("alias", sa.String(256), nullable=True),
    sa.Column("stage", sa.String(32), nullable=True),
    sa.Column("rule_id", sa.String(16), nullable=False),
    sa.Column("approvers", sa.String(200), nullable=True),
    sa.Column("approvals", sa.Integer, nullable=False),
    sa.Column("requester", sa.String(250), nullable=False),
    sa.Column("requester_key_id", sa.String(64), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    # pending, applied, rejected, cancelled, stale
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("closed_by", sa.String(250), nullable=True),
    sa.Column("note", sa.Text, nullable=True),
    # What the request was made against: the version the alias (or the stage) pointed at ("" none), and
    # the version's own stage and status. Any change makes the request stale.
    sa.Column("target_before", sa.String(32), nullable=False),
    sa.Column("version_stage", sa.String(32), nullable=False),
    sa.Column("version_status", sa.String(32), nullable=False),
)

promotion_approvals = sa.Table(
    "promotion_approvals",
    metadata,
    sa.Column("request_id", sa.String(16), nullable=False),
    sa.Column("approver", sa.String(250), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("request_id", "approver"),
)

# Every movement of an alias or stage the gateway made or let through: promotions, admin overrides and
# direct changes of unprotected ones; written in the transaction that records the change.
alias_history = sa.Table(
    "alias_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model", sa.String(500), nullable=False, index=True),
    sa.Column("alias", sa.String(256), nullable=True),
    sa.Column("stage", sa.String(32), nullable=True),
    sa.Column("version", sa.String(32), nullable=True),
    # promotion, override, direct
    sa.Column("kind", sa.String(16), nullable=False),
    # set_alias, delete_alias, transition_stage, delete_version, rename_model, delete_model, delete_workspace
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(250), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    sa.Column("requester", sa.String(250), nullable=True),
    # JSON list of approvers' names
    sa.Column("approvers", sa.Text, nullable=True),
    sa.Column("request_id", sa.String(16), nullable=True),
    sa.Column("rule_id", sa.String(16), nullable=True),
)
