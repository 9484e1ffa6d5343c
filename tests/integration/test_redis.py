"""Redis for real: settings cache coherence across two decider processes,
and a dispatcher killed mid-delivery losing nothing."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
from google.protobuf import field_mask_pb2
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import app_pb2, postback_pb2
from lookback.decider.coherence import RedisInvalidation
from lookback.postback.redis_queue import RedisQueue
from lookback.testing.builders import create_app, new_app_id
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.processes import free_ports, run_cli, serve, start
from lookback.testing.receiver import PostbackSink
from lookback.testing.tls import TestPki


async def test_two_deciders_drop_changed_settings_at_once(redis_url: str, tmp_path: Path) -> None:
    store = await serve("touchpoint_store", "--sqlite-path", str(tmp_path / "s.sqlite3"))
    srn = await serve("srn_adapter")
    postback = await serve("postback", "--queue-path", str(tmp_path / "q.sqlite3"))
    common = [
        "--srn-address",
        srn.address,
        "--postback-address",
        postback.address,
        "--store-address",
        store.address,
        "--redis-url",
        redis_url,
        "--settings-cache-ttl",
        "600",
    ]
    a = await serve("decider", *common)
    b = await serve("decider", *common)
    try:
        async with (
            admin_channel(a.address) as cha,
            admin_channel(b.address) as chb,
        ):
            apps_a, apps_b = (
                apps_grpc.AppSettingsServiceStub(cha),
                apps_grpc.AppSettingsServiceStub(chb),
            )
            app_id = await create_app(apps_a, new_app_id("com.coherent"))
            cached = await apps_b.GetApp(apps_pb.GetAppRequest(app_id=app_id))  # B caches v1
            assert cached.app.version == 1
            update = app_pb2.App(app_id=app_id)
            update.settings.click_lookback.FromSeconds(3 * 86400)
            await apps_a.UpdateApp(
                apps_pb.UpdateAppRequest(
                    app=update,
                    update_mask=field_mask_pb2.FieldMask(paths=["settings.click_lookback"]),
                )
            )
            # B's cache would hold v1 for 600 s; the published change drops it.
            deadline = time.monotonic() + 3
            while True:
                seen = await apps_b.GetApp(apps_pb.GetAppRequest(app_id=app_id))
                if seen.app.version == 2 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert seen.app.version == 2
            assert seen.app.settings.click_lookback.seconds == 3 * 86400
    finally:
        for s in (a, b, srn, postback, store):
            await s.stop()


async def test_a_killed_dispatcher_loses_nothing_and_repeats_no_success(redis_url: str) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/1"  # a database of its own
    probe = RedisQueue(url)
    await probe.open()
    await probe.r.flushdb()
    await probe.close()
    sink = PostbackSink(delay=0.3)
    await sink.start()
    args = ["--redis-url", url, "--workers", "4", "--lease-seconds", "1", "--base-delay", "0.05"]
    first = await serve("postback", *args, outbound_allow_cidrs=LOCAL_CIDRS)  # the sink is local
    jobs = [
        postback_pb2.PostbackJob(job_id=f"job-{n}", partner="p", url=f"{sink.url}/p?n={n}")
        for n in range(20)
    ]
    try:
        async with admin_channel(first.address) as channel:
            await pb_grpc.PostbackDispatcherServiceStub(channel).EnqueuePostbacks(
                pb.EnqueuePostbacksRequest(jobs=jobs)
            )
        await sink.wait_for("p", count=6, timeout=20)  # some done, some in flight
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()

        queue = RedisQueue(url)
        await queue.open()
        done_before = {
            j.job_id
            for j in jobs
            if (s := await queue.get(j.job_id)) is not None
            and s.state == pb.DELIVERY_STATE_DELIVERED
        }
        assert done_before, "nothing was recorded as delivered before the kill"
        assert len(done_before) < len(jobs), "everything finished before the kill"

        second = await serve("postback", *args, outbound_allow_cidrs=LOCAL_CIDRS)
        try:
            deadline = time.monotonic() + 30
            while True:
                states = [await queue.get(j.job_id) for j in jobs]
                if all(s is not None and s.state == pb.DELIVERY_STATE_DELIVERED for s in states):
                    break
                assert time.monotonic() < deadline, [s.state if s else None for s in states]
                await asyncio.sleep(0.2)
            # Finished entries are acknowledged and deleted: no work is left behind.
            assert await queue.r.xlen(queue.stream) == 0
        finally:
            await second.stop()
            await queue.close()
        received = [r.headers["Idempotency-Key"] for r in sink.for_partner("p")]
        assert set(received) == {j.job_id for j in jobs}  # every job delivered
        for job_id in done_before:  # a recorded success is never sent again
            assert received.count(job_id) == 1, job_id
    finally:
        if first.process.returncode is None:
            first.process.kill()
        await sink.stop()


async def test_operators_list_and_replay_dead_letters_from_the_command_line(
    redis_url: str,
) -> None:
    url = redis_url.rsplit("/", 1)[0] + "/2"
    probe = RedisQueue(url)
    await probe.open()
    await probe.r.flushdb()
    await probe.close()
    sink = PostbackSink(status=400, reply_body="bad token")
    await sink.start()
    dispatcher = await serve(
        "postback", "--redis-url", url, "--max-attempts", "2", outbound_allow_cidrs=LOCAL_CIDRS
    )
    try:
        async with admin_channel(dispatcher.address) as channel:
            stub = pb_grpc.PostbackDispatcherServiceStub(channel)
            job = postback_pb2.PostbackJob(job_id="cli-1", partner="p", url=f"{sink.url}/p")
            await stub.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=[job]))
            await sink.wait_for("p")

            async def wait_state(want: int) -> None:
                deadline = time.monotonic() + 10
                while (
                    await stub.GetPostbackJob(pb.GetPostbackJobRequest(job_id="cli-1"))
                ).state != want:
                    assert time.monotonic() < deadline, f"cli-1 never reached state {want}"
                    await asyncio.sleep(0.05)

            await wait_state(pb.DELIVERY_STATE_DEAD)

            code, out, _ = await run_cli("postbacks", "dead", "--target", dispatcher.address)
            assert code == 0
            (line,) = out.splitlines()
            dead = json.loads(line)
            assert dead["job"]["job_id"] == "cli-1" and dead["state"] == "DELIVERY_STATE_DEAD"
            assert "HTTP 400" in dead["last_error"] and "bad token" in dead["last_error"]

            sink.status = 200
            code, out, _ = await run_cli(
                "postbacks", "replay", "cli-1", "--target", dispatcher.address
            )
            assert code == 0 and json.loads(out)["state"] == "DELIVERY_STATE_PENDING"
            await sink.wait_for("p", count=2)
            await wait_state(pb.DELIVERY_STATE_DELIVERED)

            code, out, err = await run_cli(
                "postbacks", "replay", "cli-1", "--target", dispatcher.address
            )
            assert code == 1 and "FAILED_PRECONDITION" in err
            code, out, _ = await run_cli(
                "postbacks", "show", "cli-1", "--target", dispatcher.address
            )
            assert code == 0 and json.loads(out)["state"] == "DELIVERY_STATE_DELIVERED"
    finally:
        await dispatcher.stop()
        await sink.stop()


async def test_queue_and_settings_channel_reach_redis_with_a_password_over_tls(
    tmp_path: Path, receiver: PostbackSink
) -> None:
    """A Redis of the test's own that speaks only TLS and wants a password
    (``requirepass``): the dispatcher (a real process, its password from the
    environment as from a Secret) opens its queue there and delivers, the
    deciders' settings channel subscribes and hears; a wrong password, a
    plain-text URL and another CA get nowhere. The password is not logged."""
    pki = TestPki.create(tmp_path / "pki")
    cert = pki.issue("redis")
    (port,) = free_ports(1)
    password = "s3cret-redis-password"
    server = await start(
        [
            *("redis-server", "--port", "0", "--bind", "127.0.0.1", "--tls-port", str(port)),
            *("--tls-cert-file", cert.cert, "--tls-key-file", cert.key),
            *("--tls-ca-cert-file", pki.ca_cert, "--tls-auth-clients", "no"),
            *("--requirepass", password, "--save", "", "--appendonly", "no"),
            *("--dir", str(tmp_path)),
        ],
        name="redis-server",
        ready=r"Ready to accept connections",
    )
    url = f"rediss://127.0.0.1:{port}/0"
    try:
        dispatcher = await serve(
            "postback",
            *("--redis-url", url, "--redis-tls-ca", pki.ca_cert),
            env={"LOOKBACK_REDIS_PASSWORD": password, "LOOKBACK_OUTBOUND_ALLOW_CIDRS": LOCAL_CIDRS},
        )
        try:
            async with admin_channel(dispatcher.address) as channel:
                await pb_grpc.PostbackDispatcherServiceStub(channel).EnqueuePostbacks(
                    pb.EnqueuePostbacksRequest(
                        jobs=[
                            postback_pb2.PostbackJob(
                                job_id="tls-1", partner="p", url=f"{receiver.url}/p"
                            )
                        ]
                    )
                )
            await receiver.wait_for("p", count=1, timeout=20)
        finally:
            await dispatcher.stop()
        assert password not in dispatcher.output()

        heard: list[str] = []
        arrived = asyncio.Event()

        def drop(app_id: str) -> None:
            heard.append(app_id)
            arrived.set()

        channel_ = RedisInvalidation(url, drop, heard.clear, password=password, tls_ca=pki.ca_cert)
        await channel_.start()
        try:
            await channel_.publish("com.tls.app")
            await asyncio.wait_for(arrived.wait(), 5)
            assert heard == ["com.tls.app"]
        finally:
            await channel_.stop()

        other = TestPki.create(tmp_path / "other-ca", "Someone else's CA")
        for bad, error in (
            (RedisQueue(url, password="wrong", tls_ca=pki.ca_cert), AuthenticationError),
            (RedisQueue(url, tls_ca=pki.ca_cert), AuthenticationError),  # no password
            (RedisQueue(url.replace("rediss", "redis"), password=password), RedisConnectionError),
            (RedisQueue(url, password=password, tls_ca=other.ca_cert), RedisConnectionError),
        ):
            with pytest.raises(error):
                await bad.open()
            await bad.close()
    finally:
        await server.stop()
