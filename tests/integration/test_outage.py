"""Outages mid-load (issue 12): every decision answered OK reaches every
consumer of the outcomes log, and the reports and the feed count it once.

Each test runs the suite as one process per service (as ``lookback up``
does), drives installs through the gateway (half of them with a click of a
partner with an install postback, some reported twice, every call retried
until it is answered, as an SDK retries), and meanwhile kills processes
with SIGKILL and starts them again:

- on Cassandra with Redis: Redis (killed, started again four seconds
  later), then the postback dispatcher (the relay and the reports), then
  the decider, then the store (which records the outcomes);
- on the embedded SQLite store: the postback dispatcher, then the store
  (which records the outcomes), then the decider.

Afterwards, counted independently by the test: every install with the
partner's click has its postback at the sink (at least once; repeats are
counted and printed), the report counts exactly the installs and clicks
made, and a client watching the feed (reconnecting with its last cursor
whenever the decider went away) saw every decision exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.testing import builders
from lookback.testing.keys import ADMIN_KEY, bearer, key_channel
from lookback.testing.processes import SuiteProcesses, free_ports, serve_suite
from lookback.testing.receiver import PostbackSink
from tests.backends import CassandraNode, LocalRedis

INSTALLS = 800
"""Installs per test; every other one has the partner's click."""
RATE = 40.0
"""Installs started per second (the load lasts about 20 s)."""
DUPLICATES = 10
"""Every this many-th install is reported a second time once answered."""
CATCH_UP = 90.0
"""Seconds the consumers may take to catch up after the load."""


@dataclass
class Load:
    """What the test made, as it saw it."""

    app_id: str
    keys: dict[str, str]
    answered: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Install id -> the decision of its first OK answer."""
    clicks: set[str] = field(default_factory=set)
    retries: int = 0


async def _call(
    http: aiohttp.ClientSession, load: Load, method: str, url: str, key: str, body: Any
) -> dict[str, Any]:
    """Until answered: a 5xx or a broken connection is retried, as a client
    retries (the calls are idempotent: a touch by click id, an install by
    install id)."""
    while True:
        try:
            async with http.request(method, url, json=body, headers=bearer(key)) as r:
                if r.status < 500:
                    answer: dict[str, Any] = await r.json()
                    assert r.status == 200, (r.status, answer)
                    return answer
        except (TimeoutError, aiohttp.ClientError):
            pass
        load.retries += 1
        await asyncio.sleep(0.2)


async def _install(http: aiohttp.ClientSession, base: str, load: Load, n: int) -> None:
    gaid = str(uuid.UUID(int=n + (7 << 64)))
    if n % 2 == 0:
        click_id = f"c{n}"
        touch = {
            "app_id": load.app_id,
            "type": "click",
            "media_source": "networka",
            "campaign": "outage",
            "click_id": click_id,
            "engaged_at": builders.iso_ago(600),
            "device": {"gaid": gaid},
        }
        await _call(
            http, load, "POST", f"{base}/v1/touches", load.keys["s2s"], {"touches": [touch]}
        )
        load.clicks.add(click_id)
    install_id = f"i{n}"
    body = {"app_id": load.app_id, "install_id": install_id, "device": {"gaid": gaid}}
    answer = await _call(http, load, "POST", f"{base}/v1/installs", load.keys["sdk"], body)
    load.answered.setdefault(install_id, answer["decision"])
    if n % DUPLICATES == 0:  # the SDK reports it again
        again = await _call(http, load, "POST", f"{base}/v1/installs", load.keys["sdk"], body)
        assert again["decision"]["kind"] == "duplicate", again


async def _drive(base: str, load: Load, incidents: Callable[[], Awaitable[None]]) -> None:
    """The installs at :data:`RATE` a second, with ``incidents`` meanwhile."""
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        trouble = asyncio.create_task(incidents())
        started = time.monotonic()
        tasks = []
        for n in range(INSTALLS):
            delay = started + n / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the load, not waiting for an outcome
            tasks.append(asyncio.create_task(_install(http, base, load, n)))
        await asyncio.gather(*tasks)
        await trouble


@dataclass
class Watcher:
    """A client of the feed: from now, and after a lost stream, on from its
    last cursor."""

    address: str
    key: str
    app_id: str
    seen: list[str] = field(default_factory=list)
    """Decision ids, in the order received."""
    reconnects: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    cursor: str = ""

    async def run(self) -> None:
        while True:
            try:
                async with key_channel(self.address, self.key) as channel:
                    stub = outcomes_grpc.OutcomesServiceStub(channel)
                    call = stub.WatchDecisions(
                        outcomes_pb.WatchDecisionsRequest(app_id=self.app_id, cursor=self.cursor)
                    )
                    await call.initial_metadata()
                    self.ready.set()
                    async for entry in call:
                        self.cursor = entry.cursor
                        if entry.HasField("decision"):
                            self.seen.append(entry.decision.decision_id)
            except grpc.aio.AioRpcError:
                pass
            self.reconnects += 1
            await asyncio.sleep(0.2)


async def _report(http: aiohttp.ClientSession, base: str, load: Load) -> dict[str, int]:
    url = f"{base}/v1/apps/{load.app_id}/reports"
    params = {"start_time": builders.iso_ago(3 * 3600), "group_by": "media_source"}
    async with http.get(url, params=params, headers=bearer(load.keys["s2s"])) as r:
        if r.status != 200:
            return {}
        rows = (await r.json())["rows"]
    totals: dict[str, int] = {}
    for row in rows:
        for metric in ("installs", "clicks"):
            totals[metric] = totals.get(metric, 0) + int(row[metric])
        totals[f"installs:{row['media_source']}"] = int(row["installs"])
    return totals


async def _until(check: Callable[[], Awaitable[bool]], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.5)
    return True


async def _run_outage(
    suite: SuiteProcesses,
    sink: PostbackSink,
    incidents: Callable[[], Awaitable[None]],
) -> None:
    base = suite.gateway_url
    app_id, keys = await builders.http_app(base, "com.outage", sink.url)
    load = Load(app_id, keys)
    watcher = Watcher(suite.grpc["decider"], keys["s2s"], app_id)
    watching = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.ready.wait(), 30)
        await _drive(base, load, incidents)

        # Every decision answered OK is an install of its own (duplicates are
        # not decisions); half of them won by the partner's click.
        assert len(load.answered) == INSTALLS
        kinds = {d["kind"] for d in load.answered.values()}
        partner = {i for i, d in load.answered.items() if d["media_source"] == "networka"}
        assert kinds <= {"install", "duplicate"}, kinds
        assert len(partner) == INSTALLS // 2

        # The postbacks: each partner install's job (its idempotency key) at
        # the sink, at least once.
        def keys_received() -> list[str]:
            return [r.headers.get("Idempotency-Key", "") for r in sink.for_partner("networka")]

        decisions = {i: d["decision_id"] for i, d in load.answered.items()}
        wanted = {f"{decisions[i]}:networka:install" for i in partner}
        arrived = await sink.wait_until(lambda: wanted <= set(keys_received()), CATCH_UP)
        missing = wanted - set(keys_received())
        assert arrived, f"{len(missing)} of {len(wanted)} postbacks never arrived"
        received = keys_received()
        repeats = len(received) - len(set(received))
        print(
            f"postbacks: {len(wanted)} expected, {len(set(received))} arrived,"
            f" {repeats} repeated; {load.retries} client retries;"
            f" {watcher.reconnects} watch reconnects"
        )
        assert set(received) == wanted  # nothing for another decision or partner

        # The reports: exactly the installs and clicks made.
        async with aiohttp.ClientSession() as http:
            last: dict[str, int] = {}

            async def counted() -> bool:
                nonlocal last
                last = await _report(http, base, load)
                return last.get("installs") == INSTALLS and last.get("clicks") == len(load.clicks)

            assert await _until(counted, CATCH_UP), last
            assert last["installs:networka"] == INSTALLS // 2
            assert last["installs:organic"] == INSTALLS // 2

        # The feed: every decision once, in the order the log holds them.
        made = set(decisions.values())

        async def watched() -> bool:
            return made <= set(watcher.seen)

        assert await _until(watched, CATCH_UP), len(made - set(watcher.seen))
        assert sorted(watcher.seen) == sorted(made), "a decision was on the feed twice"
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching


def _env(sink: PostbackSink) -> dict[str, str]:
    return {
        "LOOKBACK_ADMIN_KEYS": ADMIN_KEY,
        "LOOKBACK_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8",  # the sink is on loopback
        "LOOKBACK_BASE_DELAY": "0.1",
        "LOOKBACK_DECIDER_TIMEOUT": "10",
    }


async def test_redis_the_dispatcher_the_decider_and_the_store_killed_mid_load_on_cassandra(
    cassandra: CassandraNode, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    redis = LocalRedis(tmp_path / "redis", port)
    redis.run("start")
    async with PostbackSink() as sink:
        suite = await serve_suite(
            tmp_path / "data",
            env=_env(sink),
            cassandra=f"{cassandra.host}:{cassandra.port}",
            cassandra_keyspace=f"outage_{uuid.uuid4().hex[:8]}",
            redis=redis.url,
        )

        async def incidents() -> None:
            await asyncio.sleep(3)
            os.kill(redis.pid(), signal.SIGKILL)
            await asyncio.sleep(4)
            await asyncio.to_thread(redis.run, "start")
            await asyncio.sleep(2)
            await suite.kill("postback")
            await suite.restart("postback")
            await asyncio.sleep(2)
            await suite.kill("decider")
            await suite.restart("decider")
            await asyncio.sleep(2)
            await suite.kill("touchpoint_store")
            await suite.restart("touchpoint_store")

        try:
            await _run_outage(suite, sink, incidents)
        finally:
            await suite.stop()
            redis.run("stop")


async def test_the_dispatcher_the_store_and_the_decider_killed_mid_load_on_sqlite(
    tmp_path: Path,
) -> None:
    async with PostbackSink() as sink:
        suite = await serve_suite(tmp_path / "data", env=_env(sink))

        async def incidents() -> None:
            await asyncio.sleep(3)
            await suite.kill("postback")
            await suite.restart("postback")
            await asyncio.sleep(2)
            await suite.kill("touchpoint_store")
            await suite.restart("touchpoint_store")
            await asyncio.sleep(2)
            await suite.kill("decider")
            await suite.restart("decider")

        try:
            await _run_outage(suite, sink, incidents)
        finally:
            await suite.stop()
