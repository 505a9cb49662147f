"""The gateway's word to MLflow that it authenticated a request: who it is for, bound to the request.

With permissions on, MLflow (started with this package's authorization function, `mlflow_app/`)
accepts a request only with a valid assertion, so a task that can reach MLflow's private address
cannot act as anyone. An assertion is `v1.<user>.<issued>.<nonce>.<body>.<mac>`: the user base64url-encoded,
the issue time in whole seconds, a random nonce, the SHA-256 of the body (`-` for a body the gateway
streams, artifact uploads), and an HMAC-SHA256 over those and the request's method and target, keyed
with a secret that only the gateways and MLflow hold.

The target is compared after percent-decoding to a fixed point: MLflow's Flask routes see a decoded
path, its FastAPI routes hand their decoded path to Flask once more, and both must agree with what
the gateway signed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import unquote

ASSERTION_HEADER = b"x-hokusai-assertion"
# The file MLflow reads the secret from: the same variable as the gateway's setting.
SECRET_FILE_ENV = "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE"  # noqa: S105  # nosec B105 - a variable name
# Or the secret itself, where a platform hands secrets over as environment variables; wins over the file.
SECRET_ENV = "HOKUSAI_MLFLOW_ASSERTION_SECRET"  # noqa: S105  # nosec B105 - a variable name
# MLflow's administrator, as which `admin`-scope keys act. Owners cannot take names with this prefix
# (`reserved_user`): a key's owner named like the administrator would be one.
RESERVED_PREFIX = "hokusai:"
ADMIN_USER = RESERVED_PREFIX + "admin"
# How long an assertion is good for after it was issued; it is made just before the request is sent.
MAX_AGE_SECONDS = 30
# Clocks of the gateways and MLflow may differ this much (NTP keeps them closer).
CLOCK_SKEW_SECONDS = 5
_VERSION = "v1"
# In MLflow's 401 for a request without a valid assertion, so the gateway can tell it from others.
ASSERTION_REFUSAL_MARK = b"a Hokusai Registry gateway authenticated"


class AssertionRejected(Exception):
    """An assertion that does not prove the gateway authenticated this request; the text says why."""


# The body field of a streamed body, which the gateway never holds whole.
UNBOUND_BODY = "-"


@dataclass(frozen=True, slots=True)
class Asserted:
    user: str
    issued: int
    nonce: str
    body: str  # body_digest(...) of the body the gateway sent, or UNBOUND_BODY
    binding: bytes  # what the assertion is bound to: a request asserting the same nonce must match it


def digest_text(sha256: bytes) -> str:
    """The body field for a body whose SHA-256 is `sha256` (hashed as it arrived)."""
    return _b64(sha256)


def body_digest(body: bytes) -> str:
    return digest_text(hashlib.sha256(body).digest())


def reserved_user(name: str) -> bool:
    return name.startswith(RESERVED_PREFIX)


def mlflow_user(user_id: str, *, admin: bool) -> str:
    """The MLflow user a caller acts as: MLflow's administrator for an `admin`-scope key, else its
    owner."""
    return ADMIN_USER if admin else user_id


def _fixed_point_unquote(text: str) -> str:
    if "%" not in text:  # most targets: nothing to decode
        return text
    for _ in range(8):
        decoded = unquote(text)
        if decoded == text:
            return text
        text = decoded
    return text


def canonical_target(method: str, path: str, query: str) -> bytes:
    target = _fixed_point_unquote(path) + "?" + _fixed_point_unquote(query)
    return method.upper().encode("ascii", "replace") + b" " + target.encode("utf-8", "surrogatepass")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signed_text(head: str, target: bytes) -> bytes:
    """What the mac covers: the assertion's fields and the canonical target."""
    return head.encode("ascii") + b"\n" + target


def _mac(secret: bytes, head: str, target: bytes) -> bytes:
    return hmac.new(secret, _signed_text(head, target), hashlib.sha256).digest()


# Users whose encoded names a Signer keeps; a gateway signs for few users, and the text is re-encoded
# only after this many different ones (the dict is then started afresh).
_KEPT_USERS = 1024


class Signer:
    """Signs with one secret: the keyed HMAC state is made once and copied for every assertion (a
    fresh `hmac.new` hashes the padded key again each time), and users' encoded names are kept. The
    gateway signs every request it forwards with permissions on."""

    def __init__(self, secret: bytes) -> None:
        self._keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self._users: dict[str, str] = {}

    def sign(
        self, user: str, method: str, path: str, query: str, *, now: float, nonce: str, body: str
    ) -> bytes:
        """`body` is body_digest(...) of the body as sent, or UNBOUND_BODY for a streamed one."""
        encoded = self._users.get(user)
        if encoded is None:
            if len(self._users) >= _KEPT_USERS:
                self._users.clear()
            encoded = self._users[user] = _b64(user.encode("utf-8"))
        head = f"{_VERSION}.{encoded}.{int(now)}.{nonce}.{body}"
        mac = self._keyed.copy()
        mac.update(_signed_text(head, canonical_target(method, path, query)))
        return f"{head}.{_b64(mac.digest())}".encode("ascii")


def sign(
    secret: bytes, user: str, method: str, path: str, query: str, *, now: float, nonce: str, body: str
) -> bytes:
    """One assertion (callers that sign many with one secret keep a `Signer`)."""
    return Signer(secret).sign(user, method, path, query, now=now, nonce=nonce, body=body)


def verify(secret: bytes, value: str | None, method: str, path: str, query: str, *, now: float) -> Asserted:
    """The asserted request, or AssertionRejected naming what is wrong (never the secret or the mac)."""
    if not value:
        raise AssertionRejected("the request carries no gateway assertion")
    parts = value.split(".")
    if len(parts) != 6 or parts[0] != _VERSION:
        raise AssertionRejected("the gateway assertion is malformed")
    _, user_text, issued_text, nonce, body, mac_text = parts
    try:
        user = _unb64(user_text).decode("utf-8")
        issued = int(issued_text)
        mac = _unb64(mac_text)
    except ValueError:
        raise AssertionRejected("the gateway assertion is malformed") from None
    target = canonical_target(method, path, query)
    if not hmac.compare_digest(mac, _mac(secret, ".".join(parts[:5]), target)):
        raise AssertionRejected("the gateway assertion is not valid for this request")
    if issued > now + CLOCK_SKEW_SECONDS or now - issued > MAX_AGE_SECONDS:
        raise AssertionRejected(f"the gateway assertion has expired (good for {MAX_AGE_SECONDS} s)")
    if not user or not nonce or not body:
        raise AssertionRejected("the gateway assertion is malformed")
    return Asserted(user, issued, nonce, body, target)


EMPTY_BODY = body_digest(b"")
