"""The cost of a bearer token (JWT) check, in process: its verification with the issuer's keys already
fetched (RS256 signature and claims: what a token not yet in the cache costs), and a cached check. The
issuer is a real HTTP server on loopback serving discovery and JWKS, asked once before timing."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from hokusai_registry.auth.bearer_tokens import BearerTokens, TokenRules
from hokusai_registry.auth.issuers import Issuers, verify
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.user_store import UserStore

AUDIENCE = "bench-gateway"


@contextmanager
def _issuer(key: RSAKey) -> Iterator[str]:
    documents: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = documents.get(self.path)
            self.send_response(200 if body else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    documents["/.well-known/openid-configuration"] = json.dumps(
        {"issuer": url, "jwks_uri": url + "/jwks"}
    ).encode()
    documents["/jwks"] = json.dumps(KeySet([key]).as_dict(private=False)).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def token_costs(workdir: Path, iterations: int) -> dict[str, float]:
    """µs per check: `jwt_verify` (signature and claims, keys cached) and `jwt_cached`."""
    key = RSAKey.generate_key(2048, parameters={"kid": "bench"})
    store = KeyStore(f"sqlite:///{workdir / 'token-users.db'}")
    store.migrate()
    with _issuer(key) as url:
        now = int(time.time())
        claims = {
            "iss": url,
            "sub": "ci",
            "client_id": "ci",
            "aud": AUDIENCE,
            "exp": now + 3600,
            "scope": "mlflow.write",
        }
        token = jwt.encode({"alg": "RS256", "kid": "bench"}, claims, key)

        async def measure() -> dict[str, float]:
            issuers = Issuers([url])
            await verify(token, issuers, audience=AUDIENCE, leeway=30)  # discovery and keys fetched here
            started = time.perf_counter()
            for _ in range(iterations):
                await verify(token, issuers, audience=AUDIENCE, leeway=30)
            verified = (time.perf_counter() - started) / iterations * 1e6
            rules = TokenRules(
                audience=AUDIENCE,
                leeway=30,
                scope_claim="scope",
                username_claim="preferred_username",
                default_scope="none",
                allow_admin=False,
                create_users=True,
                cache_ttl=3600,
            )
            tokens = BearerTokens(issuers, UserStore(store), rules)
            await tokens.authenticate(token)
            started = time.perf_counter()
            for _ in range(iterations):
                await tokens.authenticate(token)
            cached = (time.perf_counter() - started) / iterations * 1e6
            await issuers.close()
            return {"jwt_verify": verified, "jwt_cached": cached}

        try:
            return asyncio.run(measure())
        finally:
            store.close()
