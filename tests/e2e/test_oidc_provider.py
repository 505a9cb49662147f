"""The test OIDC provider itself: what the single-sign-on tests rely on it for."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import urllib.error
import urllib.parse
import urllib.request

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.support.oidc_provider import AUDIENCE, BOT_CLIENT, UI_CLIENT, OidcProvider


def _header(token: str) -> dict[str, str]:
    segment = token.split(".")[0]
    decoded: dict[str, str] = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    return decoded


def test_machine_tokens_verify_against_the_published_keys(oidc_provider: OidcProvider) -> None:
    discovery = oidc_provider.discovery()
    assert discovery["issuer"] == oidc_provider.issuer
    assert "S256" in discovery["code_challenge_methods_supported"]
    assert discovery["end_session_endpoint"]
    token = oidc_provider.client_credentials_token(scope="mlflow.write")
    assert _header(token)["alg"] == "RS256" and _header(token)["kid"]
    claims = jwt.decode(token, KeySet.import_key_set(oidc_provider.jwks())).claims  # type: ignore[arg-type]
    assert (claims["iss"], claims["aud"], claims["client_id"]) == (oidc_provider.issuer, AUDIENCE, BOT_CLIENT)
    assert claims["scope"] == "mlflow.write"
    other = oidc_provider.client_credentials_token(scope="mlflow.read", resource="https://elsewhere.example")
    assert jwt.decode(other, KeySet.import_key_set(oidc_provider.jwks())).claims["aud"] == (  # type: ignore[arg-type]
        "https://elsewhere.example"
    )


def test_groups_changed_at_the_provider_show_in_the_next_token(oidc_provider: OidcProvider) -> None:
    before = oidc_provider.userinfo(oidc_provider.password_token("bob")["access_token"])
    assert (before["preferred_username"], before["groups"]) == ("bob", ["team-b"])
    oidc_provider.set_groups("bob", ["team-b", "team-c"])
    try:
        after = oidc_provider.userinfo(oidc_provider.password_token("bob")["access_token"])
        assert after["groups"] == ["team-b", "team-c"]
    finally:
        oidc_provider.set_groups("bob", ["team-b"])


def test_a_rotated_key_signs_new_tokens_and_the_old_one_stays_published(oidc_provider: OidcProvider) -> None:
    old = _header(oidc_provider.client_credentials_token())["kid"]
    new = oidc_provider.rotate_signing_key()
    assert new != old
    assert _header(oidc_provider.client_credentials_token())["kid"] == new
    assert {key["kid"] for key in oidc_provider.jwks()["keys"]} >= {old, new}


def test_the_code_flow_requires_pkce_and_any_loopback_port(oidc_provider: OidcProvider) -> None:
    # The gateway's port is chosen at test time: a registered loopback redirect URI matches any port.
    redirect = "http://127.0.0.1:54321/login/oidc/callback"
    query = {
        "response_type": "code",
        "client_id": UI_CLIENT,
        "redirect_uri": redirect,
        "scope": "openid",
        "state": secrets.token_urlsafe(8),
        "nonce": secrets.token_urlsafe(8),
    }
    without_pkce = oidc_provider.issuer + "/authorize?" + urllib.parse.urlencode(query)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    with_pkce = (
        oidc_provider.issuer
        + "/authorize?"
        + urllib.parse.urlencode({**query, "code_challenge": challenge, "code_challenge_method": "S256"})
    )
    opener = urllib.request.build_opener(_NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(without_pkce, timeout=10)
    assert refused.value.code == 302
    assert "error=invalid_request" in refused.value.headers["Location"]
    assert refused.value.headers["Location"].startswith(redirect)
    with opener.open(with_pkce, timeout=10) as page:
        assert page.status == 200 and b"password" in page.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None
