"""The pure parts of signing in at an identity provider: the flow cookie, groups as teams, `auth_time`."""

from __future__ import annotations

import base64
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.admin.sso import groups_of, team_changes
from hokusai_registry.auth.oidc import FLOW_MAX_AGE, Flow, authenticated_at


def test_a_flow_survives_its_cookie() -> None:
    flow = Flow("s" * 43, "n" * 43, "v" * 64, "/mlflow/#/models", time.time())
    assert Flow.from_cookie(flow.to_cookie()) == flow


def test_an_old_or_future_flow_is_no_flow() -> None:
    assert Flow.from_cookie(Flow("s", "n", "v", "/", time.time() - FLOW_MAX_AGE - 1).to_cookie()) is None
    assert Flow.from_cookie(Flow("s", "n", "v", "/", time.time() + 60).to_cookie()) is None


@given(st.text(max_size=300))
def test_any_cookie_text_is_a_flow_or_none(text: str) -> None:
    found = Flow.from_cookie(text)
    assert found is None or isinstance(found, Flow)


def test_a_cookie_of_the_wrong_shape_is_no_flow() -> None:
    wrong = base64.urlsafe_b64encode(json.dumps([1, 2, 3, 4, 5]).encode()).decode()
    assert Flow.from_cookie(wrong) is None
    assert Flow.from_cookie("x" * 3000) is None
    assert Flow.from_cookie(None) is None


def test_groups_are_a_list_or_one_name() -> None:
    assert groups_of({"groups": ["a", " b ", "a", "", 3]}, "groups") == ("a", "b", "3")
    assert groups_of({"roles": "admins"}, "roles") == ("admins",)
    assert groups_of({"groups": {"a": 1}}, "groups") == ()
    assert groups_of({}, "groups") == ()


def test_teams_follow_groups_and_keep_what_an_admin_added() -> None:
    teams = {"team-a": ["alice"], "team-b": [], "hand-made": ["alice"], "team-c": ["alice"]}
    joins, leaves = team_changes(teams, "alice", groups=["team-b", "no-such-team"], before=["team-a"])
    # team-b joined; team-a left (a group gave it); hand-made and team-c stay (no group ever gave them).
    assert (joins, leaves) == (["team-b"], ["team-a"])


@given(
    st.sets(st.sampled_from(["a", "b", "c", "d"])),
    st.sets(st.sampled_from(["a", "b", "c", "d"])),
    st.sets(st.sampled_from(["a", "b", "c", "d"])),
)
def test_after_the_changes_the_user_is_in_exactly_the_teams_their_groups_name(
    groups: set[str], before: set[str], member_of: set[str]
) -> None:
    teams = {team: (["alice"] if team in member_of else []) for team in ("a", "b", "c")}
    joins, leaves = team_changes(teams, "alice", groups, before)
    after = (member_of & set(teams)) | set(joins)
    after -= set(leaves)
    assert after & groups == set(teams) & groups
    assert not (after & (before - groups))


def _token(claims: dict[str, object]) -> str:
    def segment(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'RS256'})}.{segment(claims)}.c2ln"


def test_auth_time_is_read_from_the_kept_id_token() -> None:
    at = authenticated_at(_token({"auth_time": 1_700_000_000}))
    assert at is not None and at.timestamp() == 1_700_000_000
    assert authenticated_at(_token({"sub": "x"})) is None
    assert authenticated_at(_token({"auth_time": True})) is None
    assert authenticated_at("not a token") is None
