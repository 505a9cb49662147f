"""Who the client is behind trusted proxies (policy/forwarding.py), whose client address the validate
endpoint counts failures against, and request ids that cannot carry a key (issue 15, defects 11, 12, 14).

Behind a load balancer, `X-Forwarded-For` is the client's own text followed by what each proxy appended:
only the right end can be believed, so the client is the rightmost address that is not a trusted proxy."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.admin.api import throttle_address
from hokusai_registry.policy import keys
from hokusai_registry.policy.forwarding import (
    TrustedProxies,
    forwarded_client,
    forwarded_scheme,
    parse_address,
    resolve,
)
from hokusai_registry.policy.headers import request_id
from hokusai_registry.settings import ConfigError, Settings

ALB = TrustedProxies.parse("10.0.0.0/16")  # the load balancer's VPC
LB_NODE = "10.0.3.7"

ipv4 = st.ip_addresses(v=4).map(str)
untrusted = st.ip_addresses().filter(lambda a: not ALB.trusts(str(a))).map(str)
trusted = st.integers(0, 2**16 - 1).map(lambda n: str(ipaddress.ip_address(0x0A000000 + n)))
# Whatever a client may put at the left of the header: any text, commas and spaces included.
client_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=80)


def xff(*values: str) -> list[bytes]:
    return [value.encode("latin-1") for value in values]


# The pure function: forwarded_client.


def test_the_alb_shape_gives_the_address_the_load_balancer_saw() -> None:
    """What the ALB sends: the client's forged entries, then the address it was connected from."""
    assert forwarded_client(LB_NODE, xff("1.2.3.4, 203.0.113.9"), ALB) == "203.0.113.9"
    assert forwarded_client(LB_NODE, xff("203.0.113.9"), ALB) == "203.0.113.9"


@given(forged=client_text, client=untrusted, proxies=st.lists(trusted, max_size=4), peer=trusted)
def test_whatever_the_client_writes_its_address_is_what_the_proxies_appended(
    forged: str, client: str, proxies: list[str], peer: str
) -> None:
    chain = ", ".join([forged, client, *proxies])
    assert forwarded_client(peer, xff(chain), ALB) == str(parse_address(client))


@given(peer=untrusted, headers=st.lists(client_text, max_size=3))
def test_an_untrusted_peer_is_the_client_whatever_it_sends(peer: str, headers: list[str]) -> None:
    assert forwarded_client(peer, xff(*headers), ALB) == peer


@given(peer=trusted, headers=st.lists(client_text, max_size=3))
def test_the_client_is_the_peer_or_an_ip_address_never_other_text(peer: str, headers: list[str]) -> None:
    client = forwarded_client(peer, xff(*headers), ALB)
    assert client == peer or str(parse_address(client)) == client


@pytest.mark.parametrize(
    "value",
    ["evil.example", "<script>", "unknown", "", "hk_live_AAAAAAAAAAAA_x", "6.6.6.6.6", "1.2.3.4 5.6.7.8"],
)
def test_a_hop_that_is_not_an_address_ends_at_the_proxy_that_wrote_it(value: str) -> None:
    assert forwarded_client(LB_NODE, xff(value), ALB) == LB_NODE
    assert forwarded_client(LB_NODE, xff(f"6.6.6.6, {value}"), ALB) == LB_NODE
    assert forwarded_client(LB_NODE, xff(f"6.6.6.6, {value}, 10.0.0.9"), ALB) == "10.0.0.9"
    assert forwarded_client(LB_NODE, xff(f"{value}, 203.0.113.9"), ALB) == "203.0.113.9"


def test_every_hop_trusted_gives_the_leftmost() -> None:
    """A caller inside the trusted network (another service in the VPC)."""
    assert forwarded_client(LB_NODE, xff("10.0.9.9, 10.0.1.1"), ALB) == "10.0.9.9"
    assert forwarded_client(LB_NODE, [], ALB) == LB_NODE


def test_repeated_headers_are_one_list_in_order() -> None:
    assert forwarded_client(LB_NODE, xff("6.6.6.6", "203.0.113.9"), ALB) == "203.0.113.9"
    assert forwarded_client(LB_NODE, xff("203.0.113.9", "10.0.0.1"), ALB) == "203.0.113.9"


@pytest.mark.parametrize(
    ("hop", "client"),
    [
        ("203.0.113.9:4711", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("  203.0.113.9 ", "203.0.113.9"),
    ],
)
def test_addresses_as_proxies_write_them(hop: str, client: str) -> None:
    assert forwarded_client(LB_NODE, xff(hop), ALB) == client


def test_an_ipv4_mapped_peer_is_trusted_as_its_ipv4() -> None:
    assert forwarded_client("::ffff:10.0.3.7", xff("203.0.113.9"), ALB) == "203.0.113.9"


# X-Forwarded-Proto.


@pytest.mark.parametrize(
    ("value", "scheme"),
    [(b"https", "https"), (b"HTTPS ", "https"), (b"http, https", "https"), (b"ftp", "http")],
)
def test_proto_from_a_trusted_peer(value: bytes, scheme: str) -> None:
    assert forwarded_scheme(LB_NODE, value, "http", ALB) == scheme


def test_proto_from_anyone_else_is_ignored() -> None:
    assert forwarded_scheme("203.0.113.9", b"https", "http", ALB) == "http"
    assert forwarded_scheme(LB_NODE, None, "http", ALB) == "http"


def test_resolve_reads_both_headers_only_from_a_trusted_peer() -> None:
    headers = [(b"x-forwarded-for", b"1.1.1.1, 203.0.113.9"), (b"x-forwarded-proto", b"https")]
    assert resolve(LB_NODE, headers, "http", ALB) == ("203.0.113.9", "https")
    assert resolve("203.0.113.9", headers, "http", ALB) is None


# The setting.


@pytest.mark.parametrize("value", ["*", "10.0.0.0/16,*", " * "])
def test_trusting_everyone_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"HOKUSAI_FORWARDED_ALLOW_IPS: '\*' would trust every client"):
        Settings.load(forwarded_allow_ips=value)


@pytest.mark.parametrize("value", ["lb.internal", "10.0.0.0/33", "10.0.0.1-10.0.0.9"])
def test_anything_but_addresses_and_networks_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match=r"HOKUSAI_FORWARDED_ALLOW_IPS: .* is not an IP address or CIDR"):
        Settings.load(forwarded_allow_ips=value)


def test_addresses_networks_and_nobody() -> None:
    proxies = Settings.load(forwarded_allow_ips="10.0.0.0/16, 192.0.2.7,::1,172.16.0.1/12").trusted_proxies
    assert [proxies.trusts(a) for a in ("10.0.255.1", "192.0.2.7", "::1", "172.31.0.1", "192.0.2.8")] == [
        True,
        True,
        True,
        True,
        False,
    ]
    nobody = Settings.load(forwarded_allow_ips="").trusted_proxies
    assert not nobody.trusts("127.0.0.1")
    assert forwarded_client("127.0.0.1", xff("6.6.6.6"), nobody) == "127.0.0.1"
    assert Settings.load().trusted_proxies.trusts("127.0.0.1")  # the default: a proxy on this machine


# The validate endpoint's throttle (defect 12).


def test_validate_failures_count_against_an_untrusted_caller_whatever_client_ip_it_names() -> None:
    assert throttle_address("198.51.100.1", "203.0.113.9", ALB) == "203.0.113.9"
    assert throttle_address("198.51.100.2", "203.0.113.9", ALB) == "203.0.113.9"


def test_a_trusted_caller_names_its_clients() -> None:
    """A gateway in the VPC validating for its own clients: counted per client, qualified by the caller."""
    assert throttle_address("198.51.100.1", "10.0.5.5", ALB) == "10.0.5.5>198.51.100.1"
    assert throttle_address("not an address", "10.0.5.5", ALB) == "10.0.5.5"
    assert throttle_address(None, "10.0.5.5", ALB) == "10.0.5.5"


# Request ids (defect 14).


@given(st.sampled_from(["live", "test"]), st.sampled_from(["{}", "x-{}", "{}.1", "req:{}:2"]))
def test_a_key_is_never_a_request_id(environment: keys.Environment, shape: str) -> None:
    key = keys.generate(environment).text
    for text in (key, key.upper(), key.split("_", 2)[2]):
        offered = shape.format(text).encode()
        made = request_id(offered)
        assert made != offered and text.encode() not in made


@pytest.mark.parametrize(
    "offered",
    # Fixed ids (a uuid4's hex and text forms): collected the same way in every test process.
    [
        b"bd1f164809634a39adadf83496e9e9b6",
        b"1b29ff6a-ef0f-4192-b75d-b80265ffc0a4",
        b"req-42",
        b"a.b:c_d-e",
        b"0" * 32,
    ],
)
def test_ordinary_request_ids_are_kept(offered: bytes) -> None:
    assert request_id(offered) == offered


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0", "10.0.0.0/16, 0.0.0.0/0"])
def test_trusting_every_address_by_a_cidr_is_refused_as_star_is(everyone: str) -> None:
    with pytest.raises(ValueError, match="would trust every client"):
        TrustedProxies.parse(everyone)
