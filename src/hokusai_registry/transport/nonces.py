"""Nonces for the gateway's assertions to MLflow (`policy/assertions.py`): random, never repeated, and
cheap (a request needs one, and a system call per request for 12 random bytes was a fifth of them)."""

from __future__ import annotations

import base64
import os
import threading

# Nonce bytes per draw (16 base64url characters, as secrets.token_urlsafe(12) gives).
NONCE_BYTES = 12
# Random bytes read from the kernel at a time: one getrandom() per 341 nonces, not one per request.
_POOL_BYTES = NONCE_BYTES * 341


class _NoncePool:
    """Nonces cut from a pool of os.urandom bytes, each byte used once. A forked worker starts with an
    empty pool (`os.register_at_fork`), so no two processes ever hand out the same bytes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # A new lock too: in a forked child, another thread of the parent may have held the old one.
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def draw(self) -> str:
        with self._lock:
            if self._at + NONCE_BYTES > len(self._pool):
                self._pool, self._at = os.urandom(_POOL_BYTES), 0
            taken = self._pool[self._at : self._at + NONCE_BYTES]
            self._at += NONCE_BYTES
        return base64.urlsafe_b64encode(taken).rstrip(b"=").decode("ascii")


_nonces = _NoncePool()
os.register_at_fork(after_in_child=_nonces.reset)


def new_nonce() -> str:
    """A fresh random nonce for `sign`."""
    return _nonces.draw()
