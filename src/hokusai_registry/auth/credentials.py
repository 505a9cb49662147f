"""Where a client may put its key (pure): `Authorization: Bearer`, the password of
`Authorization: Basic` (the MLflow client prefers Basic when a user name and password are set), or
`X-API-Key`. Never the query string: URLs end up in logs.
"""

from __future__ import annotations

import base64
import binascii

from hokusai_registry.core.asgi import Headers
from hokusai_registry.core.refusals import Reason, Refusal

HOW_TO_SEND = (
    "Set MLFLOW_TRACKING_TOKEN=hk_live_... for the MLflow client, or send 'Authorization: Bearer <key>' "
    "or 'X-API-Key: <key>'"
)


def sends_key(headers: Headers) -> bool:
    """Whether the request carries a key in its headers (which then wins over a session cookie)."""
    # A loop, not any() over a generator, which costs more: this runs on every request.
    for name, _ in headers:  # noqa: SIM110
        if name == b"authorization" or name == b"x-api-key":
            return True
    return False


def presented_key(headers: Headers) -> str:
    """The key the client sent, or an UNAUTHENTICATED error saying what is missing."""
    authorization = api_key = None
    for name, value in headers:
        if name == b"authorization":
            authorization = value
        elif name == b"x-api-key":
            api_key = value
    if authorization is not None:
        return _from_authorization(authorization)
    if api_key is not None:
        return api_key.decode("latin-1").strip()
    raise Refusal(Reason.MISSING_KEY, f"no API key was sent. {HOW_TO_SEND}.")


def _from_authorization(value: bytes) -> str:
    scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return credentials
    if scheme.lower() == "basic" and credentials:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):  # bad base64, non-ASCII input, or not UTF-8
            raise Refusal(Reason.BAD_BASIC, "the Basic credentials are not valid base64.") from None
        user, _, password = decoded.partition(":")
        # The key is the password (any user name); a key pasted as the user name also works.
        if password:
            return password
        if user.startswith("hk_"):
            return user
        raise Refusal(
            Reason.BAD_BASIC,
            "Basic credentials were sent without an API key as the password. Set "
            "MLFLOW_TRACKING_PASSWORD=hk_live_... (any MLFLOW_TRACKING_USERNAME).",
        )
    raise Refusal(
        Reason.UNSUPPORTED_SCHEME,
        f"the Authorization header uses an unsupported scheme {scheme[:20]!r}. {HOW_TO_SEND}.",
    )
