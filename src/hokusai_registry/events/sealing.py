"""Webhook secrets at rest: sealed with AES-GCM under a key derived from the gateway's webhook key
(HOKUSAI_WEBHOOK_SECRET_KEY_FILE), bound to the webhook's id.

A webhook's secret must be readable by the gateway (it signs every delivery with it), so unlike an API key
it cannot be kept only as a hash. Sealing it means the table alone (a backup, a leaked dump) yields no
secret, and a sealed secret copied onto another webhook's row does not open.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"hokusai-registry webhook secret v1"
_NONCE_BYTES = 12
SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105 - a prefix, not a secret


class SecretUnreadable(Exception):
    """The sealed secret does not open under this gateway's webhook key (another key, or altered)."""


def new_secret() -> str:
    """A webhook secret for the user who gave none: 256 random bits."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class Sealer:
    def __init__(self, key_material: str) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            key_material.encode("utf-8")
        )
        self._cipher = AESGCM(key)

    def seal(self, secret: str, webhook_id: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._cipher.encrypt(nonce, secret.encode("utf-8"), webhook_id.encode("utf-8"))
        return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def unseal(self, sealed: str, webhook_id: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
            plain = self._cipher.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], webhook_id.encode("utf-8"))
        except (binascii.Error, ValueError, InvalidTag):
            raise SecretUnreadable(
                f"the secret of webhook {webhook_id} does not open with this gateway's webhook key "
                "(HOKUSAI_WEBHOOK_SECRET_KEY_FILE): every gateway needs the same key file"
            ) from None
        return plain.decode("utf-8")
