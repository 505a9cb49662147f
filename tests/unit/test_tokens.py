"""Bearer tokens as policy: told apart from keys by shape, their scopes, and whom they act as."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.policy import keys
from hokusai_registry.policy.tokens import TokenClaimsRefused, looks_like_jwt, owner_of, scopes_of


def test_a_jwt_and_a_key_never_look_alike() -> None:
    assert looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")
    assert looks_like_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")  # alg none: refused later, by name
    assert not looks_like_jwt(keys.generate("live").text)
    assert not looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0")
    assert not looks_like_jwt("eyJ a.b.c")


@given(st.sampled_from(["live", "test"]))
def test_no_generated_key_looks_like_a_jwt(environment: str) -> None:
    assert not looks_like_jwt(keys.generate(environment).text)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("claim", "allow_admin", "held"),
    [
        ("openid mlflow.read", False, ("read",)),
        ("mlflow.read mlflow.write", False, ("read", "write")),
        (["mlflow.write", "other"], False, ("read", "write")),
        ("mlflow.admin", False, ("read", "write")),
        ("mlflow.admin", True, ("read", "write", "admin")),
    ],
)
def test_the_highest_mlflow_scope_counts(claim: object, allow_admin: bool, held: tuple[str, ...]) -> None:
    assert scopes_of(claim, default="none", allow_admin=allow_admin) == held


def test_no_mlflow_scope_is_the_default_or_a_refusal() -> None:
    assert scopes_of("openid", default="read", allow_admin=False) == ("read",)
    assert scopes_of(None, default="write", allow_admin=False) == ("read", "write")
    with pytest.raises(TokenClaimsRefused, match=r"no mlflow\.read or mlflow\.write"):
        scopes_of("openid email", default="none", allow_admin=False)


@given(st.lists(st.sampled_from(["mlflow.read", "mlflow.write", "mlflow.admin", "x", "mlflow."]), max_size=6))
def test_admin_is_never_taken_from_a_token_unless_allowed(values: list[str]) -> None:
    try:
        held = scopes_of(values, default="none", allow_admin=False)
    except TokenClaimsRefused:
        return
    assert "admin" not in held


@pytest.mark.parametrize(
    ("claims", "owner"),
    [
        ({"preferred_username": "alice", "email": "a@x", "sub": "1"}, ("alice", True)),
        ({"email": "a@x", "sub": "1", "client_id": "ui"}, ("a@x", True)),
        # A person's token from a client (RFC 9068): its subject is not the client.
        ({"sub": "bob", "client_id": "hokusai-ui"}, ("bob", True)),
        # Client credentials: the subject is the client.
        ({"sub": "ci-bot", "client_id": "ci-bot"}, ("ci-bot", False)),
        ({"azp": "deployer", "sub": "deployer"}, ("deployer", False)),
        ({"sub": "system:serviceaccount:ml:trainer"}, ("system:serviceaccount:ml:trainer", False)),
    ],
)
def test_whom_a_token_acts_as(claims: dict[str, str], owner: tuple[str, bool]) -> None:
    assert owner_of(claims, "preferred_username") == owner


@pytest.mark.parametrize(
    ("claims", "said"),
    [
        ({}, "names nobody"),
        ({"preferred_username": "hokusai:admin"}, "reserved"),
        ({"sub": "x" * 201}, "longer than"),
    ],
)
def test_tokens_that_name_nobody_usable_are_refused(claims: dict[str, str], said: str) -> None:
    with pytest.raises(TokenClaimsRefused, match=said):
        owner_of(claims, "preferred_username")
