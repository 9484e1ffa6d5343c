"""Where outbound requests may go (lookback.core.outbound): the address
table, URLs checked when written, the resolver and literal check at send
time (against a real local server), bounded reads."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from lookback.core.config import ConfigError
from lookback.core.errors import InvalidArgument
from lookback.core.outbound import (
    BODY_LIMIT,
    BodyTooLarge,
    DestinationNotAllowed,
    OutboundPolicy,
    client_session,
    read_bounded,
    wire_url,
)
from lookback.testing.http import LOCAL_CIDRS, start_http

NOT_PUBLIC = {
    "127.0.0.1": "loopback",
    "127.255.0.9": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.254": "private",
    "192.168.1.1": "private",
    "169.254.169.254": "metadata",
    "169.254.1.1": "link-local",
    "100.64.0.1": "CGNAT",
    "0.0.0.0": "unspecified",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "255.255.255.255": "broadcast",
    "240.0.0.1": "reserved",
    "198.18.0.1": "reserved",
    "::1": "loopback",
    "::": "unspecified",
    "fe80::1": "link-local",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "ff02::1": "multicast",
    "::ffff:127.0.0.1": "loopback",
    "::ffff:10.0.0.1": "private",
    "::ffff:169.254.169.254": "metadata",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::": "metadata",  # 6to4 of 169.254.169.254
    "64:ff9b::a00:1": "private",  # NAT64 of 10.0.0.1
    "2001:db8::1": "reserved",
}
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::5db8:d822"]


@pytest.mark.parametrize(("address", "why"), NOT_PUBLIC.items())
def test_addresses_that_are_not_public_are_refused(address: str, why: str) -> None:
    refusal = OutboundPolicy().refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert OutboundPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allowed_ranges_open_exactly_themselves() -> None:
    policy = OutboundPolicy("127.0.0.0/8, 10.1.0.0/16")
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "10.1.200.3"):
        assert policy.refusal(ipaddress.ip_address(address)) is None, address
    for address in ("::1", "10.2.0.1", "169.254.169.254", "192.168.1.1"):
        assert policy.refusal(ipaddress.ip_address(address)) is not None, address


@pytest.mark.parametrize("bad", ["nope", "10.0.0.0/33", "127.0.0.0/8,300.1.1.1", "::1/129"])
def test_a_bad_cidr_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="outbound_allow_cidrs"):
        OutboundPolicy(bad)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://93.184.216.34/x", "http:// or https://"),
        ("gopher://93.184.216.34/x", "http:// or https://"),
        ("http:///x", "must name a host"),
        ("https://{host}/x", "may not contain macros"),
        ("https://h{click_id}.example/x", "may not contain macros"),
        ("https://93.184.216.34:{port}/x", "may not contain macros"),
        ("http://127.0.0.1:8080/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/x", "loopback"),
        ("http://user:pw@10.0.0.1/x", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://localhost:1/x", "localhost resolves to 127.0.0.1"),
        ("http://127.1/x", "not a canonical IP address"),
        ("http://2130706433/x", "not a canonical IP address"),
        ("http://0x7f.0.0.1/x", "loopback"),
        ("http://lookback-test.invalid/x", "does not resolve"),
        ("http://93.184.216.34:99999/x", "not a valid URL"),
    ],
)
async def test_urls_refused_when_written(url: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await OutboundPolicy().check_url(url, "settings.url")
    (violation,) = refused.value.violations
    assert violation.field == "settings.url"
    assert problem in violation.description, violation.description


async def test_public_and_allowed_urls_pass_when_written() -> None:
    await OutboundPolicy().check_url("https://93.184.216.34/i?c={click_id}&n=a%3Ab", "url")
    await OutboundPolicy().check_url("http://[2606:4700:4700::1111]:8080/x", "url")
    local = OutboundPolicy(LOCAL_CIDRS)
    await local.check_url("http://localhost:1/x", "url")
    await local.check_url("http://127.0.0.1:1/x", "url")


def test_the_url_is_sent_as_written() -> None:
    url = wire_url("http://h.example/p%3Aq%2Fr/a b?u=http%3A%2F%2Fx&n=caf\u00e9&s=a+b#frag")
    assert url.raw_path_qs == "/p%3Aq%2Fr/a%20b?u=http%3A%2F%2Fx&n=caf%C3%A9&s=a+b"
    assert url.raw_host == "h.example"


@pytest.fixture
async def local_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A local server: ``/size/N`` answers N bytes; the paths it saw."""
    seen: list[str] = []

    async def sized(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(body=b"x" * int(request.match_info["n"]))

    async def streamed(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        response = web.StreamResponse()  # chunked: no Content-Length
        await response.prepare(request)
        await response.write(b"y" * int(request.match_info["n"]))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/size/{n}", sized)
    app.router.add_get("/stream/{n}", streamed)
    runner, url = await start_http(app)
    yield url, seen
    await runner.cleanup()


async def test_the_resolver_refuses_a_name_that_resolves_to_loopback(
    local_server: tuple[str, list[str]],
) -> None:
    url, seen = local_server
    port = url.rsplit(":", 1)[1]
    async with client_session(OutboundPolicy()) as session:
        with pytest.raises(DestinationNotAllowed, match=r"localhost: resolves to 127\.0\.0\.1"):
            async with session.get(f"http://localhost:{port}/size/1"):
                pass
    assert seen == []  # refused before connecting
    async with client_session(OutboundPolicy(LOCAL_CIDRS)) as session:
        async with session.get(f"http://localhost:{port}/size/1") as response:
            assert response.status == 200
    assert seen == ["/size/1"]


def test_ip_literals_are_checked_before_sending() -> None:
    """The HTTP client connects to an IP literal without asking the
    resolver: check_target is what refuses it."""
    with pytest.raises(DestinationNotAllowed, match="loopback"):
        OutboundPolicy().check_target(wire_url("http://127.0.0.1:9/x"))
    with pytest.raises(DestinationNotAllowed, match="not a canonical"):
        OutboundPolicy().check_target(wire_url("http://127.1:9/x"))
    OutboundPolicy(LOCAL_CIDRS).check_target(wire_url("http://127.0.0.1:9/x"))
    OutboundPolicy().check_target(wire_url("https://93.184.216.34/x"))


@pytest.mark.parametrize("kind", ["size", "stream"])
async def test_bodies_are_read_up_to_the_limit(
    local_server: tuple[str, list[str]], kind: str
) -> None:
    url, _ = local_server
    async with client_session(OutboundPolicy(LOCAL_CIDRS)) as session:
        async with session.get(f"{url}/{kind}/{BODY_LIMIT}") as response:
            assert len(await read_bounded(response)) == BODY_LIMIT
        async with session.get(f"{url}/{kind}/{BODY_LIMIT + 1}") as response:
            with pytest.raises(BodyTooLarge):
                await read_bounded(response)
        async with session.get(f"{url}/{kind}/{BODY_LIMIT * 8}") as response:
            expected = (b"x" if kind == "size" else b"y") * 100
            assert await read_bounded(response, 100, truncate=True) == expected


async def test_a_session_needs_no_environment_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxies from the environment would carry requests past the resolver."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    async with client_session(OutboundPolicy()) as session:
        assert isinstance(session, aiohttp.ClientSession) and not session.trust_env
