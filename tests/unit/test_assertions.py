"""The gateway's assertions to MLflow (pure): they verify for exactly the request they were made for,
for a short while, and for nothing else; the target agrees however often either side decoded it."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.policy.assertions import (
    ADMIN_USER,
    MAX_AGE_SECONDS,
    AssertionRejected,
    body_digest,
    mlflow_user,
    reserved_user,
    sign,
    verify,
)

SECRET = b"s" * 32
NOW = 1_800_000_000.0
BODY = body_digest(b'{"run_id": "r1"}')
users = st.text(min_size=1, max_size=60).filter(lambda text: "\x00" not in text)
paths = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="?#"), min_size=1, max_size=80).map(
    lambda text: "/" + quote(text)
)
queries = st.text(max_size=60).map(quote)
methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])


@given(users, methods, paths, queries)
def test_an_assertion_verifies_for_its_request(user: str, method: str, path: str, query: str) -> None:
    value = sign(SECRET, user, method, path, query, now=NOW, nonce="n1", body=BODY).decode()
    asserted = verify(SECRET, value, method, path, query, now=NOW + MAX_AGE_SECONDS)
    assert (asserted.user, asserted.nonce, asserted.body) == (user, "n1", BODY)


@given(users, methods, paths, queries)
def test_either_side_may_have_decoded_the_target(user: str, method: str, path: str, query: str) -> None:
    value = sign(SECRET, user, method, path, query, now=NOW, nonce="n1", body=BODY).decode()
    decoded_path = path.replace("%20", " ").replace("%2F", "/")
    assert verify(SECRET, value, method, decoded_path, query, now=NOW).user == user


@given(users, methods, paths, queries, st.sampled_from(["method", "path", "query", "secret", "user", "body"]))
def test_an_assertion_is_good_for_nothing_else(
    user: str, method: str, path: str, query: str, changed: str
) -> None:
    value = sign(SECRET, user, method, path, query, now=NOW, nonce="n1", body=BODY).decode()
    secret = SECRET
    if changed == "method":
        method = "OPTIONS"
    elif changed == "path":
        path += "x"
    elif changed == "query":
        query += "&experiment_id=2"
    elif changed == "secret":
        secret = b"t" * 32
    elif changed == "body":  # another body's digest put in the signed value
        fields = value.split(".")
        fields[4] = body_digest(b'{"run_id": "r2"}')
        value = ".".join(fields)
    else:  # another user put in the signed value
        other = base64.urlsafe_b64encode((user + "x").encode()).rstrip(b"=").decode()
        head, _, rest = value.split(".", 2)
        value = f"{head}.{other}.{rest}"
    with pytest.raises(AssertionRejected, match="not valid for this request"):
        verify(secret, value, method, path, query, now=NOW)


@pytest.mark.parametrize("offset", [MAX_AGE_SECONDS + 1, -10])
def test_an_assertion_expires_and_is_not_accepted_from_the_future(offset: float) -> None:
    value = sign(SECRET, "alice", "GET", "/p", "", now=NOW, nonce="n", body=BODY).decode()
    with pytest.raises(AssertionRejected, match="expired"):
        verify(SECRET, value, "GET", "/p", "", now=NOW + offset)


@pytest.mark.parametrize(
    "value",
    [None, "", "v1", "v1.YQ.1.n.m", "v2.YQ.1.n.-.m", "v1.YQ.x.n.-.m", "v1.***.1.n.-.m", "v1..1.n.-.bWFj"],
)
def test_malformed_or_missing_assertions_are_refused(value: str | None) -> None:
    with pytest.raises(AssertionRejected):
        verify(SECRET, value, "GET", "/p", "", now=NOW)


def test_admin_keys_act_as_the_administrator_and_its_name_is_reserved() -> None:
    assert mlflow_user("alice", admin=True) == ADMIN_USER
    assert mlflow_user("alice", admin=False) == "alice"
    assert reserved_user(ADMIN_USER) and reserved_user("hokusai:anything")
    assert not reserved_user("admin") and not reserved_user("alice")
