"""Address checks for outgoing requests: resolve a URL's host and refuse every non-public address."""
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx2 as httpx

DEFAULT_PORTS = {"http": 80, "https": 443}
# The well-known NAT64 prefix (RFC 6052) carries an IPv4 address in its last 32 bits; the local-use
# prefix (RFC 8215) is the network operator's own, so what lies behind it is never public.
NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
# IPv4-compatible addresses (RFC 4291, deprecated): ::a.b.c.d, which some stacks still route to a.b.c.d.
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


class AddressRefused(ValueError):
    """A URL that may not be requested: not http(s), unresolvable, or reaching a non-public address."""


def http_url(url, example="https://example.com/"):
    """The URL's parts if it is an absolute http(s) URL with a host and a valid port."""
    try:
        parts = urlsplit(url or "")
        # Reading the port raises ValueError for one out of range or not a number.
        valid = parts.scheme in DEFAULT_PORTS and parts.hostname and parts.port != 0
    except ValueError:
        valid = False
    if not valid:
        raise AddressRefused(f"Use an http(s) URL such as {example}.")
    return parts


def _translated(address):
    """The IPv4 address an IPv6 address is only another spelling of (mapped, compatible, NAT64), or None."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address in NAT64_WELL_KNOWN or (address in IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _reason(address):
    for reason, applies in (
        ("unspecified", address.is_unspecified), ("loopback", address.is_loopback),
        ("link-local", address.is_link_local), ("multicast", address.is_multicast),
        ("private", address.is_private), ("reserved", address.is_reserved),
        ("site-local", getattr(address, "is_site_local", False)),
        ("not globally reachable", not address.is_global),
    ):
        if applies:
            return reason
    return None


def refusal(address):
    """Why an address is not a public one (a phrase for a message), or None when it is.

    An IPv6 address that carries an IPv4 one is judged by what it carries as well: a mapped,
    compatible or NAT64 address is only a spelling of its IPv4 address, and a 6to4 or Teredo
    address is delivered through the IPv4 addresses inside it.
    """
    address = ipaddress.ip_address(address) if isinstance(address, str) else address
    if address.version == 6:
        translated = _translated(address)
        carried = [translated] if translated else [a for a in (address.sixtofour, *(address.teredo or ())) if a]
        for inner in carried:
            if reason := _reason(inner):
                return f"which carries {inner}, a {reason} address"
        if translated:
            return None
        if address in NAT64_LOCAL_USE:
            return "a local-use NAT64 address"
    reason = _reason(address)
    return f"a {reason} address" if reason else None


def resolve(parts):
    """Every address the URL's host resolves to, as text, in the resolver's order."""
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme],
                                   type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise AddressRefused(f"The host {parts.hostname!r} does not resolve.") from None
    return list(dict.fromkeys(info[4][0] for info in infos))


def checked_addresses(parts, allow_private, setting):
    """Resolve the host once and return its addresses, refusing all if any one is not public.

    Every address is checked, not only the first: a client may try them in turn. setting names the
    environment variable that allows private addresses, for the message.
    """
    addresses = resolve(parts)
    if allow_private:
        return addresses
    for text in addresses:
        reason = refusal(text)
        if reason:
            raise AddressRefused(f"{parts.hostname} resolves to {text}, {reason}; set {setting}=1 to allow "
                                 "private targets.")
    return addresses


def pinned(request, address):
    """The request sent to address, one its host resolved to and was checked at, instead of the name.

    Sending to the name would resolve it again, and the second answer (DNS rebinding) was never
    checked. The name stays in the Host header and, for https, in the TLS handshake, where the
    certificate is verified against it.
    """
    if "%" in address:  # a zone-scoped link-local address (only when private targets are allowed)
        return request
    extensions = dict(request.extensions)
    if request.url.scheme == "https":
        extensions["sni_hostname"] = request.url.host
    headers = httpx.Headers(request.headers)
    headers["Host"] = request.url.netloc.decode("ascii")
    return httpx.Request(request.method, request.url.copy_with(host=address), headers=headers,
                         stream=request.stream, extensions=extensions)


class RefusedConnection(httpx.ConnectError):
    """A request not sent because its host reaches a non-public address."""


class CheckedTransport(httpx.BaseTransport):
    """An HTTP transport that connects only to checked public addresses of each request's host.

    Redirects go through it too, since the client sends each hop as a new request.
    """

    def __init__(self, setting, **options):
        self._setting = setting
        self._inner = httpx.HTTPTransport(**options)

    def handle_request(self, request):
        try:
            parts = http_url(str(request.url))
            address = checked_addresses(parts, allow_private=False, setting=self._setting)[0]
        except AddressRefused as exc:
            raise RefusedConnection(str(exc), request=request) from None
        return self._inner.handle_request(pinned(request, address))

    def close(self):
        self._inner.close()
