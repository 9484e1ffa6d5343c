"""SIGTERM with a call in flight: the call finishes, then the process exits."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime

import grpc

from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.types.v1 import touch_pb2
from lookback.core.convert import micros_to_dur
from lookback.core.tasks import cancel_and_wait
from lookback.testing.builders import new_gaid
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.processes import serve
from lookback.testing.srn import FakeSrn


async def test_sigterm_lets_the_call_in_flight_finish(fake_srn: tuple[FakeSrn, str]) -> None:
    fake, url = fake_srn
    gaid = new_gaid()
    fake.claim("srn_slow", "com.slow", {"gaid": gaid}, "2026-01-01T00:00:00Z", campaign="late")
    fake.behaviour["srn_slow"] = {"delay_ms": 1500}
    adapter = await serve(
        "srn_adapter",
        "--srn-endpoints",
        f"srn_slow={url}",
        grace_period=10,
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    process = adapter.process
    try:
        async with admin_channel(adapter.address) as channel:
            stub = srn_grpc.SrnAdapterServiceStub(channel)
            request = srn_pb.QueryClaimsRequest(
                app_id="com.slow", networks=["srn_slow"], budget=micros_to_dur(5_000_000)
            )
            request.device.gaid = gaid
            request.installed_at.FromDatetime(datetime.now(UTC))
            fake.queried.clear()
            call = asyncio.ensure_future(stub.QueryClaims(request, timeout=10))
            await asyncio.wait_for(fake.queried.wait(), 10)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            answer = await call
            assert [c.campaign for c in answer.claims] == ["late"]
            assert answer.claims[0].touch_type == touch_pb2.TOUCH_TYPE_CLICK
            assert list(answer.unanswered) == []
            # A new call after the signal is refused.
            try:
                await stub.QueryClaims(request, timeout=2)
                refused = False
            except grpc.aio.AioRpcError:
                refused = True
            assert refused
        assert await asyncio.wait_for(process.wait(), 15) == 0
        assert time.monotonic() - sent < 10
    finally:
        await adapter.stop(signal.SIGKILL)


async def test_a_loop_that_swallows_a_cancellation_is_still_stopped() -> None:
    """The failure mode behind a hang seen in tests: a cancel lost inside an
    awaited call leaves a ``while True`` loop running; cancel_and_wait ends it."""
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 0:  # lose the first cancellation, as a buggy await would
                    swallowed += 1
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task), 5)
    assert task.cancelled() and swallowed == 1
