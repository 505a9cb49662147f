"""The session cookie (pure): its name, reading it from a request, setting and clearing it.

Over https the name carries the `__Host-` prefix, which browsers accept only with `Secure`, `Path=/` and
no `Domain`: no other host or plain-http page can plant or overwrite it.
"""

from __future__ import annotations

from hokusai_registry.core.asgi import Headers

_NAME = "hokusai_session"
_SECURE_NAME = "__Host-hokusai_session"


def cookie_name(secure: bool) -> str:
    return _SECURE_NAME if secure else _NAME


def read_cookie(headers: Headers, name: str) -> str | None:
    """The value of cookie `name` in the request's Cookie headers; the first wins."""
    wanted = name.encode("latin-1")
    for header, value in headers:
        if header != b"cookie":
            continue
        for pair in value.split(b";"):
            cookie, sep, content = pair.strip().partition(b"=")
            if sep and cookie == wanted:
                return content.strip().strip(b'"').decode("latin-1")
    return None


def set_cookie(name: str, value: str, max_age: int, secure: bool) -> tuple[bytes, bytes]:
    # HttpOnly: page scripts (and so injected ones) cannot read it. Lax: sent on top-level navigation to
    # the gateway, not on cross-site subrequests or form posts.
    attributes = [f"{name}={value}", "Path=/", f"Max-Age={max(max_age, 0)}", "HttpOnly", "SameSite=Lax"]
    if secure:
        attributes.append("Secure")
    return b"set-cookie", "; ".join(attributes).encode("latin-1")


def clear_cookie(name: str, secure: bool) -> tuple[bytes, bytes]:
    return set_cookie(name, "", 0, secure)
