"""Who the client is behind trusted proxies (pure).

Every proxy appends the address it was connected from to `X-Forwarded-For`, so only the right end of the
list is written by proxies; the left end is whatever the client sent. The client is therefore the
rightmost address that is not a trusted proxy, found by walking from the connection's peer leftwards
while each hop is trusted. A value that is not an IP address (a name, garbage, a key) stops the walk:
the client is then the last proxy reached, never the value. `X-Forwarded-Proto` counts only from a
trusted peer. Trusting `*` would make the client's own leftmost entry its address, so it is refused.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

from hokusai_registry.core.asgi import Headers

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = frozenset({"http", "https"})


def parse_address(text: str) -> Address | None:
    """An IP address as proxies write it (bare, `[v6]`, or with a `:port`), IPv4-mapped IPv6 as IPv4;
    None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


STAR_PROBLEM = (
    "would trust every client's own X-Forwarded-For (any caller could choose its address); list the "
    "load balancer's addresses or subnets, e.g. 10.0.0.0/16"
)


class TrustedProxies:
    """The proxies (load balancers) in front of the gateway, as addresses and CIDR networks."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)
        # Peers repeat (a load balancer has a few addresses): remember the answer per peer.
        self._trusts = functools.lru_cache(maxsize=4096)(self._compute)

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """`10.0.0.0/16, 192.0.2.7, ::1`; empty trusts nobody. ValueError says what is wrong."""
        networks: list[Network] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if item == "*":
                raise ValueError(f"'*' {STAR_PROBLEM}")
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item[:60]!r} is not an IP address or CIDR network (e.g. 10.0.0.0/16, 192.0.2.7)"
                ) from None
            if network.prefixlen == 0:
                raise ValueError(f"{item!r} {STAR_PROBLEM}")  # '*' by another name
            networks.append(network)
        return cls(networks)

    def _compute(self, text: str) -> bool:
        address = parse_address(text)
        return address is not None and any(address in network for network in self.networks)

    def trusts(self, address: str) -> bool:
        return bool(self.networks) and len(address) <= 64 and self._trusts(address)


def forwarded_client(peer: str, forwarded_for: Iterable[bytes], proxies: TrustedProxies) -> str:
    """The client's address: `peer` unless it is a trusted proxy, else the rightmost address in the
    `X-Forwarded-For` values (in order of arrival) that is not a trusted proxy; if every one is, the
    leftmost. A hop that is not an IP address ends the walk at the proxy that wrote it."""
    if not proxies.trusts(peer):
        return peer
    client = peer
    hops = [hop for value in forwarded_for for hop in value.decode("latin-1").split(",")]
    for hop in reversed(hops):
        address = parse_address(hop)
        if address is None:
            return client
        client = str(address)
        if not proxies.trusts(client):
            return client
    return client


def forwarded_scheme(peer: str, forwarded_proto: bytes | None, scheme: str, proxies: TrustedProxies) -> str:
    """The scheme the client used: the nearest proxy's `X-Forwarded-Proto` (its last value) if the peer
    is trusted and it names http or https, else the connection's own."""
    if forwarded_proto is None or not proxies.trusts(peer):
        return scheme
    named = forwarded_proto.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
    return named if named in SCHEMES else scheme


def resolve(peer: str, headers: Headers, scheme: str, proxies: TrustedProxies) -> tuple[str, str] | None:
    """The client's address and scheme from the request's forwarding headers, or None when the peer
    is not a trusted proxy (the connection itself is the client)."""
    if not proxies.trusts(peer):
        return None
    forwarded_for: list[bytes] = []
    forwarded_proto: bytes | None = None
    for name, value in headers:
        if name == b"x-forwarded-for":
            forwarded_for.append(value)
        elif name == b"x-forwarded-proto":
            forwarded_proto = value
    return (
        forwarded_client(peer, forwarded_for, proxies),
        forwarded_scheme(peer, forwarded_proto, scheme, proxies),
    )
