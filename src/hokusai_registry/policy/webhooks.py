"""Webhooks as rules (pure): the events a webhook may subscribe to, what a delivery's body and
signature are, when a failed delivery is tried again, and which URLs a webhook may have.

The body and the signature follow MLflow's own registry webhooks (`mlflow/webhooks/delivery.py`), so a
receiver written for MLflow's verifies ours unchanged: the body is `{"entity", "action", "timestamp",
"data"}`; the signature is `v1,` + base64 of HMAC-SHA256 under the webhook's secret over
`<delivery id>.<unix timestamp>.<body>`, sent with the delivery id and the timestamp in their own headers.
The delivery id stays the same on every attempt (receivers drop repeats by it); the timestamp, and so the
signature, is the attempt's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-MLflow-Signature"
TIMESTAMP_HEADER = "X-MLflow-Timestamp"
DELIVERY_ID_HEADER = "X-MLflow-Delivery-Id"
EVENT_HEADER = "X-Hokusai-Event"
SIGNATURE_VERSION = "v1"

# Registry writes the gateway sees on the way to MLflow (MLflow's names where MLflow has the event).
REGISTERED_MODEL_CREATED = "registered_model.created"
MODEL_VERSION_CREATED = "model_version.created"
ALIAS_CREATED = "model_version_alias.created"
ALIAS_DELETED = "model_version_alias.deleted"
STAGE_TRANSITIONED = "model_version.stage_transitioned"
# Promotions (protected aliases): the gateway's own workflow.
PROMOTION_REQUESTED = "promotion.requested"
PROMOTION_APPROVED = "promotion.approved"
PROMOTION_REJECTED = "promotion.rejected"
PROMOTION_APPLIED = "promotion.applied"
PROMOTION_CANCELLED = "promotion.cancelled"
PROMOTION_STALE = "promotion.stale"
ALIAS_OVERRIDDEN = "protection.overridden"
# Sent only by `webhooks test`.
TEST = "webhook.test"

EVENTS: dict[str, str] = {
    REGISTERED_MODEL_CREATED: "a registered model was created",
    MODEL_VERSION_CREATED: "a model version was created (registered)",
    ALIAS_CREATED: "an alias was set on a model version (created or moved)",
    ALIAS_DELETED: "an alias was deleted",
    STAGE_TRANSITIONED: "a model version's legacy stage was changed",
    PROMOTION_REQUESTED: "a promotion (an alias move on a protected alias) was requested",
    PROMOTION_APPROVED: "a promotion request got an approval",
    PROMOTION_REJECTED: "a promotion request was rejected",
    PROMOTION_APPLIED: "a promotion was applied: the alias moved",
    PROMOTION_CANCELLED: "a promotion request was cancelled by its requester",
    PROMOTION_STALE: "a promotion request went stale: its alias moved or its version changed meanwhile",
    ALIAS_OVERRIDDEN: "an admin key moved or removed a protected alias directly",
}
ALL_EVENTS = "*"
MAX_URL = 2000
MIN_SECRET = 16


def entity_action(event: str) -> tuple[str, str]:
    """MLflow's `entity` and `action` of an event name (`model_version_alias.created`)."""
    entity, _, action = event.rpartition(".")
    return entity, action


def parse_events(given: str | list[str]) -> tuple[str, ...]:
    """The events a webhook subscribes to, from `a,b` or a list: each known, or `*` for all. ValueError
    naming the unknown ones and the known."""
    items = given.split(",") if isinstance(given, str) else given
    events = tuple(dict.fromkeys(item.strip() for item in items if item.strip()))
    if not events:
        raise ValueError(f"name at least one event: {', '.join(EVENTS)} (or {ALL_EVENTS} for all)")
    if ALL_EVENTS in events:
        return (ALL_EVENTS,)
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        raise ValueError(
            f"unknown event{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; known: "
            f"{', '.join(EVENTS)} (or {ALL_EVENTS} for all)"
        )
    return events


def subscribed(events: tuple[str, ...], event: str) -> bool:
    """Whether a webhook with these events gets `event` (a test goes to every webhook)."""
    return event == TEST or ALL_EVENTS in events or event in events


def check_url(url: str) -> str:
    """A webhook URL: http or https with a host, no credentials in it (they would be shown by `webhooks
    list` and in logs; the signature is what proves the sender). ValueError otherwise."""
    url = url.strip()
    if len(url) > MAX_URL:
        raise ValueError(f"the URL is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"the URL must start with http:// or https://, not {parts.scheme or 'nothing'}")
    if not parts.hostname:
        raise ValueError("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            "the URL holds a user name or password, which `webhooks list` would show; let the receiver "
            "check the signature instead"
        )
    if port == 0:
        raise ValueError("the URL's port must not be 0")
    if parts.fragment:
        raise ValueError("the URL must not have a #fragment")
    return url


def check_secret(secret: str) -> str:
    secret = secret.strip()
    if len(secret) < MIN_SECRET:
        raise ValueError(f"the secret must be at least {MIN_SECRET} characters")
    if len(secret) > 1000:
        raise ValueError("the secret must be at most 1000 characters")
    if not secret.isprintable():
        raise ValueError("the secret must be printable text")
    return secret


def envelope(event: str, data: Mapping[str, object], timestamp: str) -> str:
    """The JSON body of every delivery of an event that happened at `timestamp` (ISO 8601, UTC): MLflow's
    envelope, and the event's full name beside it."""
    entity, action = entity_action(event)
    return json.dumps(
        {"entity": entity, "action": action, "timestamp": timestamp, "data": dict(data), "event": event},
        default=str,
        separators=(",", ":"),
    )


def sign(secret: str, delivery_id: str, timestamp: str, body: str) -> str:
    """The signature header's value: `v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`."""
    signed = f"{delivery_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).digest()
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def verify(
    secret: str, delivery_id: str, timestamp: str, body: str, header: str, *, now: float, tolerance: float
) -> bool:
    """What a receiver checks: the signature (any of several, space-separated) and a timestamp within
    `tolerance` seconds of `now` (replayed deliveries are refused)."""
    try:
        if abs(now - int(timestamp)) > tolerance:
            return False
    except ValueError:
        return False
    expected = sign(secret, delivery_id, timestamp, body)
    return any(hmac.compare_digest(expected, given) for given in header.split())


def retry_delay(attempt: int, *, base: float, cap: float, jitter: float, random: float) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 = the first): `base` doubled for each
    attempt before, at most `cap`, spread by ±`jitter` (a fraction) with `random` in [0, 1) so that the
    retries of many deliveries do not arrive at once."""
    delay: float = min(cap, base * 2.0 ** min(max(attempt - 1, 0), 60))
    return max(0.0, delay * (1.0 + jitter * (2.0 * random - 1.0)))


def retry_after(value: str | None, *, cap: float) -> float | None:
    """A receiver's `Retry-After` in seconds (the delta form only), at most `cap`; None when absent or not
    a number of seconds."""
    if value is None or not value.strip().isdigit():
        return None
    return min(float(value.strip()), cap)


def delivered(status: int) -> bool:
    """A 2xx answer is a delivery; anything else (redirects included: they are not followed) is retried."""
    return 200 <= status < 300
