"""MLflow's auth app asks this function who is calling (`authorization_function` in its config).

The answer is the user a gateway asserted for this very request, or a 401 in MLflow's error JSON. The
user is created in MLflow's user store on first sight, with an unusable random password: the gateway
is the identity provider, and MLflow keeps permissions, roles and creators' grants.

MLflow calls the function several times per request (before the request, for the admin check, in
validators and after the response), in a Flask request context or, for its FastAPI routes, in a
synthetic one made for each call; the result is kept on `flask.g` for the calls that share one. On its
first call it makes the auth app look up less per request (`lookups.py`).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import threading
import time
from pathlib import Path

from flask import Response, g, request
from werkzeug.datastructures import Authorization

from hokusai_registry.mlflow_app.lookups import keep_lookups
from hokusai_registry.policy.assertions import (
    ADMIN_USER,
    ASSERTION_REFUSAL_MARK,
    MAX_AGE_SECONDS,
    SECRET_ENV,
    SECRET_FILE_ENV,
    UNBOUND_BODY,
    Asserted,
    AssertionRejected,
    body_digest,
    verify,
)

_KNOWN_USERS_SECONDS = 30.0


@functools.cache
def _secret() -> bytes:
    value = os.environ.get(SECRET_ENV, "").strip()
    if value:
        return value.encode()
    path = os.environ.get(SECRET_FILE_ENV)
    if not path:
        raise RuntimeError(
            f"neither {SECRET_ENV} nor {SECRET_FILE_ENV} is set: MLflow cannot check the gateway's assertions"
        )
    secret = Path(path).read_bytes().strip()
    if not secret:
        raise RuntimeError(f"{SECRET_FILE_ENV} ({path}) is empty")
    return secret


class _Nonces:
    """Nonces seen within their lifetime, with what they were bound to: a nonce is accepted again only
    for the same request (MLflow re-checks within one request), never for another."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def admit(self, asserted: Asserted, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 100_000:
                horizon = now - 2 * MAX_AGE_SECONDS
                self._seen = {n: seen for n, seen in self._seen.items() if seen[1] > horizon}
            seen = self._seen.setdefault(asserted.nonce, (asserted.binding, now))
            return seen[0] == asserted.binding


class _Users:
    """MLflow users known to exist, re-checked after a while (an admin may delete one)."""

    def __init__(self) -> None:
        self._known: dict[str, float] = {}
        self._lock = threading.Lock()

    def ensure(self, username: str, now: float) -> None:
        if self._known.get(username, 0.0) > now:
            return
        from mlflow.exceptions import MlflowException
        from mlflow.server.auth import store

        if not store.has_user(username):
            try:
                # MLflow requires a password; nobody ever presents it (the gateway authenticates).
                store.create_user(username, secrets.token_urlsafe(32), is_admin=username == ADMIN_USER)
            except MlflowException:
                if not store.has_user(username):  # not a concurrent creation of the same user
                    raise
        with self._lock:
            self._known[username] = now + _KNOWN_USERS_SECONDS


_nonces = _Nonces()
_users = _Users()


def _refused(why: str) -> Response:
    # The gateway tells this refusal from MLflow's others by ASSERTION_REFUSAL_MARK.
    mark = ASSERTION_REFUSAL_MARK.decode()
    message = f"MLflow accepts only requests {mark}: {why}. Send requests through the gateway."
    body = json.dumps({"error_code": "UNAUTHENTICATED", "message": message})
    return Response(body, status=401, mimetype="application/json")


_install_lock = threading.Lock()


@functools.cache
def _lookups_kept() -> None:
    # Here, not at import: MLflow imports this module while its auth app is being created.
    from mlflow.server import auth

    with _install_lock:
        keep_lookups(auth)


def authenticate() -> Authorization | Response:
    _lookups_kept()
    cached = g.get("hokusai_authorization")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    now = time.time()
    try:
        asserted = verify(
            _secret(),
            request.headers.get("X-Hokusai-Assertion"),
            request.method,
            request.path,
            request.query_string.decode("latin-1"),
            now=now,
        )
    except AssertionRejected as rejected:
        return _refused(str(rejected))
    if not _nonces.admit(asserted, now):
        return _refused("the gateway assertion was already used for another request")
    # MLflow's FastAPI routes call this in a context of their own making, without the body (werkzeug's
    # test environ, which has RAW_URI); everywhere else the body is here, and must be the one signed.
    checkable = asserted.body != UNBOUND_BODY and "RAW_URI" not in request.environ
    if checkable and body_digest(request.get_data(cache=True)) != asserted.body:
        return _refused("the request body is not the one the gateway signed")
    _users.ensure(asserted.user, now)
    authorization = Authorization("basic", {"username": asserted.user})
    g.hokusai_authorization = authorization
    return authorization
