"""The outbound address rules, by classifying addresses: nothing is connected to.

A test must never send traffic to a private or public network, so every blocked range is checked
here by classifying the address; tests/integration/test_outbound.py connects to loopback only.
"""

from __future__ import annotations

import ipaddress

import pytest

from scheduler.config import ConfigError, load_settings
from scheduler.runner.outbound import (
    blocked_reason,
    canonical_url,
    literal_address,
    numeric_ipv4,
)


def nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


BLOCKED = [
    ("127.0.0.1", "a loopback address"),
    ("127.255.255.254", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.1", "a private address"),
    ("172.31.255.255", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "the cloud metadata address (link-local)"),
    ("169.254.10.10", "a link-local address"),
    ("100.64.0.1", "a carrier-grade NAT (shared) address"),
    ("100.127.255.255", "a carrier-grade NAT (shared) address"),
    ("0.0.0.0", "in 0.0.0.0/8, which reaches this host"),  # noqa: S104 - an address checked, not bound
    ("0.1.2.3", "in 0.0.0.0/8, which reaches this host"),
    ("224.0.0.1", "a multicast address"),
    ("239.255.255.250", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "the broadcast address"),
    ("192.0.2.7", "a documentation address (reserved)"),
    ("198.18.0.1", "a benchmarking address (reserved)"),
    ("::1", "a loopback address"),
    ("::", "the unspecified address"),
    ("fc00::1", "a unique local (private) address"),
    ("fd12:3456:789a::1", "a unique local (private) address"),
    ("fe80::1", "a link-local address"),
    ("ff02::1", "a multicast address"),
    ("fec0::1", "a site-local address (deprecated)"),
    ("::ffff:127.0.0.1", "an IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("::ffff:10.0.0.1", "an IPv4-mapped form of 10.0.0.1, a private address"),
    ("::ffff:169.254.169.254", "an IPv4-mapped form of 169.254.169.254, the cloud metadata address"),
    ("64:ff9b::7f00:1", "a NAT64 form of 127.0.0.1, a loopback address"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 form of 169.254.169.254, the cloud metadata address"),
    ("64:ff9b:1::a00:1", "a local-use NAT64 address"),
    ("2002:7f00:1::", "a 6to4 form of 127.0.0.1, a loopback address"),
    ("2002:c0a8:101::1", "a 6to4 form of 192.168.1.1, a private address"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a Teredo form of 127.0.0.1, a loopback address"),
    ("::7f00:1", "a reserved address"),
    ("2001:db8::1", "a documentation address (reserved)"),
]


ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


class TestAddressRules:
    """Every blocked range is refused with a reason naming it; public addresses pass; allow-nets open."""

    @pytest.mark.parametrize(("address", "reason"), BLOCKED)
    def test_a_blocked_address_is_refused_with_its_reason(self, address, reason):
        found = blocked_reason(ipaddress.ip_address(address))
        assert found is not None
        assert found.startswith(reason)

    @pytest.mark.parametrize("address", ALLOWED)
    def test_a_public_address_is_allowed(self, address):
        assert blocked_reason(ipaddress.ip_address(address)) is None

    def test_an_allowed_network_opens_exactly_itself(self):
        allow = nets("127.0.0.0/8", "10.20.0.0/16")
        assert blocked_reason(ipaddress.ip_address("127.0.0.1"), allow) is None
        assert blocked_reason(ipaddress.ip_address("10.20.3.4"), allow) is None
        assert blocked_reason(ipaddress.ip_address("10.21.0.1"), allow) == "a private address"
        assert blocked_reason(ipaddress.ip_address("::1"), allow) == "a loopback address"

    def test_an_allowed_ipv4_network_opens_its_ipv6_spellings_too(self):
        allow = nets("127.0.0.0/8")
        assert blocked_reason(ipaddress.ip_address("::ffff:127.0.0.1"), allow) is None
        assert blocked_reason(ipaddress.ip_address("64:ff9b::7f00:1"), allow) is None
        assert (
            blocked_reason(ipaddress.ip_address("::ffff:10.0.0.1"), allow)
            == "an IPv4-mapped form of 10.0.0.1, a private address"
        )

    @pytest.mark.parametrize(
        "host", ["2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "017700000001", "127.1", "127.0.0.1."]
    )
    def test_every_inet_aton_spelling_of_loopback_is_read_as_127_0_0_1(self, host):
        assert numeric_ipv4(host) == ipaddress.ip_address("127.0.0.1")
        assert literal_address(host) == ipaddress.ip_address("127.0.0.1")

    @pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "0x1g", "", "a.1"])
    def test_names_that_are_not_numbers_are_left_to_the_resolver(self, host):
        assert numeric_ipv4(host) is None

    def test_ipv6_literals_are_read_with_or_without_brackets(self):
        assert literal_address("[::1]") == ipaddress.ip_address("::1")
        assert literal_address("::ffff:127.0.0.1") == ipaddress.ip_address("::ffff:7f00:1")

    def test_canonical_url_rewrites_only_unusual_ipv4_spellings(self):
        assert canonical_url("http://0177.0.0.1:8080/a?b=1") == "http://127.0.0.1:8080/a?b=1"
        assert canonical_url("https://2130706433/") == "https://127.0.0.1/"
        assert canonical_url("http://127.0.0.1/x") == "http://127.0.0.1/x"
        assert canonical_url("http://example.com/x") == "http://example.com/x"
        assert canonical_url("http://[::1]:80/") == "http://[::1]:80/"

    def test_allow_nets_setting_is_parsed_and_bad_cidrs_are_named(self):
        settings = load_settings({"SCHEDULER_HTTP_ALLOW_NETS": "127.0.0.0/8, ::1/128"})
        assert settings.http_allow_nets == nets("127.0.0.0/8", "::1/128")
        with pytest.raises(ConfigError, match="SCHEDULER_HTTP_ALLOW_NETS"):
            load_settings({"SCHEDULER_HTTP_ALLOW_NETS": "localhost"})
