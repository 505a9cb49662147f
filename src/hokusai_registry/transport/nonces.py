"""Nonces for the gateway's assertions to MLflow (`policy/assertions.py`): random, never repeated, and
cheap (a request needs one, and a system call per request for 12 random bytes was a fifth of them)."""

from __future__ import annotations

import base64
import os
import threading

# Nonce bytes per draw (16 base64url characters, as secrets.token_urlsafe(12) gives).
NONCE_BYTES = 12
NONCE_CHARS = NONCE_BYTES * 4 // 3
# Random bytes read from the kernel at a time: one getrandom() per 341 nonces, not one per request.
# Encoded at once: 12 bytes are whole base64 groups, so each 16 characters of the encoded pool are one
# nonce's encoding, as if each were encoded alone.
_POOL_BYTES = NONCE_BYTES * 341


class _NoncePool:
    """Nonces cut from a pool of os.urandom bytes, each byte used once. A forked worker starts with an
    empty pool (`os.register_at_fork`), so no two processes ever hand out the same bytes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # A new lock too: in a forked child, another thread of the parent may have held the old one.
        self._lock = threading.Lock()
        self._pool = ""
        self._at = 0

    def draw(self) -> str:
        with self._lock:
            if self._at >= len(self._pool):
                self._pool = base64.urlsafe_b64encode(os.urandom(_POOL_BYTES)).decode("ascii")
                self._at = 0
            nonce = self._pool[self._at : self._at + NONCE_CHARS]
            self._at += NONCE_CHARS
        return nonce


_nonces = _NoncePool()
os.register_at_fork(after_in_child=_nonces.reset)


def new_nonce() -> str:
    """A fresh random nonce for `sign`."""
    return _nonces.draw()
