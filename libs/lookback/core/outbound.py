"""Where the suite may send requests (postbacks, SRN queries): the one place
that decides.

Postback templates and SRN endpoints are URLs chosen by whoever can write
settings, so they are a path into the cluster (SSRF). A destination must be
``http`` or ``https`` and reach public addresses only: loopback, private
(RFC 1918, ``fc00::/7``), link-local (``169.254.0.0/16`` with the cloud
metadata address, ``fe80::/10``), CGNAT (``100.64.0.0/10``), multicast,
broadcast, reserved and unspecified addresses are refused, and so is an IPv6
address that embeds one of them (IPv4-mapped ``::ffff:127.0.0.1``, 6to4,
NAT64). An operator may allow given ranges (``--outbound-allow-cidrs``): that
is how tests and the demo reach their loopback receivers, and nothing else.

- Write time: :meth:`OutboundPolicy.check_url` (a host name is resolved, and
  every address it resolves to must be allowed).
- Send time: :func:`client_session` makes an HTTP session whose resolver
  drops every address that is not allowed and refuses a host left with none
  (:class:`DestinationNotAllowed`), so DNS rebinding gets nowhere;
  :meth:`OutboundPolicy.check_target` checks a URL before it is sent (the
  HTTP client never asks the resolver about an IP literal).
- :func:`read_bounded`: a response body read up to :data:`BODY_LIMIT` and
  never further. Callers pass ``allow_redirects=False`` and a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from lookback.core.config import ConfigError
from lookback.core.errors import FieldViolation, InvalidArgument

log = logging.getLogger("lookback.outbound")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BODY_LIMIT = 64 * 1024
"""Bytes of a response body read at most."""
RESOLVE_TIMEOUT = 2.0
"""Seconds a host name may take to resolve when a setting is written."""
SCHEMES = ("http", "https")
REASON = "destination_not_allowed"
"""The reason a refused postback is dead-lettered with."""
ALLOW_HINT = "allow a range with --outbound-allow-cidrs"


class DestinationNotAllowed(Exception):
    """A request refused before connecting: its destination is not a public
    address, nor in an allowed range. Not an ``OSError``, so the HTTP client
    lets it through unwrapped."""

    def __init__(self, host: str, why: str) -> None:
        super().__init__(f"{host}: {why}")
        self.host = host
        self.why = why


class BodyTooLarge(Exception):
    """A response body longer than the limit (the rest was not read)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.limit = limit


def _nets(*pairs: tuple[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(net), why) for net, why in pairs)


# The first match names the reason; more specific ranges come first.
_REFUSED_V4 = _nets(
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.169.254/32", "link-local (the cloud metadata address)"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved (IETF protocol assignments)"),
    ("192.0.2.0/24", "reserved (documentation)"),
    ("192.88.99.0/24", "reserved (6to4 relay anycast)"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved (benchmarking)"),
    ("198.51.100.0/24", "reserved (documentation)"),
    ("203.0.113.0/24", "reserved (documentation)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("240.0.0.0/4", "reserved"),
)
_REFUSED_V6 = _nets(
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "reserved (local-use NAT64)"),
    ("::/8", "reserved"),
    ("100::/64", "reserved (discard only)"),
    ("2001:db8::/32", "reserved (documentation)"),
    ("2001::/23", "reserved (IETF protocol assignments)"),
    ("fc00::/7", "private (unique local)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, 6to4 or
    NAT64), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def not_public(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address (``loopback``, ``private``, ...);
    None when it is one."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        why = not_public(inner)
        return None if why is None else f"{why} (as {inner})"
    for net, why in _REFUSED_V4 if ip.version == 4 else _REFUSED_V6:
        if ip in net:
            return why
    if ip.is_multicast:
        return "multicast"
    if not ip.is_global:
        return "not a public address"
    return None


def literal_ip(host: str) -> IPAddress | None:
    """``host`` as an IP address, if it is one (brackets allowed)."""
    try:
        return ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def looks_like_ip(host: str) -> bool:
    """Whether the HTTP client takes ``host`` for an IP address (and so
    connects without asking the resolver): digits and dots, or a colon."""
    return ":" in host or host.replace(".", "").isdigit()


def parse_cidrs(text: str) -> tuple[IPNetwork, ...]:
    """``10.1.0.0/16, 127.0.0.0/8`` (comma separated; host bits ignored);
    :class:`ConfigError` naming a bad one."""
    nets = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ConfigError(f"outbound_allow_cidrs: {part!r} is not a CIDR: {exc}") from exc
    return tuple(nets)


_HEAD = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:(?://[^/?#]*)?")
"""A URL's scheme and authority (user info, host and port)."""
_NEVER_IN_URLS = re.compile(r"[^A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]")


def wire_url(url: str) -> yarl.URL:
    """``url`` exactly as it is sent: characters never allowed in a URL
    (spaces, controls, non-ASCII, ``"<>\\^`{|}``) after the host are
    percent-encoded (UTF-8); everything else, existing escapes included
    (``%3A`` stays ``%3A``), is kept as written. ValueError (or
    UnicodeError) when it cannot be parsed."""
    head = _HEAD.match(url)
    end = head.end() if head else 0
    rest = _NEVER_IN_URLS.sub(lambda m: quote(m.group(0), safe=""), url[end:])
    return yarl.URL(url[:end] + rest, encoded=True)


class OutboundPolicy:
    """Which destinations outbound requests may reach: public addresses, and
    those in ``allow_cidrs`` (``ServerConfig.outbound_allow_cidrs``)."""

    def __init__(self, allow_cidrs: str | Iterable[IPNetwork] = "") -> None:
        self.allowed: tuple[IPNetwork, ...] = (
            parse_cidrs(allow_cidrs) if isinstance(allow_cidrs, str) else tuple(allow_cidrs)
        )

    def _in_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allowed)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why a request may not reach ``ip``; None when it may."""
        why = not_public(ip)
        if why is None or self._in_allowed(ip):
            return None
        inner = embedded_ipv4(ip)
        if inner is not None and self._in_allowed(inner):
            return None
        return why

    def target_problem(self, url: yarl.URL) -> str | None:
        """What is wrong with sending to ``url``, before any resolution: its
        scheme, its host, and an IP literal's address."""
        if url.scheme not in SCHEMES:
            return "must be an http:// or https:// URL"
        host = url.raw_host
        if not host:
            return "must name a host"
        ip = literal_ip(host)
        if ip is None:
            if looks_like_ip(host):
                return f"{host} is not a canonical IP address"
            return None
        why = self.refusal(ip)
        return None if why is None else f"must reach a public address: {ip} is {why}"

    def check_target(self, url: yarl.URL) -> None:
        """Send time, before connecting: :class:`DestinationNotAllowed`
        unless ``url`` may be sent (a host name's addresses are checked by
        the session's resolver)."""
        problem = self.target_problem(url)
        if problem is not None:
            raise DestinationNotAllowed(url.raw_host or "", problem)

    async def url_problem(self, url: str, *, unresolved_ok: bool = False) -> str | None:
        """Write time: what is wrong with ``url`` as a destination, or None.
        The scheme, host and port may not contain ``{macros}``; a host name
        is resolved and every address must be allowed. A name that does not
        resolve is a problem, unless ``unresolved_ok`` (then it is logged;
        the send-time resolver still checks)."""
        head = _HEAD.match(url)
        if head is None:
            return "must be an http:// or https:// URL"
        if "{" in head.group(0) or "}" in head.group(0):
            return "the scheme, host and port may not contain macros"
        try:
            target = wire_url(url)
            port = target.port
        except (ValueError, UnicodeError) as exc:
            return f"is not a valid URL: {exc}"
        problem = self.target_problem(target)
        if problem is not None:
            return problem
        host = target.raw_host or ""
        if literal_ip(host) is not None:
            return None
        try:
            addresses = await resolve(host, port or 0)
        except (OSError, TimeoutError, UnicodeError) as exc:
            what = "did not resolve in time" if isinstance(exc, TimeoutError) else f"{exc}"
            if unresolved_ok:
                log.warning("%s does not resolve now (%s); it is checked at send time", host, what)
                return None
            return f"host {host!r} does not resolve: {what}"
        for ip in addresses:
            why = self.refusal(ip)
            if why is not None:
                return f"must reach a public address: {host} resolves to {ip}, which is {why}"
        return None

    async def check_url(self, url: str, field: str) -> None:
        """Write time: :class:`InvalidArgument` naming ``field`` unless
        ``url`` is a destination requests may be sent to."""
        problem = await self.url_problem(url)
        if problem is not None:
            raise InvalidArgument([FieldViolation(field, f"{problem} ({ALLOW_HINT})")])


async def resolve(host: str, port: int, timeout: float = RESOLVE_TIMEOUT) -> list[IPAddress]:
    """Every address ``host`` resolves to (TimeoutError after ``timeout``)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    return [ipaddress.ip_address(str(info[4][0])) for info in infos]


class GuardedResolver(AbstractResolver):
    """Resolves, then drops every address the policy does not allow; a host
    left with none is refused (:class:`DestinationNotAllowed`). The HTTP
    client connects only to what this returns, so a name that resolved to a
    public address when the setting was written and to a private one now
    (DNS rebinding) is refused now."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        refused = ""
        for result in results:
            ip = literal_ip(result["host"])
            why = "not an IP address" if ip is None else self.policy.refusal(ip)
            if why is None:
                allowed.append(result)
            elif not refused:
                refused = f"resolves to {result['host']}, which is {why}"
        if not allowed:
            raise DestinationNotAllowed(host, refused or "resolves to no address")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def client_session(
    policy: OutboundPolicy,
    *,
    limit: int = 100,
    ttl_dns_cache: int = 10,
    headers: dict[str, str] | None = None,
    **options: Any,
) -> aiohttp.ClientSession:
    """An HTTP session for outbound requests: its resolver refuses what
    ``policy`` does not allow; no proxies from the environment; bodies not
    decompressed (a small compressed answer cannot grow past the read
    limit in memory). Check each URL with :meth:`OutboundPolicy.check_target`
    first, pass ``allow_redirects=False`` and read with :func:`read_bounded`."""
    connector = aiohttp.TCPConnector(
        limit=limit, ttl_dns_cache=ttl_dns_cache, resolver=GuardedResolver(policy)
    )
    return aiohttp.ClientSession(
        connector=connector,
        headers={"Accept-Encoding": "identity", **(headers or {})},
        auto_decompress=False,
        trust_env=False,
        **options,
    )


async def read_bounded(
    response: aiohttp.ClientResponse, limit: int = BODY_LIMIT, *, truncate: bool = False
) -> bytes:
    """The response body, if at most ``limit`` bytes; otherwise
    :class:`BodyTooLarge` as soon as that is known (by ``Content-Length``,
    or once ``limit + 1`` bytes arrived), or with ``truncate`` its first
    ``limit`` bytes. Nothing past that is read (the connection is then
    closed, not reused)."""
    length = response.content_length
    if not truncate and length is not None and length > limit:
        raise BodyTooLarge(limit)
    want = limit if truncate else limit + 1
    body = bytearray()
    while len(body) < want:
        chunk = await response.content.read(want - len(body))
        if not chunk:
            break
        body += chunk
    if len(body) > limit:
        raise BodyTooLarge(limit)
    return bytes(body)
