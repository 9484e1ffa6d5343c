"""A what-if has no side effect (issue 13): over a busy range of installs,
every table of the store (SQLite, or Cassandra), the postback queue (its
SQLite file, or Redis), the reports and the live feed are the same before
and after a ``Simulate`` that changes many of the decisions; and its answer
is the one the changed settings give.

Each test runs the suite as ``lookback up`` does (a process per service),
makes installs with clicks of a partner that has an install postback
(clicks of two ages, so a shorter click window changes half of them),
organic installs and events, waits until the consumers have caught up (every
postback delivered, the reports counting every install, nothing moving any
more), takes a snapshot of every store, simulates, and compares.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import redis.asyncio as aioredis
from cassandra.cluster import Cluster

from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.testing import builders
from lookback.testing.keys import ADMIN_KEY, bearer, key_channel
from lookback.testing.processes import SuiteProcesses, free_ports, serve_suite
from lookback.testing.receiver import PostbackSink
from lookback.testing.suite import SuiteAddresses
from tests.backends import CassandraNode, LocalRedis

ATTRIBUTED = 60
"""Installs with a partner click; half of the clicks are 3 days old."""
ORGANIC = 20
EVENTS = 10

Snapshot = Callable[[], Awaitable[dict[str, Any]]]


def _env() -> dict[str, str]:
    return {
        "LOOKBACK_ADMIN_KEYS": ADMIN_KEY,
        "LOOKBACK_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8",  # the sink is on loopback
        "LOOKBACK_BASE_DELAY": "0.1",
    }


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=bearer(key)) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status in (200, 201), answer
        return answer


async def _busy(suite: SuiteProcesses, sink: PostbackSink) -> tuple[str, dict[str, str]]:
    base = suite.gateway_url
    app_id, keys = await builders.http_app(base, "com.whatif", sink.url)
    async with aiohttp.ClientSession() as http:
        gaids = [builders.new_gaid() for _ in range(ATTRIBUTED + ORGANIC)]
        touches = [
            {
                "app_id": app_id,
                "type": "click",
                "media_source": "networka",
                "campaign": "old" if n % 2 else "new",
                "click_id": f"c{n}",
                "engaged_at": builders.iso_ago(3 * 86400 if n % 2 else 3600),
                "device": {"gaid": gaid},
            }
            for n, gaid in enumerate(gaids[:ATTRIBUTED])
        ]
        await _post(http, f"{base}/v1/touches", keys["s2s"], {"touches": touches})

        async def one(n: int) -> None:
            body = {"app_id": app_id, "install_id": f"i{n}", "device": {"gaid": gaids[n]}}
            await _post(http, f"{base}/v1/installs", keys["sdk"], body)
            if n < EVENTS:
                event = {
                    "app_id": app_id,
                    "install_id": f"i{n}",
                    "event_id": uuid.uuid4().hex,
                    "name": "purchase",
                    "revenue": "1.25",
                    "currency": "EUR",
                }
                await _post(http, f"{base}/v1/events", keys["sdk"], event)

        for start in range(0, len(gaids), 10):
            await asyncio.gather(*(one(n) for n in range(start, min(start + 10, len(gaids)))))
    assert await sink.wait_until(lambda: len(sink.for_partner("networka")) >= ATTRIBUTED, 30)
    return app_id, keys


async def _report(suite: SuiteProcesses, app_id: str, key: str) -> dict[str, Any]:
    url = f"{suite.gateway_url}/v1/apps/{app_id}/reports"
    async with aiohttp.ClientSession() as http:
        query = {"group_by": "media_source,campaign", "start_time": builders.iso_ago(7 * 86400)}
        async with http.get(url, params=query, headers=bearer(key)) as r:
            answer: dict[str, Any] = await r.json()
            assert r.status == 200, answer
            return answer


async def _settled(snapshot: Snapshot, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The snapshot once ``done`` holds and two in a row are equal (the
    relay, the reports and the deliveries have nothing left to do)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    last: dict[str, Any] | None = None
    while True:
        now = await snapshot()
        if done(now) and now == last:
            return now
        assert loop.time() < deadline, f"never settled: {now}"
        last = now
        await asyncio.sleep(1.0)  # polling for quiet, not for the outcome


async def _simulate(
    suite: SuiteProcesses, app_id: str, key: str, settings: dict[str, Any]
) -> list[dict[str, Any]]:
    url = f"{suite.gateway_url}/v1/apps/{app_id}/installs:simulate"
    body = {"settings": settings, "start_time": builders.iso_ago(3600), "page_size": 25}
    pages = []
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers=bearer(key)) as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"].startswith("application/x-ndjson")
            async for line in r.content:
                if line.strip():
                    pages.append(json.loads(line))
    return pages


async def _check(
    suite: SuiteProcesses, sink: PostbackSink, stores: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    app_id, keys = await _busy(suite, sink)
    installs = ATTRIBUTED + ORGANIC

    async def snapshot() -> dict[str, Any]:
        return {
            "stores": await stores(),
            "report": await _report(suite, app_id, keys["s2s"]),
            "postbacks": len(sink.received),
        }

    def counted(s: dict[str, Any]) -> bool:
        rows = s["report"].get("rows", [])
        return sum(int(r.get("installs", 0)) for r in rows) == installs

    before = await _settled(snapshot, counted)

    # A watcher of the live feed, from now.
    channel = key_channel(suite.grpc["decider"], keys["s2s"])
    watch = outcomes_grpc.OutcomesServiceStub(channel).WatchDecisions(
        outcomes_pb.WatchDecisionsRequest(app_id=app_id)
    )
    await watch.initial_metadata()
    try:
        pages = await _simulate(suite, app_id, keys["s2s"], {"click_lookback": "1d"})
        last = pages[-1]
        assert last["done"] is True
        assert (int(last["examined"]), int(last["changed"]), int(last["not_replayable"])) == (
            installs,
            ATTRIBUTED // 2,
            0,
        )
        assert len(pages) == -(-installs // 25)  # in pages of 25, with progress
        assert [int(p["examined"]) for p in pages] == sorted(int(p["examined"]) for p in pages)
        changed = [i for p in pages for i in p["installs"]]
        assert {i["before"]["campaign"] for i in changed} == {"old"}
        assert {i["after"]["media_source"] for i in changed} == {"organic"}
        assert all(
            c["verdict"] == "outside_window" and c["window"] == "1d"
            for i in changed
            for c in i["after_explanation"]["candidates"]
        )

        after = await snapshot()
        assert after == before

        # The feed: the first entry after the simulation is a real install made now.
        async with aiohttp.ClientSession() as http:
            body = {
                "app_id": app_id,
                "install_id": "after",
                "device": {"gaid": builders.new_gaid()},
            }
            made = await _post(http, f"{suite.gateway_url}/v1/installs", keys["sdk"], body)
        entry = await asyncio.wait_for(watch.read(), 30)
        assert entry.decision.decision_id == made["decision"]["decision_id"]
    finally:
        watch.cancel()
        await channel.close()


def _sqlite_counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {t: db.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in tables}
    finally:
        db.close()


async def test_a_simulation_changes_nothing_on_sqlite(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with PostbackSink() as sink:
        suite = await serve_suite(data, env=_env())

        async def stores() -> dict[str, Any]:
            return {
                "store": await asyncio.to_thread(_sqlite_counts, data / "store.sqlite3"),
                "queue": await asyncio.to_thread(_sqlite_counts, data / "postbacks.sqlite3"),
            }

        try:
            counts = await stores()
            assert {"touches", "installs", "decisions", "outcomes", "events"} <= set(
                counts["store"]
            )
            await _check(suite, sink, stores)
        finally:
            await suite.stop()


def _cassandra_counts(node: CassandraNode, keyspace: str) -> dict[str, int]:
    cluster = Cluster([node.host], port=node.port)
    try:
        session = cluster.connect()
        tables = [
            r.table_name
            for r in session.execute(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s", (keyspace,)
            )
        ]
        return {
            t: session.execute(f"SELECT COUNT(*) FROM {keyspace}.{t}").one()[0]
            for t in sorted(tables)
        }
    finally:
        cluster.shutdown()


async def _redis_sizes(url: str) -> dict[str, Any]:
    r = aioredis.from_url(url, decode_responses=True)
    try:
        out: dict[str, Any] = {}
        async for key in r.scan_iter(count=1000):
            kind = str(await r.type(key))
            size = {
                "stream": r.xlen,
                "hash": r.hlen,
                "set": r.scard,
                "zset": r.zcard,
                "list": r.llen,
                "string": r.strlen,
            }[kind](key)
            out[key] = (kind, await size)
        return out
    finally:
        await r.aclose()


async def test_a_simulation_changes_nothing_on_cassandra_and_redis(
    cassandra: CassandraNode, tmp_path: Path
) -> None:
    (port,) = free_ports(1)
    redis = LocalRedis(tmp_path / "redis", port)
    keyspace = f"whatif_{uuid.uuid4().hex[:8]}"
    redis.run("start")
    try:
        async with PostbackSink() as sink:
            suite = await serve_suite(
                tmp_path / "data",
                env=_env(),
                cassandra=f"{cassandra.host}:{cassandra.port}",
                cassandra_keyspace=keyspace,
                redis=redis.url,
            )

            async def stores() -> dict[str, Any]:
                return {
                    "store": await asyncio.to_thread(_cassandra_counts, cassandra, keyspace),
                    "queue": await _redis_sizes(redis.url),
                }

            try:
                await _check(suite, sink, stores)
            finally:
                await suite.stop()
    finally:
        redis.run("stop")


async def test_simulate_and_explain_check_the_caller_and_name_bad_fields(
    suite: SuiteAddresses,
) -> None:
    app_id, keys = await builders.keyed_app(suite.decider, "com.whatif")
    url = f"{suite.gateway_url}/v1/apps/{app_id}/installs:simulate"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json={"settings": {}}, headers=bearer(keys.sdk)) as r:
            assert r.status == 403, await r.text()
        bad = {"settings": {"click_lookback": "90d"}}
        async with http.post(url, json=bad, headers=bearer(keys.s2s)) as r:
            assert r.status == 400
            body = await r.json()
            assert "click_lookback" in json.dumps(body), body
        explain = f"{suite.gateway_url}/v1/apps/{app_id}/installs/nope:explain"
        async with http.get(explain, headers=bearer(keys.sdk)) as r:
            assert r.status == 403
        async with http.get(explain, headers=bearer(keys.s2s)) as r:
            assert r.status == 404, await r.text()
    channel = key_channel(suite.decider, keys.s2s)
    try:
        stub = explain_grpc.ExplainServiceStub(channel)
        try:
            await stub.ExplainDecision(explain_pb.ExplainDecisionRequest(app_id=app_id))
            raise AssertionError("a request naming nothing was answered")
        except grpc.aio.AioRpcError as exc:
            assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "decision_id" in (exc.details() or "")
    finally:
        await channel.close()
