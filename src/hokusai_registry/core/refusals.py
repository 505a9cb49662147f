"""Every response the gateway makes itself: MLflow's error JSON, one place for status and code.

The MLflow client shows `<error_code>: <message>` for a JSON body with a valid `ErrorCode` name, so
each message says what happened, that the gateway said it, and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hokusai_registry.core.asgi import Send

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


class GatewayError(Exception):
    """A request the gateway answers itself. `status` overrides the code's usual status where MLflow
    has no code of its own (502, 508)."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        kind: str | None = None,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = status or STATUS_BY_CODE[code]
        # Why a request was refused before reaching MLflow ("revoked", "scope", ...): the reason label of
        # hokusai_auth_failures_total and of audit lines.
        self.kind = kind
        # Extra response headers, e.g. Retry-After.
        self.headers = tuple(headers)

    def copy(self) -> GatewayError:
        return GatewayError(self.code, self.message, self.http_status, self.kind, self.headers)


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()


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


async def send_error(
    send: Send, error: GatewayError, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await send_json(
        send, error.http_status, error_body(error.code, error.message), [*error.headers, *extra_headers]
    )
