"""The session cookie (pure): reading it among others, and the attributes it is set and cleared with."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.auth.cookies import clear_cookie, cookie_name, read_cookie, set_cookie

NAME = "hokusai_session"
TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def parsed(header: tuple[bytes, bytes]) -> tuple[str, str, dict[str, str | None]]:
    """A Set-Cookie header as (name, value, {attribute name lower-cased: value or None})."""
    name, value = header
    assert name == b"set-cookie"
    first, *rest = value.decode("latin-1").split("; ")
    cookie, sep, content = first.partition("=")
    assert sep
    attributes: dict[str, str | None] = {}
    for part in rest:
        key, has_value, attribute = part.partition("=")
        assert key.lower() not in attributes, f"{key} given twice"
        attributes[key.lower()] = attribute if has_value else None
    return cookie, content, attributes


def test_cookie_names() -> None:
    assert cookie_name(False) == NAME
    assert cookie_name(True) == "__Host-" + NAME
    assert not cookie_name(False).startswith("__")


def test_read_cookie_finds_it_among_others() -> None:
    headers = [
        (b"host", b"gw.example"),
        (b"cookie", b"theme=dark; hokusai_session=abc123; other=x"),
    ]
    assert read_cookie(headers, NAME) == "abc123"


def test_read_cookie_across_several_cookie_headers() -> None:
    headers = [
        (b"cookie", b"theme=dark"),
        (b"accept", b"*/*"),
        (b"cookie", b"lang=en; hokusai_session=second-header"),
    ]
    assert read_cookie(headers, NAME) == "second-header"


def test_read_cookie_first_wins() -> None:
    headers = [
        (b"cookie", b"hokusai_session=first; hokusai_session=second"),
        (b"cookie", b"hokusai_session=third"),
    ]
    assert read_cookie(headers, NAME) == "first"


@pytest.mark.parametrize(
    "cookie",
    [
        b"xhokusai_session=a",
        b"hokusai_session_x=a",
        b"hokusai_sessio=a",
        b"__Host-hokusai_session=a",
        b"Hokusai_Session=a",
        b"hokusai_session",  # no "=": not this cookie with an empty value
        b"theme=hokusai_session=a",
    ],
)
def test_read_cookie_ignores_similar_names(cookie: bytes) -> None:
    assert read_cookie([(b"cookie", cookie)], NAME) is None


def test_read_cookie_reads_the_secure_name_only_when_asked() -> None:
    headers = [(b"cookie", b"hokusai_session=plain; __Host-hokusai_session=secure")]
    assert read_cookie(headers, cookie_name(True)) == "secure"
    assert read_cookie(headers, cookie_name(False)) == "plain"


def test_read_cookie_only_reads_cookie_headers() -> None:
    headers = [
        (b"set-cookie", b"hokusai_session=a"),
        (b"x-cookie", b"hokusai_session=b"),
        (b"authorization", b"hokusai_session=c"),
    ]
    assert read_cookie(headers, NAME) is None
    assert read_cookie([], NAME) is None
    assert read_cookie([(b"cookie", b"")], NAME) is None


def test_read_cookie_strips_spaces_and_quotes() -> None:
    assert read_cookie([(b"cookie", b'a=1;   hokusai_session="quoted" ; b=2')], NAME) == "quoted"
    assert read_cookie([(b"cookie", b"hokusai_session=")], NAME) == ""


other_name = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=20).filter(lambda name: name != NAME)
value = st.text(alphabet=TOKEN_CHARS, max_size=43)


@given(
    st.lists(st.tuples(other_name, value), max_size=5),
    st.lists(st.tuples(other_name, value), max_size=5),
    value,
    st.booleans(),
)
def test_read_cookie_finds_it_wherever_it_is(
    before: list[tuple[str, str]], after: list[tuple[str, str]], wanted: str, split: bool
) -> None:
    pairs = [f"{n}={v}" for n, v in before] + [f"{NAME}={wanted}"] + [f"{n}={v}" for n, v in after]
    if split:
        headers = [(b"cookie", pair.encode()) for pair in pairs]
    else:
        headers = [(b"cookie", "; ".join(pairs).encode())]
    assert read_cookie(headers, NAME) == wanted
    without = [(b"cookie", "; ".join(f"{n}={v}" for n, v in before + after).encode())]
    assert read_cookie(without, NAME) is None


@pytest.mark.parametrize("secure", [False, True])
def test_set_cookie_attributes(secure: bool) -> None:
    name = cookie_name(secure)
    cookie, content, attributes = parsed(set_cookie(name, "sid-value", 3600, secure))
    assert (cookie, content) == (name, "sid-value")
    assert attributes["path"] == "/"
    assert attributes["max-age"] == "3600"
    assert "httponly" in attributes and attributes["httponly"] is None
    assert attributes["samesite"] == "Lax"
    assert ("secure" in attributes) is secure
    assert "domain" not in attributes  # a __Host- cookie must not carry one
    assert "expires" not in attributes


def test_set_cookie_never_has_a_negative_max_age() -> None:
    _, _, attributes = parsed(set_cookie(NAME, "v", -5, False))
    assert attributes["max-age"] == "0"


@pytest.mark.parametrize("secure", [False, True])
def test_clear_cookie(secure: bool) -> None:
    name = cookie_name(secure)
    cookie, content, attributes = parsed(clear_cookie(name, secure))
    assert (cookie, content) == (name, "")
    assert attributes["max-age"] == "0"
    assert attributes["path"] == "/"  # same path as when set, or the browser keeps the old one
    assert "httponly" in attributes
    assert ("secure" in attributes) is secure
