"""The address check shared by webhooks and connections: every non-public form is refused, public ones pass."""
import socket

import pytest

from promptbeat.llm import netguard

# Which property names them differs between Python versions (240/4 is "private" in some, "reserved" in
# others), so only the refusal is asserted for these.
NOT_PUBLIC = [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",  # CGNAT
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::1", "::", "fe80::1", "fe80::1%1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1", "2001:db8::1",
    "64:ff9b:1::a00:1",  # NAT64, local-use prefix: the operator's own network
]
# IPv6 forms that carry an IPv4 address a host may deliver to; the message names the carried one.
CARRYING = [
    ("::ffff:127.0.0.1", "127.0.0.1"), ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped
    ("::127.0.0.1", "127.0.0.1"), ("::169.254.169.254", "169.254.169.254"),  # IPv4-compatible
    ("2002:7f00:1::", "127.0.0.1"), ("2002:a9fe:a9fe::1", "169.254.169.254"),  # 6to4
    ("64:ff9b::7f00:1", "127.0.0.1"), ("64:ff9b::a00:1", "10.0.0.1"),  # NAT64, well-known prefix
    # Teredo: server 65.54.227.120 (public), client 127.0.0.1 (stored inverted: 80ff:fffe).
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
          "64:ff9b::808:808"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address):
    assert netguard.refusal(address) is not None


@pytest.mark.parametrize(("address", "carried"), CARRYING)
def test_ipv6_forms_carrying_a_non_public_ipv4_address_are_refused(address, carried):
    assert f"carries {carried}" in (netguard.refusal(address) or "no refusal")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert netguard.refusal(address) is None


def test_every_resolved_address_is_checked_not_only_the_first(monkeypatch):
    answers = ["93.184.215.14", "10.0.0.7"]
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **kw: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers])
    parts = netguard.http_url("https://mixed.example.test/v1")
    with pytest.raises(netguard.AddressRefused, match=r"10\.0\.0\.7, a private address; set SETTING_NAME=1"):
        netguard.checked_addresses(parts, allow_private=False, setting="SETTING_NAME")
    assert netguard.checked_addresses(parts, allow_private=True, setting="SETTING_NAME") == answers
    answers.pop()
    assert netguard.checked_addresses(parts, allow_private=False, setting="SETTING_NAME") == ["93.184.215.14"]


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://[::ffff:7f00:1]/",
                                 "http://localhost/", "http://0/"])
def test_literal_spellings_of_loopback_are_refused_after_resolution(url):
    with pytest.raises(netguard.AddressRefused):
        netguard.checked_addresses(netguard.http_url(url), allow_private=False, setting="X")


@pytest.mark.parametrize("url", ["http://[::1/v1", "ftp://example.com/", "http://:80/", "http://h:99999/",
                                 "http://h:0/", "example.com", "", None, "http://h:port/"])
def test_malformed_urls_are_refused_not_raised(url):
    with pytest.raises(netguard.AddressRefused, match="Use an http"):
        netguard.http_url(url)


def test_an_unresolvable_host_is_refused():
    with pytest.raises(netguard.AddressRefused, match="does not resolve"):
        netguard.checked_addresses(netguard.http_url("http://no-such-host.invalid/"), allow_private=False,
                                   setting="X")
