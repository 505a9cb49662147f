"""Browser sessions: sign in with a key, then a cookie with a random id stands for it.

The cookie holds only the session id. The server keeps the key encrypted under that id (`sealing.py`)
and, on each request, unseals it and checks it exactly like a key sent in a header, so a session has the
key's scopes, limits and service ids and dies the moment the key is revoked or expires. Sessions also end
after `idle_timeout` without use and `max_age` after sign-in, whichever comes first.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from hokusai_registry.auth.sealing import id_hash, seal, unseal
from hokusai_registry.store.session_store import SessionRow, SessionStore

# secrets.token_urlsafe(32): 256 random bits.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
# Last use is written at most this often per session (and more often for short idle timeouts).
TOUCH_INTERVAL = dt.timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    key: str
    key_id: str
    expires_at: dt.datetime
    started_at: dt.datetime
    id_token: str | None = None  # begun at the identity provider: its ID token, for logging out there


def well_formed(session_id: str) -> bool:
    return _SESSION_ID.fullmatch(session_id) is not None


def csrf_token(session_id: str) -> str:
    """The token the session's forms must carry: derived from the id (which a cross-site page cannot
    read), so it needs no storage and differs per session."""
    return hmac.new(session_id.encode("ascii"), b"hokusai csrf", hashlib.sha256).hexdigest()


def csrf_valid(session_id: str, token: str) -> bool:
    """Whether a form's token is this session's (both come from the client: any text is just invalid)."""
    if not well_formed(session_id):
        return False
    return hmac.compare_digest(csrf_token(session_id).encode(), token.encode("utf-8", "surrogatepass"))


class Sessions:
    def __init__(self, store: SessionStore, *, idle_timeout: float, max_age: float) -> None:
        self.store = store
        self.idle_timeout = dt.timedelta(seconds=idle_timeout)
        self.max_age = dt.timedelta(seconds=max_age)
        self._touch_after = min(TOUCH_INTERVAL, self.idle_timeout / 10)

    async def start(
        self, key: str, key_id: str, key_expires_at: dt.datetime | None, *, id_token: str | None = None
    ) -> Session:
        """A new session for a key that has just been checked (and, after a single sign-on, the
        provider's ID token)."""
        session_id = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        expires_at = now + self.max_age
        if key_expires_at is not None:
            expires_at = min(expires_at, key_expires_at)
        row = SessionRow(
            id_hash=id_hash(session_id),
            key_id=key_id,
            sealed_key=seal(key, session_id),
            created_at=now,
            last_seen_at=now,
            expires_at=expires_at,
            sealed_id_token=seal(id_token, session_id) if id_token else None,
        )
        await asyncio.to_thread(self.store.add, row, self.idle_timeout)
        return Session(session_id, key, key_id, expires_at, now, id_token)

    async def find(self, session_id: str) -> Session | None:
        """The live session with this id, or None (unknown, ended, expired or altered)."""
        if not well_formed(session_id):
            return None
        row = await asyncio.to_thread(
            self.store.use, id_hash(session_id), dt.datetime.now(dt.UTC), self.idle_timeout, self._touch_after
        )
        if row is None:
            return None
        key = unseal(row.sealed_key, session_id)
        if key is None:
            return None
        id_token = unseal(row.sealed_id_token, session_id) if row.sealed_id_token else None
        return Session(session_id, key, row.key_id, row.expires_at, row.created_at, id_token)

    async def end(self, session_id: str) -> None:
        if well_formed(session_id):
            await asyncio.to_thread(self.store.end, id_hash(session_id))
