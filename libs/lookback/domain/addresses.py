"""Addresses that many devices share, or that are no device's own: never
used for probabilistic matching (ATTRIBUTION_RULES.md section 6).

The list is explicit rather than Python's ``is_private``/``is_global``, which
also call the documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24, 2001:db8::/32) private: here those count as ordinary public
addresses, so examples and tests can use them. An IPv4 address written as
IPv6 (``::ffff:10.0.0.1``) is judged as the IPv4 address.
"""

from __future__ import annotations

import bisect
import ipaddress
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Blocklist:
    """CIDRs as sorted, merged integer ranges per IP version, so that an
    address is looked up in O(log n) however long the list."""

    starts: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    """Range starts, for IPv4 (index 0) and IPv6 (index 1)."""
    ends: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())
    """The matching range ends (inclusive)."""

    def __bool__(self) -> bool:
        return bool(self.starts[0] or self.starts[1])

    def __contains__(self, ip: str) -> bool:
        address = parse(ip) if ip else None
        if address is None:
            return False
        which = 0 if address.version == 4 else 1
        value = int(address)
        at = bisect.bisect_right(self.starts[which], value) - 1
        return at >= 0 and value <= self.ends[which][at]


def parse_blocklist(entries: tuple[str, ...] | list[str]) -> Blocklist:
    """The blocklist of ``entries`` (CIDRs; a bare address is one host;
    IPv4-mapped IPv6 as IPv4); raises ValueError naming the first bad entry."""
    ranges: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])
    for entry in entries:
        try:
            network = ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IPv4 or IPv6 address or CIDR") from exc
        if (
            isinstance(network, ipaddress.IPv6Network)
            and (mapped := network.network_address.ipv4_mapped) is not None
            and network.prefixlen >= 96
        ):
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
        first, last = int(network.network_address), int(network.broadcast_address)
        ranges[0 if network.version == 4 else 1].append((first, last))
    starts: list[tuple[int, ...]] = []
    ends: list[tuple[int, ...]] = []
    for spans in ranges:
        merged: list[list[int]] = []
        for first, last in sorted(spans):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        starts.append(tuple(m[0] for m in merged))
        ends.append(tuple(m[1] for m in merged))
    return Blocklist((starts[0], starts[1]), (ends[0], ends[1]))


def blocked(ip: str, blocklist: Blocklist) -> bool:
    """True when ``ip`` lies in ``blocklist``."""
    return bool(blocklist) and ip in blocklist
