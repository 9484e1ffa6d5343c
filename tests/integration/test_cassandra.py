"""The suite on a real Cassandra: exactly once across two decider processes,
TTLs, the scenario suite through a Cassandra-backed suite, and recovery when
the node goes away and comes back."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import signal
import socket
import ssl
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, decision_pb2, touch_pb2
from lookback.core.convert import micros_to_ts
from lookback.core.server import LIVENESS
from lookback.testing import builders
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.processes import (
    free_base_port,
    free_ports,
    run_cli,
    serve,
    up,
    wait_health,
)
from lookback.testing.receiver import PostbackSink
from lookback.testing.tls import TestPki
from lookback.touchpoint_store.cassandra import CassandraBackend
from lookback.touchpoint_store.client import index_touch
from lookback.touchpoint_store.component import make_backend
from lookback.touchpoint_store.config import StoreConfig
from lookback.touchpoint_store.cql import LoopConnection
from tests import REPO
from tests.backends import CassandraNode, start_backend


async def test_fifty_concurrent_reports_through_two_deciders_decide_once(
    cassandra: CassandraNode, tmp_path: Path, receiver: PostbackSink
) -> None:
    keyspace = [
        "--cassandra-hosts",
        cassandra.host,
        "--cassandra-port",
        str(cassandra.port),
        "--cassandra-keyspace",
        cassandra.keyspace,
    ]
    local = LOCAL_CIDRS  # the receiver is on loopback
    store = await serve("touchpoint_store", *keyspace, outbound_allow_cidrs=local)
    postback = await serve(
        "postback", "--queue-path", str(tmp_path / "q.sqlite3"), outbound_allow_cidrs=local
    )
    srn = await serve("srn_adapter")
    deciders = [
        await serve(
            "decider",
            "--store-address",
            store.address,
            "--srn-address",
            srn.address,
            "--postback-address",
            postback.address,
            outbound_allow_cidrs=local,
        )
        for _ in range(2)
    ]
    try:
        app_id = builders.new_app_id("com.race")
        gaid = builders.new_gaid()
        async with (
            admin_channel(deciders[0].address) as ch0,
            admin_channel(deciders[1].address) as ch1,
            admin_channel(store.address) as store_ch,
        ):
            await builders.create_app(
                apps_grpc.AppSettingsServiceStub(ch0),
                app_id,
                postbacks={"networka": f"{receiver.url}/networka?c={{click_id}}"},
            )
            touch = builders.click(app_id, gaid, click_id="c-race")
            stub_store = store_grpc.TouchpointStoreServiceStub(store_ch)
            await stub_store.PutTouches(store_pb.PutTouchesRequest(touches=[index_touch(touch)]))
            install = builders.install(app_id, "i-race", gaid=gaid)
            install.installed_at.GetCurrentTime()
            stubs = [decider_grpc.DeciderServiceStub(ch) for ch in (ch0, ch1)]
            answers = await asyncio.gather(
                *(
                    stubs[n % 2].DecideInstall(
                        decider_pb.DecideInstallRequest(install=install), timeout=30
                    )
                    for n in range(50)
                )
            )
            kinds = [a.decision.kind for a in answers]
            assert kinds.count(decision_pb2.DECISION_KIND_INSTALL) == 1
            assert kinds.count(decision_pb2.DECISION_KIND_DUPLICATE) == 49
            assert len({a.decision.decision_id for a in answers}) == 1
            assert {(a.decision.media_source, a.decision.click_id) for a in answers} == {
                ("networka", "c-race")
            }
            stored = await stub_store.GetInstallRecord(
                store_pb.GetInstallRecordRequest(app_id=app_id, install_id="i-race")
            )
            assert stored.record.decision.decision_id == answers[0].decision.decision_id
        received = await receiver.wait_for("networka")
        # Both deciders handed the postback over (duplicates re-hand it);
        # the dispatcher queued its id once, so the partner heard once.
        assert (
            await receiver.wait_until(lambda: len(receiver.for_partner("networka")) > 1, 1.0)
            is False
        )
        assert len(received) == 1
    finally:
        for s in (*deciders, srn, postback, store):
            await s.stop()
        for s in (*deciders, store):
            print("".join(s.log[-30:]))


async def test_migrations_are_versioned_and_idempotent(cassandra: CassandraNode) -> None:
    from cassandra.cluster import Cluster

    from lookback.touchpoint_store import schema

    def migrate_twice() -> tuple[list[int], list[int], list[int]]:
        cluster = Cluster([cassandra.host], port=cassandra.port, protocol_version=5)
        try:
            session = cluster.connect()
            keyspace = f"lookback_mig_{uuid.uuid4().hex[:8]}"
            first = schema.migrate(session, keyspace, "SimpleStrategy:1")
            again = schema.migrate(session, keyspace, "SimpleStrategy:1")
            rows = session.execute(
                f"SELECT version FROM {keyspace}.schema_version WHERE component = 'store'"
            )
            recorded = sorted(r.version for r in rows)
            session.execute(f"DROP KEYSPACE {keyspace}")
            return first, again, recorded
        finally:
            cluster.shutdown()

    first, again, recorded = await asyncio.to_thread(migrate_twice)
    assert first == sorted(schema.MIGRATIONS)
    assert again == []
    assert recorded == sorted(schema.MIGRATIONS)


async def test_lookback_migrate_runs_before_a_store_that_does_not_migrate(
    cassandra: CassandraNode,
) -> None:
    """The Kubernetes upgrade path: a Job runs ``lookback migrate``, stores
    started with ``--cassandra-migrate false`` refuse an out-of-date schema."""
    from lookback.touchpoint_store import schema

    keyspace = f"lookback_job_{uuid.uuid4().hex[:8]}"
    settings = [
        "--cassandra-hosts",
        cassandra.host,
        "--cassandra-port",
        str(cassandra.port),
        "--cassandra-keyspace",
        keyspace,
    ]
    code, out, err = await run_cli(
        "serve", "touchpoint_store", *settings, "--cassandra-migrate", "false", timeout=60
    )
    assert code != 0 and "run `lookback migrate`" in out + err, (out + err)[-2000:]

    versions = str(sorted(schema.MIGRATIONS))
    for _ in range(2):  # idempotent
        code, out, _ = await run_cli("migrate", *settings)
        assert code == 0 and f"keyspace {keyspace}: schema versions {versions}" in out, out
    code, out, _ = await run_cli("migrate", *settings, "--backfill-install-items")
    assert code == 0 and "install_items: 0 events and 0 open decisions indexed" in out, out

    store = await serve("touchpoint_store", *settings, "--cassandra-migrate", "false")
    await store.stop()
    assert store.process.returncode == 0


async def test_records_carry_ttls_from_their_own_time(cassandra: CassandraNode) -> None:
    from cassandra.cluster import Cluster

    backend = CassandraBackend(cassandra.settings())
    await backend.open()
    app = f"app-{uuid.uuid4().hex[:8]}"
    now = time.time_ns() // 1000
    day = 86_400_000_000
    click = touch_pb2.Touch(
        app_id=app,
        click_id="c",
        type=touch_pb2.TOUCH_TYPE_CLICK,
        engaged_at=micros_to_ts(now - 10 * day),
    )
    view = touch_pb2.Touch(
        app_id=app,
        click_id="v",
        type=touch_pb2.TOUCH_TYPE_IMPRESSION,
        engaged_at=micros_to_ts(now - 3_600_000_000),
    )
    await backend.put_touches(
        [store_pb.IndexedTouch(touch=t, match_keys=["gaid:x"]) for t in (click, view)]
    )
    await backend.close()

    def ttls() -> dict[str, int]:
        cluster = Cluster([cassandra.host], port=cassandra.port, protocol_version=5)
        try:
            session = cluster.connect(cassandra.keyspace)
            rows = session.execute(
                "SELECT click_id, TTL(body) AS ttl FROM touches_by_key WHERE app_id=%s AND key=%s",
                (app, "gaid:x"),
            )
            return {r.click_id: r.ttl for r in rows}
        finally:
            cluster.shutdown()

    found = await asyncio.to_thread(ttls)
    # Clicks: 30 days + 1 day margin from the click; impressions: 24 h + 1 day.
    assert abs(found["c"] - 21 * 86_400) < 120
    assert abs(found["v"] - (2 * 86_400 - 3_600)) < 120


async def test_outcomes_and_decisions_carry_ttls_from_the_decision_time(
    cassandra: CassandraNode,
) -> None:
    from cassandra.cluster import Cluster

    backend = CassandraBackend(cassandra.settings())
    await backend.open()
    app = f"app-{uuid.uuid4().hex[:8]}"
    now = time.time_ns() // 1000
    day = 86_400_000_000
    decision = decision_pb2.Decision(
        decision_id="d1",
        app_id=app,
        install_id="i1",
        kind=decision_pb2.DECISION_KIND_INSTALL,
        decided_at=micros_to_ts(now - 2 * day),
    )
    record = store_pb.InstallRecord(decision=decision, attributed_decision=decision)
    record.install.app_id, record.install.install_id = app, "i1"
    record.install.installed_at.CopyFrom(micros_to_ts(now - 2 * day))
    assert (await backend.create_install_record(record))[0]
    await backend.close()

    def ttls() -> tuple[int, int]:
        cluster = Cluster([cassandra.host], port=cassandra.port, protocol_version=5)
        try:
            session = cluster.connect(cassandra.keyspace)
            bucket = (now - 2 * day) // day
            (outcome,) = session.execute(
                "SELECT TTL(body) AS ttl FROM outcomes WHERE app_id=%s AND bucket=%s",
                (app, bucket),
            )
            (by_id,) = session.execute(
                "SELECT TTL(body) AS ttl FROM decisions_by_id WHERE app_id=%s AND decision_id=%s",
                (app, "d1"),
            )
            return outcome.ttl, by_id.ttl
        finally:
            cluster.shutdown()

    outcome_ttl, decision_ttl = await asyncio.to_thread(ttls)
    # The log keeps 7 days, the decision index as long as the install (24 months + 1 day).
    assert abs(outcome_ttl - 5 * 86_400) < 120
    assert abs(decision_ttl - ((24 * 30 + 1) - 2) * 86_400) < 120


async def test_a_burst_beyond_the_socket_buffers_is_written_and_read_whole(
    cassandra: CassandraNode,
) -> None:
    """The driver's sockets are served by the store's event loop (cql.py): a
    burst of requests fills the socket's send buffer (partial writes, then
    the rest when it drains) and answers arrive in many reads. (Correctness,
    not speed: requests get a long timeout on a busy machine.)"""
    backend = CassandraBackend(dataclasses.replace(cassandra.settings(), request_timeout=30.0))
    await backend.open()
    assert backend.session is not None
    for pool in backend.session.get_pools():  # a small send buffer: every batch is split
        for connection in pool.get_connections():
            connection._socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        app = f"app-{uuid.uuid4().hex[:8]}"
        at = micros_to_ts(time.time_ns() // 1000 - 3_600_000_000)
        items = []
        for i in range(3000):
            t = touch_pb2.Touch(
                app_id=app, click_id=f"c{i}", type=touch_pb2.TOUCH_TYPE_CLICK, engaged_at=at
            )
            t.user_agent = "x" * 200
            items.append(store_pb.IndexedTouch(touch=t, match_keys=[f"k:{i % 50}"]))
        stored = await asyncio.gather(
            *(backend.put_touches(items[n : n + 500]) for n in range(0, 3000, 500))
        )
        assert sum(stored) == 3000
        keys = [f"k:{i}" for i in range(40)]  # 2,400 touches, in many reads
        found = await asyncio.gather(
            *(backend.find_touches(app, keys, [], 0, 2**62) for _ in range(4))
        )
        expected = {f"c{i}" for i in range(3000) if i % 50 < 40}
        assert all({t.click_id for t in f} == expected for f in found)
    finally:
        await backend.close()


async def test_scenarios_pass_on_a_cassandra_backed_suite(
    cassandra: CassandraNode, tmp_path: Path
) -> None:
    base = free_base_port(41_000)
    (srn_port,) = free_ports(1)
    suite = await up(
        tmp_path,
        "--cassandra",
        f"{cassandra.host}:{cassandra.port}",
        "--cassandra-keyspace",
        cassandra.keyspace,
        "--srn-endpoints",
        f"*=http://127.0.0.1:{srn_port}",
        base_port=base,
        outbound_allow_cidrs=LOCAL_CIDRS,  # the runner's fake SRN and sink are on loopback
    )
    try:
        assert "store backend     Cassandra" in suite.output()
        paths = [str(REPO / "tests" / "scenarios")]
        shared = REPO.parent / "shared" / "scenarios"
        if shared.is_dir():
            paths.append(str(shared))
        code, out, err = await run_cli(
            "scenario",
            "run",
            *paths,
            "--target",
            f"127.0.0.1:{base + 100}",
            "--srn-listen",
            f"127.0.0.1:{srn_port}",
            timeout=600,
        )
        not_passed = [line for line in out.splitlines() if not line.startswith("PASS")]
        assert code == 0, "\n".join(not_passed)[-4000:] + err[-2000:]
        assert re.search(r"scenarios: \d+ passed, 0 failed", out)
    finally:
        await suite.stop(signal.SIGINT, timeout=60)


async def test_store_is_unavailable_while_cassandra_is_down_and_recovers(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A node of its own: stopping the session's node would disturb other tests.
    port, storage_port = free_ports(2)
    node = CassandraNode(
        "127.0.0.1",
        port,
        keyspace="lookback_outage",
        directory=tmp_path_factory.mktemp("cassandra-outage"),
    )
    started = node.script("start", "--port", str(port), "--storage-port", str(storage_port))
    assert started.returncode == 0, started.stdout + started.stderr
    store = await serve(
        "touchpoint_store",
        "--cassandra-hosts",
        node.host,
        "--cassandra-port",
        str(port),
        "--cassandra-keyspace",
        node.keyspace,
        "--cassandra-request-timeout",
        "1",
        "--health-interval",
        "0.5",
    )
    try:
        app = app_pb2.App(app_id="com.outage", platform=app_pb2.PLATFORM_ANDROID, version=1)
        async with admin_channel(store.address) as channel:
            stub = store_grpc.TouchpointStoreServiceStub(channel)
            await stub.CreateApp(store_pb.CreateAppRequest(app=app))

            stopped = await asyncio.to_thread(node.script, "stop")
            assert stopped.returncode == 0, stopped.stderr
            await wait_health(store.address, health_pb2.HealthCheckResponse.NOT_SERVING, 60)
            # Not ready, but alive: a liveness probe must not restart it for this.
            alive = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=LIVENESS)
            )
            assert alive.status == health_pb2.HealthCheckResponse.SERVING
            t = touch_pb2.Touch(
                app_id="com.outage",
                click_id="c-down",
                media_source="networka",
                type=touch_pb2.TOUCH_TYPE_CLICK,
            )
            t.engaged_at.GetCurrentTime()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.PutTouches(
                    store_pb.PutTouchesRequest(touches=[store_pb.IndexedTouch(touch=t)]), timeout=20
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            restarted = await asyncio.to_thread(
                node.script, "start", "--port", str(port), "--storage-port", str(storage_port)
            )
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            await wait_health(store.address, health_pb2.HealthCheckResponse.SERVING, 120)
            await stub.PutTouches(
                store_pb.PutTouchesRequest(touches=[store_pb.IndexedTouch(touch=t)]), timeout=20
            )
            found = await stub.FindTouches(
                store_pb.FindTouchesRequest(app_id="com.outage", click_ids=["c-down"])
            )
            assert [x.click_id for x in found.touches] == ["c-down"]
            got = await stub.GetApp(store_pb.GetAppRequest(app_id="com.outage"))
            assert got.app.app_id == "com.outage"  # written before the outage, still there
    finally:
        await store.stop()
        await asyncio.to_thread(node.script, "wipe")


async def test_the_store_reaches_cassandra_with_a_password_over_tls(tmp_path: Path) -> None:
    """A node of its own with PasswordAuthenticator and client TLS: the store
    logs in (PlainTextAuthProvider) over TLS verified against the test CA,
    and a burst of writes and large reads runs whole over the TLS sockets the
    event loop serves (cql.py); a wrong password or another CA gets nowhere."""
    from cassandra.cluster import NoHostAvailable

    pki = TestPki.create(tmp_path / "pki")
    node_cert = pki.issue("cassandra")  # names 127.0.0.1, the address the driver uses
    keystore = tmp_path / "node.pem"
    keystore.write_text(Path(node_cert.key).read_text() + Path(node_cert.cert).read_text())
    port, storage_port = free_ports(2)
    node = CassandraNode("127.0.0.1", port, directory=tmp_path / "node")
    start_backend(
        "cassandra.sh",
        *("--dir", str(node.directory), "--port", str(port), "--storage-port", str(storage_port)),
        *("--auth", "--tls-keystore", str(keystore)),
    )
    try:
        config = StoreConfig(
            cassandra_hosts="127.0.0.1",
            cassandra_port=port,
            cassandra_keyspace=node.keyspace,
            cassandra_username="cassandra",
            cassandra_password="cassandra",
            cassandra_tls_ca=pki.ca_cert,
            cassandra_request_timeout=30.0,
        )
        backend = make_backend(config)
        assert isinstance(backend, CassandraBackend)
        await backend.open()
        try:
            assert backend.session is not None
            sockets = [
                c._socket for pool in backend.session.get_pools() for c in pool.get_connections()
            ]
            assert sockets and all(isinstance(s, ssl.SSLSocket) for s in sockets)
            for s in sockets:  # a small send buffer: TLS writes that cannot go at once
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            app = f"app-{uuid.uuid4().hex[:8]}"
            at = micros_to_ts(time.time_ns() // 1000 - 3_600_000_000)
            items = []
            for i in range(1500):
                t = touch_pb2.Touch(
                    app_id=app, click_id=f"c{i}", type=touch_pb2.TOUCH_TYPE_CLICK, engaged_at=at
                )
                t.user_agent = "x" * 200
                items.append(store_pb.IndexedTouch(touch=t, match_keys=[f"k:{i % 30}"]))
            stored = await asyncio.gather(
                *(backend.put_touches(items[n : n + 500]) for n in range(0, 1500, 500))
            )
            assert sum(stored) == 1500
            keys = [f"k:{i}" for i in range(20)]  # 1,000 touches: answers of many TLS records
            found = await asyncio.gather(
                *(backend.find_touches(app, keys, [], 0, 2**62) for _ in range(3))
            )
            expected = {f"c{i}" for i in range(1500) if i % 30 < 20}
            assert all({t.click_id for t in f} == expected for f in found)
        finally:
            await backend.close()

        async def refused(**changes: object) -> None:
            bad = make_backend(dataclasses.replace(config, **changes))  # type: ignore[arg-type]
            assert isinstance(bad, CassandraBackend)
            bad.connection_class = LoopConnection.bound_to(asyncio.get_running_loop())
            with pytest.raises(NoHostAvailable):
                await asyncio.to_thread(bad._connect)

        await refused(cassandra_password="wrong")
        other = TestPki.create(tmp_path / "other-ca", "Someone else's CA")
        await refused(cassandra_tls_ca=other.ca_cert)
    finally:
        node.script("stop")
