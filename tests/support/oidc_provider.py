"""A real OpenID Connect provider on loopback for the single-sign-on tests: nanoidp (PyPI), installed by
`make test` into its own environment (`.venv/tools/nanoidp`: its Flask pins would fight MLflow's).

It does what the gateway relies on: discovery, authorization code with PKCE S256 (enforced), `nonce`,
RS256 ID and access tokens with `kid`, a person's name, e-mail and `groups` from userinfo (its ID tokens
carry only the protocol claims), client credentials with scopes and an audience,
`end_session_endpoint`, signing-key rotation (the old key stays in the JWKS) and users changed at run time.
It does not send RFC 9207's `iss` in the authorization response (`authorization_response_iss_parameter_
supported: false`). Where it is not installed, the tests that need it skip and say why.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
NANOIDP_PYTHON = ROOT / ".venv" / "tools" / "nanoidp" / "bin" / "python"

UI_CLIENT = "hokusai-ui"
UI_SECRET = "ui-client-secret"  # a test provider's secret, on loopback only
BOT_CLIENT = "ci-bot"
BOT_SECRET = "ci-bot-secret"
# What the provider's access tokens carry as `aud` unless a resource is asked for.
AUDIENCE = "hokusai-registry"
# The gateway's redirect URI as registered: a loopback URI matches any port (RFC 8252 §7.3), and the
# tests' gateways listen on ports chosen at run time.
LOOPBACK_CALLBACK = "http://127.0.0.1:1/login/oidc/callback"
SCOPES = ("openid", "profile", "email", "groups", "mlflow.read", "mlflow.write", "mlflow.admin")


@dataclass
class Person:
    name: str
    password: str
    groups: list[str] = field(default_factory=list)


DEFAULT_PEOPLE = (
    Person("alice", "alice-password", ["team-a"]),
    Person("bob", "bob-password", ["team-b"]),
    Person("carol", "carol-password", ["ml-admins"]),
)


@dataclass(frozen=True)
class LoginForm:
    """Where a browser types on the provider's login page."""

    username: str = "input[name=username]"
    password: str = "input[name=password]"
    submit: str = "button[type=submit]"


class OidcProvider:
    def __init__(self, directory: Path, redirect_uris: Iterable[str], people: Iterable[Person]) -> None:
        self.directory = directory
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.redirect_uris = list(redirect_uris)
        self.people = {person.name: person for person in people}
        self.login_form = LoginForm()
        self._process: subprocess.Popen[bytes] | None = None

    # -- configuration files (nanoidp reads settings.yaml and users.yaml from its config directory)

    def _write_settings(self) -> None:
        settings = {
            "config_version": 1,
            "server": {"host": "127.0.0.1", "port": self.port},
            "oauth": {
                "issuer": self.issuer,
                "audience": AUDIENCE,
                "token_expiry_minutes": 60,
                "scopes_supported": list(SCOPES),
                "require_pkce": True,
                "clients": [
                    {"client_id": UI_CLIENT, "client_secret": UI_SECRET, "redirect_uris": self.redirect_uris},
                    {"client_id": BOT_CLIENT, "client_secret": BOT_SECRET},
                ],
            },
            # Group and role names as configured, without nanoidp's default `GROUP_` prefixes.
            "authority_prefixes": {"roles": "", "groups": "", "identity_class": "", "entitlements": ""},
        }
        (self.directory / "settings.yaml").write_text(json.dumps(settings))  # JSON is YAML

    def _write_users(self) -> None:
        users = {
            "config_version": 1,
            "users": {
                person.name: {
                    "password": person.password,
                    "email": f"{person.name}@example.org",
                    "groups": list(person.groups),
                }
                for person in self.people.values()
            },
        }
        (self.directory / "users.yaml").write_text(json.dumps(users))

    # -- the process

    def start(self) -> None:
        self._write_settings()
        self._write_users()
        log = (self.directory / "nanoidp.log").open("wb")
        command = [str(NANOIDP_PYTHON), "-m", "nanoidp", "--config", str(self.directory)]
        self._process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nanoidp exited: {(self.directory / 'nanoidp.log').read_text()[-2000:]}")
            try:
                self.discovery()
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError("nanoidp did not answer within 60 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    # -- what tests ask of it

    def _call(
        self, path: str, form: dict[str, str] | None = None, auth: tuple[str, str] | None = None
    ) -> Any:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.issuer + path, data=data)
        if auth is not None:
            import base64

            request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def discovery(self) -> dict[str, Any]:
        document: dict[str, Any] = self._call("/.well-known/openid-configuration")
        return document

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/.well-known/jwks.json"

    def jwks(self) -> dict[str, Any]:
        keys: dict[str, Any] = self._call("/.well-known/jwks.json")
        return keys

    def client_credentials_token(
        self,
        client_id: str = BOT_CLIENT,
        secret: str = BOT_SECRET,
        *,
        scope: str = "mlflow.write",
        resource: str | None = None,
    ) -> str:
        """An access token (RS256 JWT) for a machine; `resource` (RFC 8707) makes it the token's `aud`."""
        form = {"grant_type": "client_credentials", "scope": scope}
        if resource is not None:
            form["resource"] = resource
        token: str = self._call("/token", form, (client_id, secret))["access_token"]
        return token

    def password_token(self, person: str, *, scope: str = "openid profile email groups") -> dict[str, Any]:
        """The provider's tokens for a person (resource-owner password grant: for tests only)."""
        form = {
            "grant_type": "password",
            "username": person,
            "password": self.people[person].password,
            "scope": scope,
        }
        tokens: dict[str, Any] = self._call("/token", form, (UI_CLIENT, UI_SECRET))
        return tokens

    def userinfo(self, access_token: str) -> dict[str, Any]:
        """The provider's userinfo for an access token: where it puts a person's name, e-mail and groups
        (its ID tokens carry only the protocol claims, as many providers' do)."""
        request = urllib.request.Request(
            self.discovery()["userinfo_endpoint"], headers={"Authorization": f"Bearer {access_token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            claims: dict[str, Any] = json.loads(response.read())
        return claims

    def set_groups(self, person: str, groups: list[str]) -> None:
        """Change a user's groups at the provider (users.yaml rewritten, then reloaded)."""
        self.people[person].groups = list(groups)
        self._write_users()
        self._call("/api/config/reload", {})

    def sign(self, claims: dict[str, Any], *, algorithm: str = "RS256") -> str:
        """A JWT over `claims` signed with the provider's own current key (read from its keys directory):
        for tokens the provider would never issue but whose signature is genuine (expired, another
        audience, not yet valid)."""
        from joserfc import jwt
        from joserfc.jwk import RSAKey

        keys = self.directory / "keys"
        key = RSAKey.import_key((keys / "rsa_private.pem").read_bytes())
        kid = (keys / "kid.txt").read_text().strip()
        return jwt.encode({"alg": algorithm, "kid": kid, "typ": "JWT"}, claims, key)

    def rotate_signing_key(self) -> str:
        """A new signing key; the old one stays published for tokens it signed. The new key's id."""
        kid: str = self._call("/api/keys/rotate", {})["new_kid"]
        return kid


def installed() -> bool:
    return NANOIDP_PYTHON.exists()


@contextmanager
def running_provider(
    directory: Path, redirect_uris: Iterable[str], people: Iterable[Person] = DEFAULT_PEOPLE
) -> Iterator[OidcProvider]:
    if not installed():
        pytest.skip(f"the test OIDC provider is not installed ({NANOIDP_PYTHON}); `make test` installs it")
    provider = OidcProvider(
        directory, redirect_uris, [Person(p.name, p.password, list(p.groups)) for p in people]
    )
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()
