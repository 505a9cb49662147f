"""Where the sign-in flow sends a browser (pure): `next` never leaves the site, notices are fixed text;
and which requests are a browser opening a page itself (Fetch Metadata)."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hokusai_registry.policy.navigation import (
    DEFAULT_NEXT,
    NOTICES,
    loaded_by_script,
    login_location,
    notice,
    safe_next,
)
from hokusai_registry.policy.routes import LOGIN_PATH

LOGIN_PAGE = "http://gw.example/login"
# Pieces that turn a "path" into another site in some browser or parser.
TRICKY = [
    "/",
    "//",
    "\\",
    "/\\",
    "\t",
    "\n",
    "\r",
    " ",
    "\x00",
    "\x0b",
    "\x7f",
    "\u3000",
    "\uff0f",
    "evil.com",
    "@",
    ":",
    "http:",
    "https://",
    "javascript:",
    "%2f",
    "%5c",
    "?",
    "#",
    ".",
    "..",
    "login",
    "logout",
    "mlflow",
]
tricky_text = st.builds(
    lambda lead, pieces: lead + "".join(pieces),
    st.sampled_from(["", "/", "/mlflow/"]),
    st.lists(st.sampled_from(TRICKY), max_size=8),
)
anything = st.one_of(tricky_text, st.text(), st.none())


def resolved_netloc(location: str) -> str:
    """The host a browser on the login page goes to when sent to `location`."""
    return urlsplit(urljoin(LOGIN_PAGE, location)).netloc


@given(anything)
@example("//evil.com")
@example("/\\evil.com")
@example("/\t/evil.com")
@example("\t//evil.com")
@example("/mlflow/ /evil.com")
@example("/mlflow/\\evil.com")
def test_safe_next_never_leaves_the_site(value: str | None) -> None:
    result = safe_next(value)
    assert result.startswith("/")
    assert not result.startswith("//") and not result.startswith("/\\")
    assert not any(char <= " " or char in "\x7f\\" for char in result)
    assert resolved_netloc(result) == "gw.example"
    assert urlsplit(urljoin(LOGIN_PAGE, result)).scheme == "http"
    # It becomes a Location header: ASCII only.
    assert result.isascii()
    # Either the value (non-ASCII characters percent-encoded) or the default: never another path.
    assert result == DEFAULT_NEXT or (value is not None and unquote(result) == unquote(value))


@given(anything)
@example("/logout")
@example("/login/")
def test_safe_next_never_returns_the_sign_in_pages(value: str | None) -> None:
    path = safe_next(value).split("?", 1)[0].rstrip("/")
    assert path not in ("/login", "/logout")


@pytest.mark.parametrize(
    "path",
    [
        "/mlflow/",
        "/admin/keys",
        "/mlflow/?x=1",
        "/mlflow/#/experiments/1",
        "/mlflow/ajax-api/2.0/mlflow/runs/get?run_id=abc&x=%2F",
        "/loginx",
        "/mlflow/login",
        "/",
    ],
)
def test_ordinary_paths_are_kept(path: str) -> None:
    assert safe_next(path) == path


local_path = st.builds(
    lambda first, rest: "/" + first + rest,
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%", min_size=1, max_size=20),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.~%/?=&#:@", max_size=60),
)


@given(local_path)
def test_generated_local_paths_are_kept(path: str) -> None:
    if path.split("?", 1)[0].rstrip("/") in ("/login", "/logout"):
        assert safe_next(path) == DEFAULT_NEXT
    else:
        assert safe_next(path) == path


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "//evil.com",
        "//evil.com/mlflow/",
        "/\\evil.com",
        "\\\\evil.com",
        "https://evil.com",
        "http://gw.example/mlflow/",  # absolute URLs are refused even for this site
        "/\t/evil.com",
        "/\n/evil.com",
        "/\r/evil.com",
        "\t//evil.com",
        " /mlflow/",
        "/mlflow/ x",
        "/mlflow/\x00",
        "javascript:alert(1)",
        "mlflow/",
        "/login",
        "/login/",
        "/login?next=//evil.com",
        "/logout",
        "/logout/",
        "/logout?x=1",
    ],
)
def test_dangerous_or_pointless_values_give_the_default(value: str | None) -> None:
    assert safe_next(value) == DEFAULT_NEXT


def test_over_long_values_give_the_default() -> None:
    at_limit = "/mlflow/" + "a" * (2000 - len("/mlflow/"))
    assert len(at_limit) == 2000
    assert safe_next(at_limit) == at_limit
    assert safe_next(at_limit + "a") == DEFAULT_NEXT


@pytest.mark.parametrize("value", ["/mlflow/\u65e5\u672c", "/mlflow/#/models/\U0001f600"])
def test_safe_next_result_can_be_sent_as_a_location_header(value: str) -> None:
    safe_next(value).encode("latin-1")


def login_query(location: str) -> dict[str, list[str]]:
    parts = urlsplit(location)
    assert parts.path == LOGIN_PATH and not parts.scheme and not parts.netloc
    return parse_qs(parts.query, keep_blank_values=True)


def test_login_location_encodes_next_and_adds_known_reasons() -> None:
    location = login_location("/mlflow/?x=1&reason=evil", "revoked")
    assert "?x=1&" not in location  # next is encoded, not spliced into the query
    assert login_query(location) == {"next": ["/mlflow/?x=1&reason=evil"], "reason": ["revoked"]}
    assert login_query(login_location("/admin/keys")) == {"next": ["/admin/keys"]}


@pytest.mark.parametrize(
    "kind", [None, "", "UNAUTHENTICATED", "Revoked", "revoked ", "<script>", "rate_limited"]
)
def test_login_location_leaves_out_unknown_reasons(kind: str | None) -> None:
    assert login_query(login_location("/mlflow/", kind)) == {"next": ["/mlflow/"]}


def test_login_location_refuses_a_foreign_next() -> None:
    assert login_query(login_location("//evil.com", "expired")) == {
        "next": [DEFAULT_NEXT],
        "reason": ["expired"],
    }


@given(anything, st.one_of(st.none(), st.sampled_from(sorted(NOTICES)), st.text()))
def test_login_location_round_trips(next_path: str | None, kind: str | None) -> None:
    query = login_query(login_location(next_path or "", kind))
    assert query["next"] == [safe_next(next_path or "")]
    assert query.get("reason") == ([kind] if kind in NOTICES else None)


@pytest.mark.parametrize("reason", sorted(NOTICES))
def test_known_reasons_have_their_notice(reason: str) -> None:
    text = notice(reason)
    assert text is not None and text == NOTICES[reason]
    assert text != reason and text.endswith(".")  # a sentence, not the parameter


def test_notices_are_distinct_sentences() -> None:
    assert {"signed_out", "session_ended", "revoked", "expired"} <= set(NOTICES)
    assert len(set(NOTICES.values())) == len(NOTICES)


@pytest.mark.parametrize("reason", [None, "", "Revoked", "signed_out ", "<b>hi</b>", "You are signed out."])
def test_unknown_reasons_have_no_notice(reason: str | None) -> None:
    assert notice(reason) is None


@given(st.text())
def test_notice_never_echoes_its_input(reason: str) -> None:
    text = notice(reason)
    if reason in NOTICES:
        assert text == NOTICES[reason]
    else:
        assert text is None


@pytest.mark.parametrize(
    ("mode", "dest"),
    [
        (None, None),  # an older browser or an API client: nothing said
        (b"navigate", b"document"),  # the address bar, a link, a form submitted in the window
        (b"navigate", None),
        (None, b"document"),
        (b"Navigate", b"Document"),
    ],
)
def test_a_page_load_is_not_a_script(mode: bytes | None, dest: bytes | None) -> None:
    assert not loaded_by_script(mode, dest)


@pytest.mark.parametrize(
    ("mode", "dest"),
    [
        (b"cors", b"empty"),  # fetch() or XHR from a page of this origin
        (b"same-origin", b"empty"),
        (b"no-cors", b"empty"),
        (b"navigate", b"iframe"),  # a form aimed at a frame
        (b"navigate", b"frame"),
        (b"navigate", b"embed"),
        (b"navigate", b"object"),
        (b"websocket", b"websocket"),
        (b"cors", None),
        (None, b"empty"),
        (b"", b""),
    ],
)
def test_scripts_and_frames_are_not_page_loads(mode: bytes | None, dest: bytes | None) -> None:
    assert loaded_by_script(mode, dest)
