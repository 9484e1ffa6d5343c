"""A postback receiver: a local HTTP server, for tests, benchmarks and the
scenario runner, that records every request to ``/{partner}...`` and answers
as told (status, delay, headers: a partner failing on purpose).
``wait_for`` waits (on each arrival, not by sleeping) until a partner has
received enough."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

from lookback.testing.http import start_http


@dataclass(frozen=True)
class Received:
    partner: str
    method: str
    path_qs: str
    headers: dict[str, str]
    body: str
    at: float
    """When it arrived (``time.time()``)."""
    target: str = ""
    """The request-target exactly as on the request line (escapes as sent)."""
    raw_body: bytes = b""
    """The body's bytes as received."""


@dataclass
class PostbackSink:
    received: list[Received] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    """Requests received per partner."""
    status: int = 200
    """HTTP status every request is answered with."""
    delay: float = 0.0
    """Seconds to wait before answering (a slow partner)."""
    reply_headers: dict[str, str] = field(default_factory=dict)
    """Headers added to every answer (``Retry-After``, say)."""
    reply_body: str = "ok"
    """Body of every answer."""
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_route("*", "/{partner}{rest:.*}", self._handle)
        self._runner, self.url = await start_http(app, host, port)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> PostbackSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        raw = await request.read()
        item = Received(
            partner=request.match_info["partner"],
            method=request.method,
            path_qs=request.path_qs,
            headers=dict(request.headers),
            body=raw.decode(errors="replace"),
            at=time.time(),
            target=request.raw_path,
            raw_body=raw,
        )
        async with self._changed:
            self.received.append(item)
            self.counts[item.partner] = self.counts.get(item.partner, 0) + 1
            self._changed.notify_all()
        return web.Response(status=self.status, text=self.reply_body, headers=self.reply_headers)

    def for_partner(self, partner: str) -> list[Received]:
        return [r for r in self.received if r.partner == partner]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` holds (re-checked on each arrival); False on timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
            except TimeoutError:
                return False
        return True

    async def wait_for(
        self, predicate_partner: str, count: int = 1, timeout: float = 10.0
    ) -> list[Received]:
        """Wait until ``predicate_partner`` has received ``count`` requests."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: self.counts.get(predicate_partner, 0) >= count),
                timeout,
            )
        return self.for_partner(predicate_partner)
