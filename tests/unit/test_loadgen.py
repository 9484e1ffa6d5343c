"""The Go load generator against a tiny local aiohttp server: what it
reports is what the server saw."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from bench.loadgen import run_loadgen


@dataclass
class Seen:
    """What the server received."""

    seqs: list[int] = field(default_factory=list)
    prefixes: set[str] = field(default_factory=set)
    uuids: set[str] = field(default_factory=set)
    headers: set[str] = field(default_factory=set)
    never: asyncio.Event = field(default_factory=asyncio.Event)  # never set

    def answer(self, seq: int) -> int:
        return 500 if seq % 7 == 3 else 200


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Seen]]:
    seen = Seen()

    async def get(request: web.Request) -> web.Response:
        seq = int(request.query["n"])
        seen.seqs.append(seq)
        seen.prefixes.add(request.query["p"])
        seen.uuids.add(request.query["u"])
        seen.headers.add(request.headers.get("X-Run", ""))
        return web.Response(status=seen.answer(seq), text="ok")

    async def post(request: web.Request) -> web.Response:
        body = await request.json()
        seq = int(body["id"].rsplit("-", 1)[1])
        seen.seqs.append(seq)
        seen.prefixes.add(body["id"].rsplit("-", 1)[0])
        seen.uuids.add(body["device"]["gaid"])
        return web.json_response({"ok": True}, status=seen.answer(seq))

    async def hang(request: web.Request) -> web.Response:
        await seen.never.wait()
        return web.Response(text="too late")

    app = web.Application()
    app.router.add_get("/echo", get)
    app.router.add_post("/echo", post)
    app.router.add_get("/hang", hang)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


def check_counts(seen: Seen, result_sent: int, first: int, scheduled: int) -> None:
    assert len(seen.seqs) == result_sent
    assert len(set(seen.seqs)) == len(seen.seqs), "each {seq} is sent once"
    assert sorted(seen.seqs) == list(range(result_sent))
    assert first + scheduled == result_sent


async def test_closed_loop_counts_what_the_server_saw(server: tuple[str, Seen]) -> None:
    url, seen = server
    result = await run_loadgen(
        f"{url}/echo?n={{seq}}&p={{prefix}}&u={{uuid}}",
        concurrency=4,
        duration=1.0,
        warmup=0.3,
        prefix="run7",
        headers={"X-Run": "{prefix}-h"},
    )
    assert result.mode == "closed" and result.workers == 4
    assert result.connections == 4, "one keep-alive connection per worker"
    assert result.requests > 50 and result.warmup_requests > 0
    check_counts(seen, result.sent, result.first_seq, result.scheduled)
    assert result.sent == result.warmup_requests + result.requests
    measured = [s for s in seen.seqs if s >= result.first_seq]
    expected_500 = sum(1 for s in measured if seen.answer(s) == 500)
    assert result.statuses == {200: len(measured) - expected_500, 500: expected_500}
    assert result.errors == result.timeouts == 0
    assert result.answered == result.requests
    assert seen.prefixes == {"run7"} and seen.headers == {"run7-h"}
    assert len(seen.uuids) == result.sent
    assert all(uuid.UUID(u).version == 4 for u in seen.uuids)
    assert 0 < result.latency.p50 <= result.latency.p99 <= result.latency.max
    assert result.rate == pytest.approx(result.answered / 1.0)


async def test_open_loop_keeps_its_schedule(server: tuple[str, Seen]) -> None:
    url, seen = server
    body = json.dumps({"id": "{prefix}-{seq}", "device": {"gaid": "{uuid}"}})
    result = await run_loadgen(
        f"{url}/echo",
        method="POST",
        body=body,
        headers={"Content-Type": "application/json"},
        rate=200,
        duration=1.0,
        warmup=0.25,
        prefix="open",
    )
    assert result.mode == "open"
    # The send times are fixed in advance: 200/s for 1 s after 50 in the warm-up.
    assert (result.warmup_requests, result.scheduled) == (50, 200)
    assert result.unsent == 0 and result.requests == 200
    check_counts(seen, result.sent, result.first_seq, result.scheduled)
    assert seen.prefixes == {"open"} and len(seen.uuids) == 250
    expected_500 = sum(1 for s in range(50, 250) if seen.answer(s) == 500)
    assert result.statuses == {200: 200 - expected_500, 500: expected_500}
    assert result.ok == 200 - expected_500 and result.failed == expected_500


async def test_timeouts_and_refused_connections_are_counted(server: tuple[str, Seen]) -> None:
    url, _ = server
    hung = await run_loadgen(f"{url}/hang", concurrency=3, duration=0.5, timeout=0.2)
    assert hung.timeouts == hung.requests >= 3 and hung.answered == 0
    assert hung.statuses == {} and hung.errors == 0

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
        refused = await run_loadgen(
            f"http://127.0.0.1:{closed}/x", concurrency=2, duration=0.3, timeout=0.5
        )
    assert refused.errors == refused.requests > 0 and refused.answered == 0
    assert refused.error_kinds == {"dial: connection refused": refused.requests}

    late = await run_loadgen(f"{url}/hang", rate=50, concurrency=2, duration=0.4, timeout=0.2)
    # Two workers, each stuck 0.2 s per request: most requests wait, and are late.
    assert late.scheduled == 20 and late.timeouts == late.requests
    assert late.late > 0 and late.send_delay.max > 50
    assert late.unsent > 0 and late.requests + late.unsent == late.scheduled
