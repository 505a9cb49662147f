"""Every answer the gateway makes itself: one vocabulary of refusals, rendered in one place as MLflow's
error JSON.

A refusal is a `Reason` (machine-readable, with its MLflow error code and HTTP status) and a detail for
people. The MLflow client shows `<error_code>: <message>` for a JSON body with a valid `ErrorCode` name, so
each message says what happened, that the gateway said it, and what to do; the JSON also carries
`reason`, so programs (the doctor, tests, a validating gateway) match on it and never on the English.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence

from hokusai_registry.core.asgi import Send

PRODUCT = "Hokusai Registry gateway"
# Marks responses made by the gateway, so nobody mistakes them for MLflow's (and the reverse).
ORIGIN_HEADER = (b"x-hokusai-origin", b"gateway")

# error_code -> HTTP status; only names that exist in MLflow's ErrorCode (a unit test checks them).
STATUS_BY_CODE = {
    "BAD_REQUEST": 400,
    "INVALID_PARAMETER_VALUE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "RESOURCE_ALREADY_EXISTS": 400,
    "ENDPOINT_NOT_FOUND": 404,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "INTERNAL_ERROR": 500,
    "TEMPORARILY_UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


class Reason(enum.Enum):
    """Why the gateway answered a request itself. The value is the JSON's `reason`.

    `caller` marks refusals of the caller (its credentials, session, scope, limits): they are the reason
    label of `hokusai_auth_failures_total` and of the access line, and their values are stable (audit
    lines, login notices and remote gateways read them)."""

    code: str
    status: int
    caller: bool

    def __new__(cls, value: str, code: str, status: int | None = None, caller: bool = False) -> Reason:
        member = object.__new__(cls)
        member._value_ = value
        member.code = code
        member.status = status or STATUS_BY_CODE[code]
        member.caller = caller
        return member

    # The request itself
    HEADERS_TOO_LARGE = ("headers_too_large", "BAD_REQUEST", 431)
    URL_TOO_LONG = ("url_too_long", "BAD_REQUEST", 414)
    HEADER_TIMEOUT = ("header_timeout", "BAD_REQUEST", 408)
    BAD_HEADERS = ("bad_headers", "BAD_REQUEST")
    METHOD_NOT_ALLOWED = ("method_not_allowed", "BAD_REQUEST", 405)
    BAD_PATH = ("bad_path", "INVALID_PARAMETER_VALUE")
    NOT_AN_MLFLOW_PATH = ("not_an_mlflow_path", "ENDPOINT_NOT_FOUND")
    NO_SUCH_ENDPOINT = ("no_such_endpoint", "ENDPOINT_NOT_FOUND")
    KEY_IN_URL = ("key_in_url", "INVALID_PARAMETER_VALUE")
    CROSS_ORIGIN = ("cross_origin", "PERMISSION_DENIED")
    UNSAFE_PATH_PARAMETER = ("unsafe_path_parameter", "INVALID_PARAMETER_VALUE")
    BODY_TOO_LARGE = ("body_too_large", "INVALID_PARAMETER_VALUE", 413)
    BODY_NOT_ALLOWED = ("body_not_allowed", "INVALID_PARAMETER_VALUE", 413)
    UNSUPPORTED_CODING = ("unsupported_coding", "INVALID_PARAMETER_VALUE", 415)
    BAD_CODING = ("bad_coding", "INVALID_PARAMETER_VALUE")
    BODY_TIMEOUT = ("body_timeout", "BAD_REQUEST", 408)
    BODY_BUFFER_FULL = ("body_buffer_full", "TEMPORARILY_UNAVAILABLE")
    BODY_NOT_JSON = ("body_not_json", "INVALID_PARAMETER_VALUE")
    INVALID_REQUEST = ("invalid_request", "INVALID_PARAMETER_VALUE")
    RESERVED_TAG = ("reserved_tag", "INVALID_PARAMETER_VALUE")
    INVALID_GRAPHQL = ("invalid_graphql", "INVALID_PARAMETER_VALUE")
    LOOP = ("loop", "INTERNAL_ERROR", 508)
    # The caller
    MISSING_KEY = ("missing", "UNAUTHENTICATED", None, True)
    MALFORMED_KEY = ("malformed", "UNAUTHENTICATED", None, True)
    UNKNOWN_KEY = ("unknown", "UNAUTHENTICATED", None, True)
    REVOKED_KEY = ("revoked", "UNAUTHENTICATED", None, True)
    EXPIRED_KEY = ("expired", "UNAUTHENTICATED", None, True)
    BAD_BASIC = ("bad_basic", "UNAUTHENTICATED", None, True)
    UNSUPPORTED_SCHEME = ("unsupported_scheme", "UNAUTHENTICATED", None, True)
    SESSION_ENDED = ("session_ended", "UNAUTHENTICATED", None, True)
    # Bearer tokens (JWTs): each way one is refused, so a client's message and the metrics say which.
    TOKENS_NOT_ACCEPTED = ("tokens_not_accepted", "UNAUTHENTICATED", None, True)
    TOKEN_MALFORMED = ("token_malformed", "UNAUTHENTICATED", None, True)
    TOKEN_ALGORITHM = ("token_algorithm", "UNAUTHENTICATED", None, True)
    TOKEN_ISSUER = ("token_issuer", "UNAUTHENTICATED", None, True)
    TOKEN_SIGNATURE = ("token_signature", "UNAUTHENTICATED", None, True)
    TOKEN_EXPIRED = ("token_expired", "UNAUTHENTICATED", None, True)
    TOKEN_NOT_YET_VALID = ("token_not_yet_valid", "UNAUTHENTICATED", None, True)
    TOKEN_AUDIENCE = ("token_audience", "UNAUTHENTICATED", None, True)
    TOKEN_CLAIMS = ("token_claims", "UNAUTHENTICATED", None, True)
    USER_DISABLED = ("user_disabled", "UNAUTHENTICATED", None, True)
    ISSUER_UNAVAILABLE = ("issuer_unavailable", "TEMPORARILY_UNAVAILABLE", None, True)
    # A key change from the browser without the session's own key entered again with it.
    STEP_UP_FAILED = ("step_up_failed", "PERMISSION_DENIED", None, True)
    SERVICE = ("service", "PERMISSION_DENIED", None, True)
    SCOPE = ("scope", "PERMISSION_DENIED", None, True)
    TRANSFER_POLICY = ("transfer_policy", "PERMISSION_DENIED", None, True)
    IDENTITY_BY_GATEWAY = ("identity_by_gateway", "PERMISSION_DENIED", None, True)
    PERMISSION = ("permission", "PERMISSION_DENIED", None, True)
    # A single-sign-on user's key asked for more than their own keys allow (make keys, rotate, go
    # above their scope).
    OWN_KEYS_ONLY = ("own_keys_only", "PERMISSION_DENIED", None, True)
    THROTTLED = ("throttled", "RESOURCE_EXHAUSTED", None, True)
    RATE_LIMITED = ("rate_limited", "RESOURCE_EXHAUSTED", None, True)
    STORE_UNAVAILABLE = ("store_unavailable", "TEMPORARILY_UNAVAILABLE", None, True)
    AUTH_SERVICE_UNAVAILABLE = ("auth_service_unavailable", "TEMPORARILY_UNAVAILABLE", None, True)
    # Keys managed through the admin API
    KEYS_MANAGED_ELSEWHERE = ("keys_managed_elsewhere", "ENDPOINT_NOT_FOUND")
    KEY_NOT_FOUND = ("key_not_found", "RESOURCE_DOES_NOT_EXIST")
    KEY_NAME_TAKEN = ("key_name_taken", "RESOURCE_ALREADY_EXISTS")
    # Teams and grants managed through the admin API (they live in MLflow's auth app)
    PERMISSIONS_OFF = ("permissions_off", "ENDPOINT_NOT_FOUND")
    NOT_FOUND = ("not_found", "RESOURCE_DOES_NOT_EXIST")
    ALREADY_EXISTS = ("already_exists", "RESOURCE_ALREADY_EXISTS")
    MLFLOW_REFUSED = ("mlflow_refused", "INVALID_PARAMETER_VALUE")
    # Webhooks managed through the admin API
    WEBHOOK_NOT_FOUND = ("webhook_not_found", "RESOURCE_DOES_NOT_EXIST")
    # Protected aliases and stages, and promotion requests (policy/protection.py, admin/promotions.py)
    PROTECTED = ("protected", "PERMISSION_DENIED", None, True)
    PROTECTION_UNCHECKED = ("protection_unchecked", "TEMPORARILY_UNAVAILABLE")
    NOT_PROTECTED = ("not_protected", "INVALID_PARAMETER_VALUE")
    PROMOTION_CLOSED = ("promotion_closed", "INVALID_PARAMETER_VALUE")
    PROMOTION_STALE = ("promotion_stale", "INVALID_PARAMETER_VALUE")
    SELF_APPROVAL = ("self_approval", "PERMISSION_DENIED")
    NOT_AN_APPROVER = ("not_an_approver", "PERMISSION_DENIED")
    NOT_THE_REQUESTER = ("not_the_requester", "PERMISSION_DENIED")
    ALREADY_APPROVED = ("already_approved", "RESOURCE_ALREADY_EXISTS")
    # MLflow, behind the gateway
    UPSTREAM_REFUSED = ("upstream_refused", "TEMPORARILY_UNAVAILABLE", 502)
    UPSTREAM_LOST = ("upstream_lost", "TEMPORARILY_UNAVAILABLE", 502)
    ASSERTION_REFUSED = ("assertion_refused", "INTERNAL_ERROR", 502)
    UPSTREAM_CONNECT_TIMEOUT = ("upstream_connect_timeout", "DEADLINE_EXCEEDED")
    UPSTREAM_TIMEOUT = ("upstream_timeout", "DEADLINE_EXCEEDED")
    TRANSFER_TIMEOUT = ("transfer_timeout", "DEADLINE_EXCEEDED")


class Refusal(Exception):
    """A request the gateway answers itself instead of MLflow.

    `detail` is what follows the product name in the message: a sentence, joined with ': ' ("key X may
    not ..."), or, when it starts with a space, a verb phrase (" could not connect to MLflow ...")."""

    def __init__(self, reason: Reason, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        # Extra response headers, e.g. Retry-After.
        self.headers = tuple(headers)

    @property
    def code(self) -> str:
        return self.reason.code

    @property
    def http_status(self) -> int:
        return self.reason.status

    @property
    def message(self) -> str:
        return PRODUCT + (self.detail if self.detail.startswith(" ") else ": " + self.detail)

    @property
    def plain(self) -> str:
        """The detail as a sentence of its own, for a person reading one of the gateway's pages."""
        text = self.detail.strip()
        return text[:1].upper() + text[1:]

    def body(self) -> bytes:
        return json.dumps(
            {"error_code": self.code, "message": self.message, "reason": self.reason.value}
        ).encode()

    def copy(self) -> Refusal:
        return Refusal(self.reason, self.detail, self.headers)


async def send_body(
    send: Send, status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A whole response the gateway makes itself, with its Content-Length."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send, status: int, body: bytes, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send_body(
        send, status, body, [(b"content-type", b"application/json"), ORIGIN_HEADER, *extra_headers]
    )


async def send_refusal(
    send: Send, refusal: Refusal, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send_json(send, refusal.http_status, refusal.body(), [*refusal.headers, *extra_headers])
