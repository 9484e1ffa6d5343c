"""A fake self-reporting network: a local HTTP server, for tests and the
scenario runner, answering the SRN adapter's API from the claims registered
with it (:meth:`FakeSrn.claim`, or over HTTP).

    POST /v1/register  {"network", "app_id", "device": {"gaid": ...},
                        "touch_type", "campaign", "engaged_at", "click_id"}
    POST /v1/behaviour {"network", "delay_ms": 0, "status": 200}
    GET  /v1/claims    (the adapter's query)
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lookback.domain.model import DEVICE_ID_TYPES
from lookback.srn_adapter.adapters import parse_iso
from lookback.testing.http import start_http


@dataclass
class FakeSrn:
    claims: list[dict[str, Any]] = field(default_factory=list)
    behaviour: dict[str, dict[str, int]] = field(default_factory=dict)
    queries: list[dict[str, str]] = field(default_factory=list)
    queried: asyncio.Event = field(default_factory=asyncio.Event)
    """Set whenever a query arrives (clear it to wait for the next)."""

    def claim(
        self,
        network: str,
        app_id: str,
        device: Mapping[str, str],
        engaged_at: str,
        *,
        campaign: str = "",
        touch_type: str = "click",
        click_id: str = "",
    ) -> None:
        """Register a claim, as ``POST /v1/register`` does: ``network`` says it
        showed ``app_id``'s ad to ``device`` (raw ids) at ``engaged_at`` (ISO-8601)."""
        self.claims.append(
            {
                "network": network,
                "app_id": app_id,
                "device": dict(device),
                "touch_type": touch_type,
                "campaign": campaign,
                "engaged_at": engaged_at,
                "click_id": click_id,
            }
        )

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/register", self._register)
        app.router.add_post("/v1/behaviour", self._behaviour)
        app.router.add_get("/v1/claims", self._claims)
        return app

    async def _register(self, request: web.Request) -> web.Response:
        self.claims.append(await request.json())
        return web.json_response({"ok": True})

    async def _behaviour(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.behaviour[body["network"]] = {k: int(v) for k, v in body.items() if k != "network"}
        return web.json_response({"ok": True})

    async def _claims(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.queries.append(q)
        self.queried.set()
        network = q.get("network", "")
        behaviour = self.behaviour.get(network, {})
        if behaviour.get("delay_ms"):
            await asyncio.sleep(behaviour["delay_ms"] / 1000)
        if behaviour.get("status", 200) != 200:
            return web.json_response({"error": "configured failure"}, status=behaviour["status"])
        installed = parse_iso(q["installed_at"])
        device = {t: q[t].lower() for t in DEVICE_ID_TYPES if q.get(t)}
        out = []
        for c in self.claims:
            if c.get("network") != network or c.get("app_id") != q.get("app_id"):
                continue
            claimed = {k: str(v).lower() for k, v in (c.get("device") or {}).items()}
            if not any(device.get(k) == v for k, v in claimed.items()):
                continue
            if parse_iso(c["engaged_at"]) > installed:
                continue
            out.append(
                {k: c.get(k, "") for k in ("touch_type", "campaign", "engaged_at", "click_id")}
            )
        return web.json_response({"claims": out})


async def start_fake_srn(
    host: str = "127.0.0.1", port: int = 0
) -> tuple[FakeSrn, web.AppRunner, str]:
    """Start a fake SRN server; returns it, its runner (to clean up) and its base URL."""
    fake = FakeSrn()
    runner, url = await start_http(fake.app(), host, port)
    return fake, runner, url
