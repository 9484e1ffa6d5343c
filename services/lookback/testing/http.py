"""A local aiohttp server for the fakes (SRN, postback receiver)."""

from __future__ import annotations

from aiohttp import web

LOCAL_CIDRS = "127.0.0.0/8,::1/128"
"""What ``outbound_allow_cidrs`` must allow for the services to reach these
local fakes (outbound requests reach public addresses only by default)."""


async def start_http(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on ``host:port`` (0: a free port); its runner (``cleanup()``
    stops it) and its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    assert server is not None
    bound = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    return runner, f"http://{host}:{bound}"
