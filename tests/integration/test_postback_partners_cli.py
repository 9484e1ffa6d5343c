"""``lookback postbacks partners`` against a running dispatcher (issue 16):
which partner lane is healthy, which broken, with what queued and
delivered; and the ListPartnerLanes RPC it reads, admin only."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import postback_pb2
from lookback.core import clients
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.processes import run_cli, serve
from lookback.testing.receiver import PostbackSink


async def test_the_partners_view_shows_a_healthy_and_a_broken_lane(tmp_path: object) -> None:
    good = PostbackSink()
    bad = PostbackSink(status=503, reply_body="down for maintenance")
    await good.start()
    await bad.start()
    dispatcher = await serve(
        "postback",
        "--queue-path",
        f"{tmp_path}/q.sqlite3",
        "--circuit-failures",
        "3",
        "--circuit-cooldown",
        "600",
        "--circuit-max-cooldown",
        "600",
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    try:
        async with admin_channel(dispatcher.address) as channel:
            stub = pb_grpc.PostbackDispatcherServiceStub(channel)
            bad_jobs = [
                postback_pb2.PostbackJob(job_id=f"bad-{n}", partner="badnet", url=f"{bad.url}/b")
                for n in range(6)
            ]
            # Three to open the circuit, then three that find it open.
            await stub.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=bad_jobs[:3]))
            await bad.wait_for("b", count=3)
            # Received is not yet answered: wait for the dispatcher to open it.
            deadline = time.monotonic() + 10
            while not await circuit_open(stub, "badnet"):
                assert time.monotonic() < deadline, "the circuit never opened"
                await asyncio.sleep(0.05)
            good_jobs = [
                postback_pb2.PostbackJob(job_id=f"good-{n}", partner="goodnet", url=f"{good.url}/g")
                for n in range(5)
            ]
            await stub.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=bad_jobs[3:] + good_jobs))
            await good.wait_for("g", count=5)
            deadline = time.monotonic() + 10
            # Received, and then recorded as delivered:
            for j in good_jobs:
                request = pb.GetPostbackJobRequest(job_id=j.job_id)
                while (await stub.GetPostbackJob(request)).state != pb.DELIVERY_STATE_DELIVERED:
                    assert time.monotonic() < deadline, "the deliveries were never recorded"
                    await asyncio.sleep(0.05)
            lanes = (await stub.ListPartnerLanes(pb.ListPartnerLanesRequest())).lanes
        by_partner = {lane.partner: lane for lane in lanes}
        assert set(by_partner) == {"goodnet", "badnet"}
        goodnet, badnet = by_partner["goodnet"], by_partner["badnet"]
        assert (goodnet.host, goodnet.circuit, goodnet.delivered) == (
            "127.0.0.1",
            pb.CIRCUIT_STATE_CLOSED,
            5,
        )
        assert goodnet.HasField("delay_p99") and goodnet.queued == 0
        assert badnet.circuit == pb.CIRCUIT_STATE_OPEN
        assert badnet.HasField("circuit_probe_time") and badnet.share == 0
        assert (badnet.consecutive_failures, badnet.retried, badnet.queued) == (3, 3, 6)
        # What failed, never what the partner answered.
        assert badnet.last_error == "HTTP 503"
        assert bad.counts == {"b": 3}  # the others wait, unsent

        code, out, err = await run_cli("postbacks", "partners", "--target", dispatcher.address)
        assert code == 0, err
        header, *rows = out.splitlines()
        assert header.split()[:3] == ["PARTNER", "HOST", "STATUS"]
        lines = {row.split()[0]: row for row in rows}
        assert " broken (circuit open) " in lines["badnet"] and "HTTP 503" in lines["badnet"]
        assert lines["goodnet"].split()[2] == "ok"

        code, out, _ = await run_cli(
            "postbacks", "partners", "--json", "--target", dispatcher.address
        )
        listed = {d["partner"]: d for d in map(json.loads, out.splitlines())}
        assert listed["badnet"]["circuit"] == "CIRCUIT_STATE_OPEN"
        assert listed["goodnet"]["delivered"] == "5"
    finally:
        await dispatcher.stop()
        await good.stop()
        await bad.stop()


async def circuit_open(stub: pb_grpc.PostbackDispatcherServiceStub, partner: str) -> bool:
    lanes = (await stub.ListPartnerLanes(pb.ListPartnerLanesRequest())).lanes
    return any(x.partner == partner and x.circuit == pb.CIRCUIT_STATE_OPEN for x in lanes)


async def test_listing_the_lanes_takes_the_admin_key(tmp_path: object) -> None:
    dispatcher = await serve("postback", "--queue-path", f"{tmp_path}/q.sqlite3")
    try:
        async with clients.channel(dispatcher.address, None) as channel:
            stub = pb_grpc.PostbackDispatcherServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListPartnerLanes(pb.ListPartnerLanesRequest())
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await dispatcher.stop()
