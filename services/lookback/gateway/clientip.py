"""The client's IP address: the TCP peer, or ``X-Forwarded-For`` through
trusted proxies only.

``X-Forwarded-For`` is a list every proxy appends the address it was
connected from to, so only its right end is written by proxies of ours; a
client can put anything at its left end. With ``trusted_proxies = N``:

- ``N = 0`` (the default): the header is ignored; the address is the TCP
  peer's.
- ``N > 0``: the N-th address from the right of the list (all the
  ``X-Forwarded-For`` headers of the request, in order, joined); when the
  list has fewer than N addresses, its left-most one. No header at all: the
  peer. An entry that is not an IP address (``unknown``, a host name) is not
  used: the peer is. An entry may carry a port (``192.0.2.1:5000``,
  ``[2001:db8::1]:5000``), which is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable


def _address(entry: str) -> str | None:
    entry = entry.strip()
    if entry.startswith("["):  # [v6] or [v6]:port
        entry = entry[1:].partition("]")[0]
    elif entry.count(":") == 1:  # v4:port
        entry = entry.partition(":")[0]
    try:
        return str(ipaddress.ip_address(entry))
    except ValueError:
        return None


def client_ip(peer: str, forwarded_for: Iterable[str], trusted_proxies: int) -> str:
    """The client's address, from the TCP ``peer`` and the request's
    ``X-Forwarded-For`` header values."""
    if trusted_proxies <= 0:
        return peer
    hops = [h for value in forwarded_for for h in value.split(",") if h.strip()]
    if not hops:
        return peer
    chosen = hops[-trusted_proxies] if len(hops) >= trusted_proxies else hops[0]
    return _address(chosen) or peer
