"""Where the sign-in flow sends a browser (pure): the page to return to after signing in, checked so that
the login page can never be used to send someone to another site, and the fixed notices it shows; and
whether a request to a signed-in page is the browser opening it as a page at all."""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from hokusai_registry.policy.routes import LOGIN_PATH, LOGOUT_PATH, OIDC_CALLBACK_PATH, OIDC_LOGIN_PATH

DEFAULT_NEXT = "/mlflow/"
_MAX_NEXT = 2000
# A path on this site: one leading slash (`//host` and `/\host` are other sites to a browser) and no
# control characters or spaces (which browsers strip, turning `/\t/host` into `//host`).
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\x00-\x20\x7f\\]*")
_OWN_PAGES = (LOGIN_PATH, LOGOUT_PATH, OIDC_LOGIN_PATH, OIDC_CALLBACK_PATH)
# Printable ASCII but the backslash: left as it is when non-ASCII characters are percent-encoded.
_ASCII_SAFE = "".join(chr(code) for code in range(0x21, 0x7F) if chr(code) != "\\")

# Why the login page is shown (the `reason` query parameter; refusal kinds name the same reasons), as a
# fixed notice: the query string never puts text of its own on the page.
NOTICES = {
    "signed_out": "You are signed out.",
    "session_ended": "Your session has ended (it expired, was signed out, or its key was revoked). "
    "Sign in again to continue.",
    "revoked": "The key of your session was revoked. Sign in with a current key.",
    "expired": "The key of your session has expired. Sign in with a current key.",
}


def safe_next(value: str | None) -> str:
    """`value` if it is a path on this site (and not the sign-in pages themselves), else the UI."""
    if not value or len(value) > _MAX_NEXT or not _LOCAL_PATH.fullmatch(value):
        return DEFAULT_NEXT
    if value.split("?", 1)[0].rstrip("/") in _OWN_PAGES:
        return DEFAULT_NEXT
    # It becomes a Location header: non-ASCII characters go percent-encoded, as a browser would send them.
    return quote(value, safe=_ASCII_SAFE)


def login_location(next_path: str, kind: str | None = None) -> str:
    query = {"next": safe_next(next_path)}
    if kind in NOTICES:  # a refusal's kind, or "signed_out"
        query["reason"] = kind
    return f"{LOGIN_PATH}?{urlencode(query)}"


def notice(reason: str | None) -> str | None:
    return NOTICES.get(reason or "")


def loaded_by_script(mode: bytes | None, dest: bytes | None) -> bool:
    """Whether the browser says (Fetch Metadata: `Sec-Fetch-Mode`, `Sec-Fetch-Dest`) this is not a
    top-level page load: a script's `fetch`/XHR, a frame, an embed. A page script cannot set these
    headers. Without them (older browsers, API clients) nothing is said, and the other checks decide."""
    return (mode is not None and mode.lower() != b"navigate") or (
        dest is not None and dest.lower() != b"document"
    )
