"""Which request bodies a route takes, and in which content coding (pure).

Three rules, by family and method:
- `NONE`: artifact downloads, listings and deletions (GET, HEAD, DELETE on the transfer routes) take no
  body at all: MLflow would read one whole, of any size.
- `STREAMED`: artifact uploads (`PUT .../mlflow-artifacts/artifacts/<path>`) stream through, any size.
- `CAPPED`: everything else (JSON, GraphQL, OTLP, forms, multipart-upload control calls, AI-gateway
  calls) is at most the API limit, read whole by the gateway before MLflow is contacted.

Content codings: MLflow decodes request bodies on one route only, OTLP `/v1/traces` (gzip and deflate,
`mlflow/tracing/utils/otlp.py`), and without any limit on what they expand to. The gateway decodes those
itself, counts the API limit on the decoded bytes and forwards them identity-coded; any other coding, on
any capped route, is refused with 415 (MLflow would read the bytes as JSON, or, for zstd on `/gateway/`,
expand them up to its own 100 MiB).
"""

from __future__ import annotations

import enum
import re

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.routes import API_PREFIX, Family


class BodyRule(enum.Enum):
    NONE = "none"
    STREAMED = "streamed"
    CAPPED = "capped"


BODYLESS_METHODS = frozenset({"GET", "HEAD", "DELETE"})
_UPLOAD = re.compile(rf"{API_PREFIX}/2\.0/mlflow-artifacts/artifacts/.+")
# The one route whose bodies MLflow decodes, and the codings it decodes there.
DECODED_ROUTE = "/v1/traces"
# Coding name as sent (lower-cased) -> the coding the gateway decodes; x-gzip is gzip (RFC 9110 8.4.1.3).
DECODED_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}


def body_rule(method: str, family: Family, path: str) -> BodyRule:
    if family is Family.TRANSFER:
        if method in BODYLESS_METHODS:
            return BodyRule.NONE
        if method == "PUT" and _UPLOAD.fullmatch(path):
            return BodyRule.STREAMED
    return BodyRule.CAPPED


def request_coding(values: list[bytes], path: str) -> str | None:
    """The coding the gateway must decode the body from (None: it is identity-coded), from the request's
    Content-Encoding values. Refuses, with 415, every coding MLflow does not decode on this route."""
    codings = [
        token.strip().lower()
        for value in values
        for token in value.decode("latin-1").split(",")
        if token.strip().lower() not in ("", "identity")
    ]
    if not codings:
        return None
    named = ", ".join(codings)[:64]
    if len(codings) > 1:
        raise Refusal(
            Reason.UNSUPPORTED_CODING,
            f"the request body is coded more than once (Content-Encoding: {named}); send it uncompressed, "
            "or gzip-compressed once to /v1/traces.",
        )
    decoded = DECODED_CODINGS.get(codings[0]) if path == DECODED_ROUTE else None
    if decoded is None:
        where = (
            "on /v1/traces only gzip and deflate are decoded"
            if path == DECODED_ROUTE
            else f"MLflow reads the body of {path[:200]} uncompressed"
        )
        raise Refusal(
            Reason.UNSUPPORTED_CODING,
            f"request bodies coded '{named}' (Content-Encoding) are not accepted here: {where}. "
            "Send the body uncompressed.",
        )
    return decoded
