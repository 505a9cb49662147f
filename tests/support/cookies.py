"""The session cookie as a test sees it in Set-Cookie headers, whichever HTTP client fetched them."""

from __future__ import annotations

COOKIE = "hokusai_session"


def session_cookie_in(set_cookies: list[str]) -> tuple[str, dict[str, str]] | None:
    """The session cookie among `set_cookies`: its value and attributes (names lower-cased)."""
    for header in set_cookies:
        first, *rest = [part.strip() for part in header.split(";")]
        name, _, value = first.partition("=")
        if name == COOKIE:
            attributes = {}
            for part in rest:
                attribute, _, attribute_value = part.partition("=")
                attributes[attribute.lower()] = attribute_value
            return value, attributes
    return None
