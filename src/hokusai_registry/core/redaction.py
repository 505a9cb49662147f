"""Redaction of secrets: keys and credentials never reach a log line, a report or an error message."""

from __future__ import annotations

import re

REDACTED = "[redacted]"
# Header names whose values are credentials; shown as [redacted] in debug output.
SECRET_HEADERS = frozenset(
    {b"authorization", b"proxy-authorization", b"x-api-key", b"cookie", b"set-cookie", b"x-hokusai-assertion"}
)
_SECRETS = re.compile(
    r"hk_(live|test)_[0-9A-Za-z_]+"  # Hokusai keys, whole or cut
    r"|(?i:\b(bearer|basic)\s+)[A-Za-z0-9._~+/=-]+"  # credentials after an auth scheme
    r"|whsec_[0-9A-Za-z_-]+"  # webhook signing secrets the gateway generates
)


def _redacted(match: re.Match[str]) -> str:
    if match.group(1):
        return f"hk_{match.group(1)}_{REDACTED}"
    if match.group(2):
        return f"{match.group(2)} {REDACTED}"
    return f"whsec_{REDACTED}"


def redact(text: str) -> str:
    if text.isascii():
        lowered = text.lower()
        # Every ASCII match of _SECRETS holds one of these, in any case: an ASCII line without them
        # (most access lines) is returned as it is, without running the expression. (Ignoring case, the
        # expression also matches a few non-ASCII letters, such as the long s: other text always runs
        # it.) Spelled out, not any() over a tuple: every access line passes here.
        if not ("hk_" in lowered or "bearer" in lowered or "basic" in lowered or "whsec_" in lowered):
            return text
    return _SECRETS.sub(_redacted, text)


def redact_headers(headers: list[tuple[bytes, bytes]]) -> str:
    return ", ".join(
        f"{name.decode('latin-1')}: {REDACTED if name.lower() in SECRET_HEADERS else value.decode('latin-1')}"
        for name, value in headers
    )
