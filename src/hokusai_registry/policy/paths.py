"""From the raw request target to the one canonical path that is authorized and forwarded (pure).

The path is decoded exactly once. Anything that could mean two different paths to two different
parsers is rejected instead of repaired: `.`/`..` segments in any encoding, encoded `/`, `\\` or `%`
(double encoding), backslashes, control characters, empty segments and invalid UTF-8.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote_to_bytes

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.routes import MOUNTS, Family, classify

# Percent-escapes that decode to a separator, an escape character or a control character.
_FORBIDDEN_ESCAPE = re.compile(rb"%(?:2[fF]|5[cC]|25|[01][0-9a-fA-F]|7[fF])")
_MALFORMED_ESCAPE = re.compile(rb"%(?![0-9a-fA-F]{2})")
_FORBIDDEN_RAW = re.compile(rb"[\x00-\x20\x7f\\]")
# `..;x` counts: servlet-style parsers drop `;` parameters and see `..`.
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:;[^/]*)?(?:/|$)")
_PATH_SAFE = "/:@!$&'()*+,;="
# What `quote` would change in a path: anything but its always-safe characters and _PATH_SAFE.
_NEEDS_QUOTING = re.compile(r"[^A-Za-z0-9_.~/:@!$&'()*+,;=-]")


@dataclass(frozen=True, slots=True)
class Target:
    mount: str  # "", "/mlflow" or "/api/mlflow"
    path: str  # canonical MLflow path, decoded, mount removed
    family: Family


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str


def _bad_path(reason: str) -> Refusal:
    return Refusal(
        Reason.BAD_PATH,
        f" rejected the request path: {reason}. Nothing was forwarded to MLflow.",
    )


def decode_path(raw_path: bytes) -> str:
    if not raw_path.startswith(b"/"):
        raise _bad_path("it must start with '/'")
    if _FORBIDDEN_RAW.search(raw_path):
        raise _bad_path("it contains a backslash, a space or a control character")
    if b"%" in raw_path:
        if _MALFORMED_ESCAPE.search(raw_path):
            raise _bad_path("it contains a malformed percent-escape")
        if _FORBIDDEN_ESCAPE.search(raw_path):
            raise _bad_path("it contains an encoded '/', '\\', '%' or control character")
        raw_path = unquote_to_bytes(raw_path)
    try:
        path = raw_path.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad_path("it is not valid UTF-8") from None
    if _DOT_SEGMENT.search(path):
        raise _bad_path("it contains a '.' or '..' segment")
    if "//" in path:
        raise _bad_path("it contains an empty segment ('//')")
    return path


def unsafe_path_parameter(query: bytes) -> bool:
    """A `path` query parameter (MLflow's artifact routes take one) that climbs out with `..` or is
    absolute."""
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name == "path" and (_DOT_SEGMENT.search(value) or value.startswith("/") or "\\" in value):
            return True
    return False


def resolve(raw_path: bytes) -> Target | Redirect | None:
    """Target to forward, Redirect for a mount without its trailing slash, None if not an MLflow path."""
    path = decode_path(raw_path)
    mount = ""
    for candidate in MOUNTS:
        if path == candidate:
            # The UI loads `static-files/...` relative to the page: it needs the trailing slash.
            return Redirect(candidate + "/")
        if path.startswith(candidate + "/"):
            mount, path = candidate, path[len(candidate) :]
            break
    family = classify(path)
    if family is None:
        return None
    return Target(mount, path, family)


def upstream_path(path: str, api_prefix: str) -> str:
    """The encoded path sent to MLflow; with `ajax-api`, `/api/<v>/...` becomes `/ajax-api/<v>/...`."""
    if api_prefix == "ajax-api" and path.startswith("/api/"):
        path = "/ajax-api/" + path[len("/api/") :]
    # Most paths need no quoting; finding that out is cheaper than `quote` (on every forwarded request).
    return quote(path, safe=_PATH_SAFE) if _NEEDS_QUOTING.search(path) else path
