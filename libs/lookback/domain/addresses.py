"""Addresses that many devices share, or that are no device's own: never
used for probabilistic matching (ATTRIBUTION_RULES.md section 6).

The list is explicit rather than Python's ``is_private``/``is_global``, which
also call the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32) private: here those count as ordinary public
addresses, so examples and tests can use them. An IPv4 address written as
IPv6 (``::ffff:10.0.0.1``) is judged as the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SHARED_OR_SPECIAL: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # unspecified, "this network"
        "127.0.0.0/8",  # loopback
        "10.0.0.0/8",  # private (RFC 1918)
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",  # carrier-grade NAT (RFC 6598)
        "169.254.0.0/16",  # link-local
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "::/128",  # unspecified
        "::1/128",  # loopback
        "fc00::/7",  # unique local (private)
        "fe80::/10",  # link-local
        "ff00::/8",  # multicast
    )
)
"""Every range excluded from probabilistic matching."""


def parse(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``ip`` names (IPv4-mapped IPv6 as IPv4); None if it is none."""
    try:
        address = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@lru_cache(maxsize=65536)
def shared_or_special(ip: str) -> bool:
    """True when ``ip`` is in :data:`SHARED_OR_SPECIAL` (or is no address at all)."""
    address = parse(ip)
    if address is None:
        return True
    return any(address in network for network in SHARED_OR_SPECIAL)


def parse_blocklist(entries: tuple[str, ...] | list[str]) -> tuple[Network, ...]:
    """The CIDRs of a blocklist (a bare address is a one-host network);
    raises ValueError naming the first bad entry."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IPv4 or IPv6 address or CIDR") from exc
    return tuple(out)


def blocked(ip: str, networks: tuple[Network, ...]) -> bool:
    """True when ``ip`` lies in one of ``networks``."""
    if not networks or not ip:
        return False
    address = parse(ip)
    if address is None:
        return False
    return any(address.version == n.version and address in n for n in networks)
