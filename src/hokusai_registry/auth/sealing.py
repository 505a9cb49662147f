"""A browser session's key, encrypted under the session's own id (pure).

The session id lives only in the user's cookie and, hashed, in the session table. Deriving the encryption
key from the id means the stored row is useless without the cookie: whoever reads the table gets neither
a working session nor the API key. AES-GCM (from `cryptography`) also authenticates the row, bound to the
id's hash, so a row cannot be swapped under another session.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"hokusai-registry ui session key v1"
_NONCE_BYTES = 12


def id_hash(session_id: str) -> str:
    """What the session table stores instead of the id."""
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _cipher(session_id: str) -> AESGCM:
    # The id is 256 random bits: HKDF needs no salt to turn it into a key.
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(session_id.encode("ascii"))
    return AESGCM(key)


def seal(secret: str, session_id: str) -> str:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = _cipher(session_id).encrypt(nonce, secret.encode("utf-8"), id_hash(session_id).encode())
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii")


def unseal(sealed: str, session_id: str) -> str | None:
    """The secret, or None when the row was not sealed under this id (or was altered)."""
    try:
        raw = base64.urlsafe_b64decode(sealed.encode("ascii"))
        plain = _cipher(session_id).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], id_hash(session_id).encode()
        )
    except (binascii.Error, ValueError, InvalidTag):
        return None
    return plain.decode("utf-8")
