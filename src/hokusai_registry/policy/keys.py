"""API key format: ``hk_<env>_<key id>_<secret><checksum>`` (pure functions, no I/O).

The key id is public and indexed; the secret carries 32 base62 characters (about 190 bits); the
checksum is CRC32 of everything before it, in 6 base62 characters, so a mistyped or truncated key is
rejected without a lookup. Only the SHA-256 of the whole key is stored: for secrets of this entropy a
slow password hash buys nothing and would cost milliseconds per request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Literal

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
KEY_ID_LENGTH = 12
SECRET_LENGTH = 32
CHECKSUM_LENGTH = 6
Environment = Literal["live", "test"]

_KEY = re.compile(
    rf"hk_(live|test)_([0-9A-Za-z]{{{KEY_ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH + CHECKSUM_LENGTH}}})"
)
_KEY_ID = re.compile(rf"[0-9A-Za-z]{{{KEY_ID_LENGTH}}}")
# What may carry a key or its secret: the prefix in any case, or a run of base62 characters longer
# than any id the gateway makes (32 hex digits); a key's secret and checksum are 38.
_KEY_LIKE = re.compile(rb"(?i:hk_(?:live|test)_)|[0-9A-Za-z]{33,}")
EXAMPLE = "hk_live_<12-character id>_<38 characters>"
# What a service id (AUTH_SERVICE_ID, a key's allowed services) may look like.
SERVICE_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


class KeyFormatError(ValueError):
    """The text is not a well-formed Hokusai key; the message says what is wrong (never the key)."""


@dataclass(frozen=True, slots=True)
class ParsedKey:
    environment: Environment
    key_id: str
    text: str


def _random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), CHECKSUM_LENGTH)


def generate(environment: Environment) -> ParsedKey:
    key_id = _random_base62(KEY_ID_LENGTH)
    body = f"hk_{environment}_{key_id}_{_random_base62(SECRET_LENGTH)}"
    return ParsedKey(environment, key_id, body + checksum(body))


def looks_like_key(text: bytes) -> bool:
    """Whether text (a header value the gateway would pass on or log) may carry a key."""
    return _KEY_LIKE.search(text) is not None


def is_key_id(text: str) -> bool:
    return _KEY_ID.fullmatch(text) is not None


def parse(text: str) -> ParsedKey:
    match = _KEY.fullmatch(text)
    if match is None:
        if not text.startswith(("hk_live_", "hk_test_")):
            raise KeyFormatError("it does not start with hk_live_ or hk_test_")
        raise KeyFormatError(f"it does not have the shape {EXAMPLE} (was it cut off when copied?)")
    body, check = text[:-CHECKSUM_LENGTH], text[-CHECKSUM_LENGTH:]
    if checksum(body) != check:
        raise KeyFormatError("its checksum does not match (a character was mistyped or changed)")
    environment: Environment = "live" if match.group(1) == "live" else "test"
    return ParsedKey(environment, match.group(2), text)


def digest(text: str) -> str:
    """What the key store keeps: the SHA-256 of the whole key, hex."""
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def hint(text: str) -> str:
    """What logs may say about a presented key: its id if that part is well-formed, else its
    environment prefix, else "-". Never any part of a secret."""
    if not text.startswith(("hk_live_", "hk_test_")):
        return "-"
    key_id = text[8 : 8 + KEY_ID_LENGTH]
    if is_key_id(key_id) and text[8 + KEY_ID_LENGTH : 9 + KEY_ID_LENGTH] == "_":
        return key_id
    return text[:8]


_DURATION = re.compile(r"(\d+)([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_duration(text: str) -> dt.timedelta:
    """`90d`, `12h`, `30m` as a timedelta; ValueError with the expected form otherwise."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a lifetime: give a number and d, h or m, e.g. 90d")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
