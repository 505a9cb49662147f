"""Key specs as the CLI and the admin API receive them, and what logs may say about a presented key."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hokusai_registry.admin.service import KeySpec, problems
from hokusai_registry.policy import keys
from hokusai_registry.policy.keys import parse_duration


def test_durations() -> None:
    assert parse_duration("90d") == dt.timedelta(days=90)
    assert parse_duration(" 12h ") == dt.timedelta(hours=12)
    assert parse_duration("30m") == dt.timedelta(minutes=30)
    for bad in ("0d", "soon", "1w", "-1d", "1.5h", ""):
        with pytest.raises(ValueError, match=r"e\.g\. 90d"):
            parse_duration(bad)


def test_spec_defaults_and_cleanup() -> None:
    spec = KeySpec(name="  ci  ", service_ids=["a", "b", "a"])
    assert (spec.name, spec.scope, spec.owner, spec.service_ids) == ("ci", "write", None, ["a", "b"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": " "}, "name: must not be blank"),
        ({"name": "x", "owner": ""}, "owner: must not be blank"),
        ({"name": "x", "expires_in": "1y"}, "expires_in: '1y' is not a lifetime"),
        ({"name": "x", "service_ids": ["a b"]}, "service_ids: 'a b' is not a service id"),
        ({"name": "x", "rate_limit_per_hour": -5}, "rate_limit_per_hour:"),
        ({"name": "x", "rate_limit_per_hour": 5700463704092182577152}, "rate_limit_per_hour:"),
    ],
)
def test_bad_specs_name_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        KeySpec(**fields)  # type: ignore[arg-type]
    assert message in problems(raised.value.errors())


@given(st.text())
def test_a_hint_never_holds_secret_characters(text: str) -> None:
    hint = keys.hint(text)
    assert hint == "-" or hint in ("hk_live_", "hk_test_") or keys.is_key_id(hint)


def test_hint_of_real_keys() -> None:
    generated = keys.generate("live")
    assert keys.hint(generated.text) == generated.key_id
    assert keys.hint(generated.text[:20]) == "hk_live_"
    assert keys.hint("Bearer-ish junk") == "-"


@pytest.mark.parametrize("fields", [{"name": "hokusai:admin"}, {"name": "ops", "owner": "hokusai:admin"}])
def test_owners_cannot_take_the_gateways_reserved_names(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="reserved for the gateway"):
        KeySpec(**fields)  # type: ignore[arg-type]
