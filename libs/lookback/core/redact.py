"""What may be written to logs and span attributes about people's data.

No raw device identifier, full IP address, key or signing secret leaves a
service in a log line or a span (docs/security.md, "Logs and spans"):

- :func:`ip`: an address truncated to its network, ``/24`` for IPv4 and
  ``/48`` for IPv6 (``203.0.113.0/24``);
- :func:`device_id`: a short stable hash of an identifier (the first 12 hex
  digits of the SHA-256 of its lower-cased form), so log lines about one
  device can still be told apart and correlated;
- :func:`url`: scheme, host and path only: a postback's or SRN query's
  query string carries click and device ids, and its user info credentials;
- :func:`text`: free text (an exception's message, a partner's answer) with
  every URL, IP address (but loopback and unspecified ones, which name no
  one: ``serving on 127.0.0.1:7401``) and UUID-shaped identifier in it
  treated as above.
  The services' log handlers pass every record through it
  (:mod:`lookback.core.telemetry`), and so do span status messages and
  recorded exceptions; values a service knows to be sensitive are redacted
  where they are logged as well.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re

__all__ = ["device_id", "ip", "text", "url"]

IPV4_PREFIX = 24
IPV6_PREFIX = 48
HASH_DIGITS = 12

_UUID = r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
# One pattern, so that whatever matches first at a position wins: a URL
# keeps its host (a partner's, not a person's) and loses its query; an
# address elsewhere is truncated (with the prefix it may already carry, so
# that redacting twice changes nothing).
_SENSITIVE = re.compile(
    r"(?P<url>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+)"
    r"|(?P<query>(?<=[^\s?])\?[^\s'\"<>?#]*=[^\s'\"<>]*)"
    rf"|(?P<uuid>(?<![0-9A-Za-z]){_UUID}(?![0-9A-Za-z]))"
    r"|(?P<v4>(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?:/\d{1,2})?(?!\d))"
    r"|(?P<v6>(?<![\w:.])[0-9A-Fa-f]*:[0-9A-Fa-f]*:[0-9A-Fa-f:.]*(?:%\w+)?(?:/\d{1,3})?)"
)


def device_id(value: str) -> str:
    """A short stable hash of a device identifier (``""`` for none)."""
    normalised = value.strip().lower()
    if not normalised:
        return ""
    return hashlib.sha256(normalised.encode()).hexdigest()[:HASH_DIGITS]


def _network(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int | None) -> str:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    most = IPV4_PREFIX if addr.version == 4 else IPV6_PREFIX
    bits = most if prefix is None else min(prefix, most)
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


def ip(addr: str) -> str:
    """``addr`` truncated to its /24 (IPv4) or /48 (IPv6) network; ``""`` for
    none, ``"invalid"`` for a value that is no address."""
    addr = addr.strip()
    if not addr:
        return ""
    try:
        return _network(ipaddress.ip_address(addr), None)
    except ValueError:
        return "invalid"


def url(value: str) -> str:
    """``scheme://host[:port]/path`` of ``value``: no user info, query or
    fragment; identifiers and addresses in the path are redacted too."""
    head = re.split(r"[?#]", value, maxsplit=1)[0]
    scheme, sep, rest = head.partition("://")
    if not sep:
        return _redact(head, urls=False)
    authority, slash, path = rest.partition("/")
    host = authority.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{_redact(path, urls=False)}"


def _replace(match: re.Match[str], urls: bool) -> str:
    kind, found = match.lastgroup, match.group()
    if kind == "url":
        return url(found) if urls else found
    if kind == "query":
        return ""
    if kind == "uuid":
        return device_id(found)
    addr, _, prefix = found.partition("/")
    try:
        parsed = ipaddress.ip_address(addr)
    except ValueError:
        return found  # a time, a version, an IPv6-looking word: not an address
    if parsed.is_loopback or parsed.is_unspecified:
        return found  # this host's own (a listening address): never a person's
    return _network(parsed, int(prefix) if prefix else None)


def _redact(value: str, urls: bool) -> str:
    return _SENSITIVE.sub(lambda m: _replace(m, urls), value)


def text(value: str) -> str:
    """``value`` with every URL (see :func:`url`), IP address (see :func:`ip`)
    and UUID (see :func:`device_id`) in it redacted. Redacting twice gives
    the same text as redacting once."""
    if not value:
        return value
    return _redact(value, urls=True)
