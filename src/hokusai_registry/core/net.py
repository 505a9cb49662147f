"""Facts about addresses and URLs (pure): internal hosts, the same machine, URLs without credentials."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit


def is_internal_host(host: str) -> bool:
    """Loopback or private addresses, and names that are internal by convention."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "." not in host or host.endswith((".local", ".internal", ".svc", ".cluster.local", ".lan"))
    return address.is_private or address.is_loopback


def is_unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _is_loopback_or_any(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def same_machine(upstream_host: str, listen_host: str) -> bool:
    if upstream_host.lower() == listen_host.lower():
        return True
    # A gateway bound to 0.0.0.0 or a loopback address is reachable as any loopback name.
    return _is_loopback_or_any(upstream_host) and _is_loopback_or_any(listen_host)


def redact_url(url: str) -> str:
    """The URL without user name and password, for messages and logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
