"""Single-sign-on users on SQLite: identified by (issuer, subject), names never shared, disabling revokes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hokusai_registry.store.key_store import DEFAULT_SCOPES, SELF_SERVICE, SIGN_IN, KeyStore
from hokusai_registry.store.session_store import SessionRow, SessionStore
from hokusai_registry.store.user_store import UserNotAllowed, UserNotFound, UserRecord, UserStore

ISSUER = "https://idp.example"


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    store = KeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    store.migrate()
    return store


@pytest.fixture
def people(keys: KeyStore) -> UserStore:
    return UserStore(keys)


def _seen(people: UserStore, subject: str, name: str, **changes: object) -> UserRecord:
    values: dict[str, object] = {
        "issuer": ISSUER,
        "subject": subject,
        "name": name,
        "email": f"{name}@example.com",
        "kind": "person",
        "scopes": DEFAULT_SCOPES,
        "groups": ("team-a",),
        "create": True,
    }
    values.update(changes)
    return people.seen(**values)  # type: ignore[arg-type]


def test_a_user_is_created_once_and_kept_up_to_date(people: UserStore) -> None:
    first = _seen(people, "sub-1", "alice")
    again = _seen(people, "sub-1", "alice", groups=("team-b", "ml-admins"), email=None)
    assert again.id == first.id
    assert again.groups == ("team-b", "ml-admins")
    assert again.email == "alice@example.com"  # a provider that stops saying keeps what it said
    assert [user.name for user in people.list()] == ["alice"]
    assert people.find(ISSUER, "sub-1") == again


def test_a_bearer_token_never_changes_the_rights_a_sign_in_gave(people: UserStore) -> None:
    signed_in = _seen(people, "sub-1", "alice", scopes=("read", "write", "admin"), groups=("ml-admins",))
    by_token = _seen(people, "sub-1", "alice", scopes=("read",), groups=(), kind="service", sign_in=False)
    assert (by_token.scopes, by_token.groups, by_token.kind) == (signed_in.scopes, ("ml-admins",), "person")
    assert by_token.last_seen_at >= signed_in.last_seen_at
    created = _seen(people, "ci", "ci-bot", scopes=("read",), groups=(), kind="service", sign_in=False)
    assert (created.scopes, created.kind) == (("read",), "service")


def test_the_name_stays_what_it_was_at_creation(people: UserStore) -> None:
    _seen(people, "sub-1", "alice")
    renamed = _seen(people, "sub-1", "alice2")
    assert renamed.name == "alice"


def test_another_identity_never_gets_a_name_that_is_taken(people: UserStore) -> None:
    _seen(people, "sub-1", "alice")
    with pytest.raises(UserNotAllowed, match="already belongs to another identity"):
        _seen(people, "sub-2", "alice")
    with pytest.raises(UserNotAllowed, match="already belongs"):
        _seen(people, "sub-1", "alice", issuer="https://other.example")


def test_without_auto_creation_only_added_users_sign_in(people: UserStore) -> None:
    with pytest.raises(UserNotAllowed, match="users add bob"):
        _seen(people, "sub-2", "bob", create=False)
    invited = people.add("bob", scopes=DEFAULT_SCOPES)
    assert invited.status == "invited"
    claimed = _seen(people, "sub-2", "bob", create=False)
    assert claimed.id == invited.id and claimed.status == "active"


def test_disabling_revokes_every_key_and_session_and_refuses_sign_in(
    people: UserStore, keys: KeyStore
) -> None:
    alice = _seen(people, "sub-1", "alice")
    user_id = alice.id
    own, _ = keys.create(
        "laptop", environment="live", scopes=DEFAULT_SCOPES, sso_user_id=user_id, purpose=SELF_SERVICE
    )
    behind, _ = keys.create(
        "sign-in", environment="live", scopes=DEFAULT_SCOPES, sso_user_id=user_id, purpose=SIGN_IN
    )
    other, _ = keys.create("ci", environment="live", scopes=DEFAULT_SCOPES)
    now = dt.datetime.now(dt.UTC)
    sessions = SessionStore(keys.engine)
    sessions.add(
        SessionRow("h" * 64, behind.key_id, "sealed", now, now, now + dt.timedelta(hours=1)),
        dt.timedelta(minutes=30),
    )
    revision = keys.revision()
    disabled, revoked = people.disable(user_id)
    assert disabled.status == "disabled" and revoked == 2
    assert keys.get(own.key_id).revoked_at is not None  # type: ignore[union-attr]
    assert keys.get(behind.key_id).revoked_at is not None  # type: ignore[union-attr]
    assert keys.get(other.key_id).revoked_at is None  # type: ignore[union-attr]
    assert sessions.count() == 0
    assert keys.revision() > revision
    with pytest.raises(UserNotAllowed, match="disabled"):
        _seen(people, "sub-1", "alice")
    assert people.enable(user_id).status == "active"
    _seen(people, "sub-1", "alice")


def test_unknown_users_are_named_in_the_error(people: UserStore) -> None:
    with pytest.raises(UserNotFound, match="users list"):
        people.disable("nope")
