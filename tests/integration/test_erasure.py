"""Erasure end to end, on the embedded suite (SQLite) and on Cassandra with
Redis: nothing of the device in any table afterwards (read from the
databases themselves), its queued postback never sent again while another
one is delivered, reports unchanged, the decider that had the install
cached decides it anew, and installs of the device decided concurrently with
the erasure leave no orphan rows and take nothing else with them."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from cassandra.cluster import Cluster

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.privacy.v1 import privacy_service_pb2 as pb
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import device_pb2, erasure_pb2
from lookback.decider.coherence import RedisInvalidation
from lookback.testing import builders
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import ADMIN_KEY, admin_channel, bearer, key_channel
from lookback.testing.processes import free_ports, serve_suite
from lookback.testing.receiver import PostbackSink
from lookback.testing.suite import EphemeralSuite
from lookback.testing.tables import Values, cassandra_values, sqlite_values, tables_holding
from tests.backends import CassandraNode, LocalRedis

CONCURRENT = 12
"""Installs of the erased device, and of other devices, decided during the erasure."""

Scan = Callable[[], Awaitable[Values]]


def _hex(algorithm: str, value: str) -> str:
    return hashlib.new(algorithm, value.lower().encode()).hexdigest()


def _needles(gaid: str, install_ids: list[str]) -> list[str]:
    return [gaid, _hex("sha1", gaid), _hex("md5", gaid), *install_ids]


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=bearer(key)) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status in (200, 201), answer
        return answer


async def _report(http: aiohttp.ClientSession, base: str, app_id: str, key: str) -> Any:
    url = f"{base}/v1/apps/{app_id}/reports"
    query = {"group_by": "media_source", "start_time": builders.iso_ago(7 * 86400)}
    async with http.get(url, params=query, headers=bearer(key)) as r:
        answer = await r.json()
        assert r.status == 200, answer
        return answer["rows"]


async def _erase(
    privacy: pb_grpc.PrivacyServiceStub, app_id: str, gaid: str
) -> erasure_pb2.Erasure:
    """Request the erasure and wait (polling its state) until it completes."""
    device = device_pb2.DeviceIdentifiers(gaid=gaid)
    created = await privacy.CreateErasure(pb.CreateErasureRequest(app_id=app_id, devices=[device]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = await privacy.GetErasure(
            pb.GetErasureRequest(app_id=app_id, erasure_id=created.erasure.erasure_id)
        )
        if got.erasure.state == erasure_pb2.ERASURE_STATE_COMPLETED:
            return got.erasure
        await asyncio.sleep(0.05)
    raise AssertionError("the erasure did not complete within 60 s")


async def _exercise(
    gateway: str,
    decider: str,
    postback: str,
    sink: PostbackSink,
    scan: Scan,
    orphans: Callable[[], Awaitable[list[str]]],
) -> None:
    app_id, keys = await builders.http_app(gateway, "com.erase", sink.url)
    gone, kept = builders.new_gaid(), builders.new_gaid()
    base = gateway
    async with aiohttp.ClientSession() as http, key_channel(decider, keys["s2s"]) as channel:
        privacy = pb_grpc.PrivacyServiceStub(channel)
        touches = [
            {
                "app_id": app_id,
                "type": "click",
                "media_source": "networka",
                "click_id": f"click-{name}-{app_id}",
                "engaged_at": builders.iso_ago(600),
                "device": {"gaid": gaid},
            }
            for name, gaid in (("gone", gone), ("kept", kept))
        ]
        await _post(http, f"{base}/v1/touches", keys["s2s"], {"touches": touches})
        # The partner fails for now: both postbacks wait in the queue.
        sink.status = 503
        decided = {}
        for name, gaid in (("gone", gone), ("kept", kept)):
            body = {"app_id": app_id, "install_id": f"i-{name}-{app_id}", "device": {"gaid": gaid}}
            answer = await _post(http, f"{base}/v1/installs", keys["sdk"], body)
            decided[name] = answer["decision"]
            assert decided[name]["media_source"] == "networka"
        assert await sink.wait_until(
            lambda: all(
                any(f"click-{n}-" in r.path_qs for r in sink.received) for n in ("gone", "kept")
            ),
            30,
        )
        rows = await _wait_report(http, base, app_id, keys["s2s"], installs=2)

        erasure = await _erase(privacy, app_id, gone)
        assert erasure.erased.installs == 1 and erasure.erased.touches == 1
        assert erasure.erased.postbacks == 1 and erasure.devices_done == 1
        attempts = sum(f"click-gone-{app_id}" in r.path_qs for r in sink.received)

        # Nothing of the device in any table; the other device all there.
        values = await scan()
        for needle in _needles(gone, [f"i-gone-{app_id}"]):
            assert tables_holding(values, needle) == [], needle
        for needle in (_hex("sha1", kept), f"i-kept-{app_id}", f"click-kept-{app_id}"):
            assert tables_holding(values, needle), needle
        assert await orphans() == []

        # The partner is back: the other postback is delivered, the erased one never again.
        sink.status = 200
        async with admin_channel(postback) as pc:
            dispatcher = postback_grpc.PostbackDispatcherServiceStub(pc)
            kept_job = f"{decided['kept']['decision_id']}:networka:install"
            gone_job = f"{decided['gone']['decision_id']}:networka:install"
            while True:
                job = await dispatcher.GetPostbackJob(
                    postback_pb.GetPostbackJobRequest(job_id=kept_job)
                )
                if job.state == postback_pb.DELIVERY_STATE_DELIVERED:
                    break
                await asyncio.sleep(0.05)
            job = await dispatcher.GetPostbackJob(
                postback_pb.GetPostbackJobRequest(job_id=gone_job)
            )
            assert job.state == postback_pb.DELIVERY_STATE_CANCELLED
        assert sum(f"click-gone-{app_id}" in r.path_qs for r in sink.received) == attempts
        assert await _report(http, base, app_id, keys["s2s"]) == rows  # counts kept

        # The decider had the install cached: reported again, it is decided
        # anew (a new device: no touch left, so organic).
        body = {"app_id": app_id, "install_id": f"i-gone-{app_id}", "device": {"gaid": gone}}
        again = (await _post(http, f"{base}/v1/installs", keys["sdk"], body))["decision"]
        assert again["decision_id"] != decided["gone"]["decision_id"]
        assert again["kind"] == "install" and again.get("media_source", "organic") == "organic"

        await _concurrently(http, base, app_id, keys, privacy, scan, orphans)


async def _wait_report(
    http: aiohttp.ClientSession, base: str, app_id: str, key: str, installs: int
) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = await _report(http, base, app_id, key)
        if sum(int(r.get("installs", 0)) for r in rows) >= installs:
            return rows
        await asyncio.sleep(0.1)
    raise AssertionError(f"the report never counted {installs} installs")


async def _concurrently(
    http: aiohttp.ClientSession,
    base: str,
    app_id: str,
    keys: dict[str, str],
    privacy: pb_grpc.PrivacyServiceStub,
    scan: Scan,
    orphans: Callable[[], Awaitable[list[str]]],
) -> None:
    """Installs of the device being erased, decided while the erasure runs:
    none survives it, no orphan row is left, the other installs all stay."""
    target = builders.new_gaid()
    others = [builders.new_gaid() for _ in range(CONCURRENT)]
    click = {
        "app_id": app_id,
        "type": "click",
        "media_source": "networka",
        "click_id": f"click-target-{app_id}",
        "engaged_at": builders.iso_ago(600),
        "device": {"gaid": target},
    }
    await _post(http, f"{base}/v1/touches", keys["s2s"], {"touches": [click]})
    finished: list[float] = []

    async def install(install_id: str, gaid: str) -> None:
        body = {"app_id": app_id, "install_id": install_id, "device": {"gaid": gaid}}
        await _post(http, f"{base}/v1/installs", keys["sdk"], body)
        finished.append(time.monotonic())

    completed: list[float] = []

    async def erase() -> None:
        erasure = await _erase(privacy, app_id, target)
        assert erasure.state == erasure_pb2.ERASURE_STATE_COMPLETED
        completed.append(time.monotonic())

    targets = [f"t{n}-{app_id}" for n in range(CONCURRENT)]
    await asyncio.gather(
        erase(),
        *(install(i, target) for i in targets),
        *(install(f"o{n}-{app_id}", g) for n, g in enumerate(others)),
    )
    # Every install was decided while the erasure was pending.
    assert len(finished) == 2 * CONCURRENT and max(finished) < completed[0]
    values = await scan()
    for needle in _needles(target, targets):
        assert tables_holding(values, needle) == [], needle
    assert await orphans() == []
    for n, gaid in enumerate(others):  # every other install still there
        device = device_pb2.DeviceIdentifiers(gaid=gaid)
        seen = await privacy.AccessDevices(pb.AccessDevicesRequest(app_id=app_id, devices=[device]))
        assert [r.install.install_id for r in seen.records.installs] == [f"o{n}-{app_id}"]


_SQLITE_ORPHANS = {
    "touch key without touch": "SELECT k.click_id FROM touch_keys k LEFT JOIN touches t"
    " ON t.app_id = k.app_id AND t.click_id = k.click_id WHERE t.click_id IS NULL",
    "install key without install": "SELECT k.install_id FROM install_keys k LEFT JOIN installs i"
    " ON i.app_id = k.app_id AND i.install_id = k.install_id WHERE i.install_id IS NULL",
    "install item without install": "SELECT k.install_id FROM install_items k"
    " LEFT JOIN installs i ON i.app_id = k.app_id AND i.install_id = k.install_id"
    " WHERE i.install_id IS NULL",
}


def _sqlite_orphans(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [
            f"{what}: {row[0]}" for what, sql in _SQLITE_ORPHANS.items() for row in db.execute(sql)
        ]
    finally:
        db.close()


async def test_erasure_on_the_embedded_suite(tmp_path: Path) -> None:
    async with PostbackSink() as sink:
        suite = EphemeralSuite(
            tmp_path,
            outbound_allow_cidrs=LOCAL_CIDRS,
            decider_overrides={"erasure_settle": 0.5},
            postback_overrides={"base_delay": 0.05, "relay_interval": 0.1},
        )
        a = await suite.start()
        store, queue = tmp_path / "store.sqlite3", tmp_path / "postbacks.sqlite3"

        async def scan() -> Values:
            return sqlite_values(store, queue)

        async def orphans() -> list[str]:
            return _sqlite_orphans(store)

        try:
            await _exercise(a.gateway_url, a.decider, a.postback, sink, scan, orphans)
        finally:
            await suite.stop()


def _cassandra_orphans(node: CassandraNode, keyspace: str) -> list[str]:
    """Index rows naming a record that is not there."""
    cluster = Cluster([node.host], port=node.port)
    try:
        s = cluster.connect()
        touches = {(r.app_id, r.click_id) for r in s.execute(f"SELECT * FROM {keyspace}.touches")}
        installs = {
            (r.app_id, r.install_id) for r in s.execute(f"SELECT * FROM {keyspace}.installs")
        }
        out = [
            f"touch key without touch: {r.click_id}"
            for r in s.execute(f"SELECT * FROM {keyspace}.touches_by_key")
            if (r.app_id, r.click_id) not in touches
        ]
        for table in ("installs_by_device", "install_items"):
            out += [
                f"{table} row without install: {r.install_id}"
                for r in s.execute(f"SELECT * FROM {keyspace}.{table}")
                if (r.app_id, r.install_id) not in installs
            ]
        return out
    finally:
        cluster.shutdown()


async def _redis_values(url: str) -> Values:
    r: Any = aioredis.from_url(url)  # redis-py's async annotations are too loose
    try:
        out: list[tuple[str, Any]] = []
        async for key in r.scan_iter():
            kind = (await r.type(key)).decode()
            if kind == "hash":
                out += [("redis", v) for v in (await r.hgetall(key)).values()]
            elif kind == "stream":
                out += [("redis", str(e)) for e in await r.xrange(key)]
            elif kind == "zset":
                out += [("redis", m) for m in await r.zrange(key, 0, -1)]
            elif kind == "string":
                out.append(("redis", await r.get(key)))
        return out
    finally:
        await r.aclose()


async def test_erasure_on_cassandra_and_redis(cassandra: CassandraNode, tmp_path: Path) -> None:
    (port,) = free_ports(1)
    redis = LocalRedis(tmp_path / "redis", port)
    keyspace = f"erase_{uuid.uuid4().hex[:8]}"
    redis.run("start")
    try:
        async with PostbackSink() as sink:
            env = {
                "LOOKBACK_ADMIN_KEYS": ADMIN_KEY,
                "LOOKBACK_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8",  # the sink is on loopback
                "LOOKBACK_BASE_DELAY": "0.05",
                "LOOKBACK_RELAY_INTERVAL": "0.1",
                "LOOKBACK_ERASURE_SETTLE": "1.0",
            }
            suite = await serve_suite(
                tmp_path / "data",
                env=env,
                cassandra=f"{cassandra.host}:{cassandra.port}",
                cassandra_keyspace=keyspace,
                redis=redis.url,
            )

            async def scan() -> Values:
                stored = await asyncio.to_thread(
                    cassandra_values, cassandra.host, cassandra.port, keyspace
                )
                return stored + await _redis_values(redis.url)

            async def orphans() -> list[str]:
                return await asyncio.to_thread(_cassandra_orphans, cassandra, keyspace)

            try:
                g = suite.grpc
                await _exercise(suite.gateway_url, g["decider"], g["postback"], sink, scan, orphans)
            finally:
                await suite.stop()
    finally:
        redis.run("stop")


async def test_the_coherence_channel_makes_every_decider_forget_erased_installs(
    tmp_path: Path,
) -> None:
    """Two deciders' channels on one Redis: an erasure published by one
    reaches the other, and a settings change still reaches both as before."""
    (port,) = free_ports(1)
    redis = LocalRedis(tmp_path / "redis", port)
    redis.run("start")
    try:
        dropped: dict[str, list[tuple[str, list[str]]]] = {"a": [], "b": []}
        apps: list[str] = []
        arrived = asyncio.Event()

        def heard() -> None:
            if len(apps) == 2 and dropped["a"] and dropped["b"]:
                arrived.set()

        def dropper(name: str) -> Callable[[str, list[str]], None]:
            def drop(app: str, ids: list[str]) -> None:
                dropped[name].append((app, ids))
                heard()

            return drop

        def drop_app(app: str) -> None:
            apps.append(app)
            heard()

        channels = [
            RedisInvalidation(redis.url, drop_app, lambda: None, drop_installs=dropper(name))
            for name in ("a", "b")
        ]
        for c in channels:
            await c.start()
        try:
            await channels[0].publish_installs("com.app", ["i1", "i2"])
            await channels[0].publish("com.other")
            await asyncio.wait_for(arrived.wait(), 10)
            assert dropped["b"] == [("com.app", ["i1", "i2"])] == dropped["a"]
            assert apps == ["com.other", "com.other"]
        finally:
            for c in channels:
                await c.stop()
    finally:
        redis.run("stop")


async def test_a_large_request_reports_progress_and_a_stalled_one_is_resumed(
    tmp_path: Path,
) -> None:
    """The request answers at once (pending, nothing done); its progress is
    visible while it runs; a pending request whose runner stopped (a decider
    killed mid-way) is taken over and completed by another."""
    from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
    from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
    from lookback.core import convert
    from lookback.decider.privacy import Eraser, device_keys, erasure_id

    suite = EphemeralSuite(
        tmp_path,
        decider_overrides={"erasure_settle": 1.0, "erasure_devices_per_call": 20},
    )
    a = await suite.start()
    try:
        app_id, keys = await builders.http_app(a.gateway_url, "com.erase.big")
        gaids = [builders.new_gaid() for _ in range(100)]
        async with aiohttp.ClientSession() as http:
            for n, gaid in enumerate(gaids):
                body = {"app_id": app_id, "install_id": f"i{n}", "device": {"gaid": gaid}}
                await _post(http, f"{a.gateway_url}/v1/installs", keys["sdk"], body)
        async with key_channel(a.decider, keys["s2s"]) as channel:
            privacy = pb_grpc.PrivacyServiceStub(channel)
            devices = [device_pb2.DeviceIdentifiers(gaid=g) for g in gaids[:60]]
            created = await privacy.CreateErasure(
                pb.CreateErasureRequest(app_id=app_id, devices=devices)
            )
            assert created.erasure.state == erasure_pb2.ERASURE_STATE_PENDING
            assert (created.erasure.devices, created.erasure.devices_done) == (60, 0)
            seen = []
            while True:
                got = await privacy.GetErasure(
                    pb.GetErasureRequest(app_id=app_id, erasure_id=created.erasure.erasure_id)
                )
                seen.append((got.erasure.state, got.erasure.devices_done))
                if got.erasure.state == erasure_pb2.ERASURE_STATE_COMPLETED:
                    break
                await asyncio.sleep(0.05)
            # Pending with devices done (the second passes wait a second).
            assert any(s == erasure_pb2.ERASURE_STATE_PENDING and d > 0 for s, d in seen), seen
            assert seen[-1] == (erasure_pb2.ERASURE_STATE_COMPLETED, 60)
            assert got.erasure.erased.installs == 60

        # A request left pending by a runner that stopped an hour ago.
        rest = [[*device_keys(device_pb2.DeviceIdentifiers(gaid=g))] for g in gaids[60:]]
        stalled = erasure_pb2.StoredErasure(
            erasure=erasure_pb2.Erasure(
                erasure_id=erasure_id(app_id, False, rest),
                app_id=app_id,
                state=erasure_pb2.ERASURE_STATE_PENDING,
                devices=len(rest),
                runs=1,
            ),
            devices=[erasure_pb2.DeviceKeys(keys=k) for k in rest],
            heartbeat_time=convert.micros_to_ts(time.time_ns() // 1000 - 3600 * 10**6),
        )
        async with admin_channel(a.store) as sc, admin_channel(a.postback) as pc:
            store = store_grpc.TouchpointStoreServiceStub(sc)
            await store.PutErasure(store_pb.PutErasureRequest(erasure=stalled))

            async def forget(app: str, ids: object) -> None:
                return None

            other = Eraser(
                store, postback_grpc.PostbackDispatcherServiceStub(pc), forget, settle=0.2
            )
            assert await other.resume_stale() == 1
            await other.wait_idle()
            done = await store.GetErasure(
                store_pb.GetErasureRequest(erasure_id=stalled.erasure.erasure_id)
            )
            assert done.erasure.erasure.state == erasure_pb2.ERASURE_STATE_COMPLETED
            assert done.erasure.erasure.erased.installs == 40
            assert list(done.erasure.devices) == []  # the keys are not kept
            assert await other.resume_stale() == 0
    finally:
        await suite.stop()
