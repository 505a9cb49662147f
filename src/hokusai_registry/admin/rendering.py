"""Rendering the gateway's own pages and their answers (Starlette responses), with their security headers.

Templates are Jinja2 with autoescaping on, so every value (key names, owners, error text) is escaped.
The pages need no script at all, which lets the Content-Security-Policy forbid every script.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import jinja2
from starlette.responses import Response

from hokusai_registry.core.asgi import Send
from hokusai_registry.core.refusals import ORIGIN_HEADER, Refusal, send_body

# default-src 'none': nothing loads unless listed; no script-src at all, so no script runs, inline or not.
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    b"frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    # Pages show keys (once) and key lists: never cached, by the browser or anything between.
    (b"cache-control", b"no-store"),
    ORIGIN_HEADER,
)

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("hokusai_registry.admin", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def render(template: str, **context: Any) -> bytes:
    context.setdefault("caller", None)
    return _templates.get_template(template).render(when=when, **context).encode("utf-8")


@cache
def stylesheet() -> bytes:
    return resources.files("hokusai_registry.admin").joinpath("static/hokusai.css").read_bytes()


def whole(status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Response:
    """A page route's answer, sent as `send_body` sends one: exactly these headers, then Content-Length."""
    response = Response(body, status)
    response.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
    return response


def page(status: int, body: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    return whole(status, body, [(b"content-type", b"text/html; charset=utf-8"), *SECURITY_HEADERS, *headers])


def _redirect_headers(location: str, headers: Sequence[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(b"location", location.encode("latin-1")), *SECURITY_HEADERS, *headers]


def redirect(location: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> Response:
    """303 See Other: the browser follows with a GET, whatever the method was."""
    return whole(303, b"", _redirect_headers(location, headers))


async def send_redirect(send: Send, location: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """`redirect` for the gateway's own ASGI code."""
    await send_body(send, 303, b"", _redirect_headers(location, headers))


def stylesheet_response() -> Response:
    return whole(
        200,
        stylesheet(),
        [
            (b"content-type", b"text/css; charset=utf-8"),
            (b"cache-control", b"public, max-age=3600"),
            (b"x-content-type-options", b"nosniff"),
            ORIGIN_HEADER,
        ],
    )


class PageError(Exception):
    """A refusal shown as a page (the gateway's pages answer in HTML, not MLflow JSON)."""

    def __init__(self, status: int, title: str, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.headers = headers


def confirmation_page(
    caller: dict[str, Any],
    *,
    title: str,
    summary: str,
    consequence: str,
    action: str,
    fields: tuple[tuple[str, str], ...],
    button: str,
    cancel: str,
    refused: Refusal | None,
) -> Response:
    """The form that confirms one change, stepping up (`step_up.html`); again with the refusal after a
    failed step-up."""
    body = render(
        "confirm_change.html",
        title=title,
        caller=caller,
        summary=summary,
        consequence=consequence,
        action=action,
        fields=fields,
        button=button,
        cancel=cancel,
        error=refused.plain if refused else None,
    )
    return page(refused.http_status if refused else 200, body, refused.headers if refused else ())
