"""Which addresses a download may connect to: never link-local or cloud-metadata ones.

A video URL comes from the gateway, so the worker fetches whatever the gateway (or anyone who controls
its answers or a redirect) names. The cloud metadata service answers at link-local addresses with the
worker's credentials, so those are refused before any connection is made, for literal addresses in
any spelling (``169.254.169.254``, ``2852039166``, ``[::ffff:169.254.169.254]``, ``[fe80::1%25eth0]``)
and for host names that resolve to them.

Loopback (``127.0.0.0/8``, ``::1``) and private ranges (``10/8``, ``172.16/12``, ``192.168/16``,
``fc00::/7``) stay allowed: self-hosted gateways and their file servers live there. A connection that
must reach a blocked address names it (host or address) in ``allowed_download_hosts``.

The check resolves a name just before the connection resolves it again: a DNS answer that changes in
between (rebinding with a zero TTL) is not caught; ``allowed_download_hosts`` pins the hosts for that.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import unquote

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Never connected to unless named in ``allowed_download_hosts``: the link-local ranges (AWS, GCP, Azure,
#: Oracle and OpenStack metadata at 169.254.169.254) and the metadata addresses outside them (AWS's IPv6
#: ``fd00:ec2::254``, Alibaba Cloud's ``100.100.100.200``).
BLOCKED_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
    ipaddress.ip_network("100.100.100.200/32"),
)


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is written as one (brackets, zone and a trailing dot allowed)."""
    text = unquote(host).strip("[]").rstrip(".").split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_blocked(address: IPAddress) -> bool:
    """Whether ``address`` (or the IPv4 address an IPv4-mapped IPv6 one carries) is in a blocked range."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in BLOCKED_NETWORKS)


def blocked_address(host: str, port: int | None) -> IPAddress | None:
    """The first blocked address ``host`` is or resolves to; None when it has none.

    A name that does not resolve here has none: the connection then fails on its own, or a proxy
    resolves it (a literal address is still checked when a proxy is used).
    """
    literal = literal_address(host)
    if literal is not None:
        return literal if is_blocked(literal) else None
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    for *_, sockaddr in answers:
        address = literal_address(str(sockaddr[0]))
        if address is not None and is_blocked(address):
            return address
    return None


def explicitly_allowed(host: str, address: IPAddress, allowed: tuple[str, ...]) -> bool:
    """Whether ``allowed`` names ``host`` or ``address`` exactly (a wildcard never allows a blocked one)."""
    names = {entry.strip().lower().strip("[]") for entry in allowed}
    return host.lower().strip("[]") in names or any(
        literal_address(name) == address for name in names if literal_address(name) is not None
    )
