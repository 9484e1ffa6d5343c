"""Cancelling postbacks (an erasure) against a running dispatcher and a local
HTTP receiver, on both queues: a cancelled job is never sent while a later
control job is; one cancelled while in flight is not turned back into a
delivered, retried or dead job by its outcome; jobs named by their decision
or event (every job on SQLite, the dead letters on Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.types.v1 import postback_pb2
from lookback.postback.config import PostbackConfig
from lookback.postback.dispatcher import Dispatcher
from lookback.postback.queue import PostbackQueue, SqliteQueue, sources_of
from lookback.testing.http import LOCAL_CIDRS, start_http
from lookback.testing.receiver import PostbackSink


def one_at_a_time(queue: PostbackQueue) -> Dispatcher:
    """A dispatcher with one worker: it claims the next job only once the
    one before has been sent and its outcome recorded."""
    config = PostbackConfig(
        workers=1,
        poll_interval=0.02,
        base_delay=0.01,
        max_attempts=3,
        request_timeout=10,
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    return Dispatcher(config, queue)


def job(job_id: str, url: str, partner: str = "p") -> postback_pb2.PostbackJob:
    return postback_pb2.PostbackJob(
        job_id=job_id,
        url=url,
        partner=partner,
        body="click_id=c-personal",
        traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01",
    )


def test_sources_of_a_job_id() -> None:
    assert sources_of("d1:p:install") == ("d1",)
    assert sources_of("d1/r2:p:rejected") == ("d1/r2", "d1")
    assert sources_of("event:com.app:e1:p:event") == ("event:com.app:e1",)
    assert sources_of("j1") == sources_of("a:b") == sources_of("d1::install") == ()


async def test_a_cancelled_job_is_never_sent_while_a_later_one_is(
    queue: PostbackQueue, receiver: PostbackSink
) -> None:
    """Queued before the control job (so claimed before it, one worker) and
    cancelled: once the control job is delivered, the cancelled one would
    have been received already if it had been sent at all."""
    now = time.time()
    await queue.enqueue([job("dec-t:t:install", f"{receiver.url}/t")], now - 2)
    await queue.enqueue([job("dec-c:c:install", f"{receiver.url}/c")], now - 1)
    assert await queue.cancel(["dec-t:t:install"], [], now) == (1, 1)
    assert await queue.depth() == 1  # out of the queue at once, on both
    dispatcher = one_at_a_time(queue)
    await dispatcher.start()
    try:
        assert (await dispatcher.wait_final("dec-c:c:install", 10)).state == (
            pb.DELIVERY_STATE_DELIVERED
        )
    finally:
        await dispatcher.stop()
    assert receiver.for_partner("t") == []
    assert len(receiver.for_partner("c")) == 1
    state = await queue.get("dec-t:t:install")
    assert state is not None and state.state == pb.DELIVERY_STATE_CANCELLED
    assert (state.job.url, state.job.body, state.job.traceparent) == ("", "", "")
    assert state.delivered_at is None
    assert await queue.depth() == 0
    assert await queue.enqueue([job("dec-t:t:install", f"{receiver.url}/t")], time.time()) == 0


class Gate:
    """A partner that holds each request until released, then answers ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.count = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.count += 1
        self.arrived.set()
        await self.release.wait()
        return web.Response(status=self.status, text="held")


@pytest.mark.parametrize("status", [200, 503, 400])
async def test_a_job_cancelled_in_flight_stays_cancelled_whatever_its_outcome(
    queue: PostbackQueue, receiver: PostbackSink, status: int
) -> None:
    """Sent before the cancel, answered after it: delivered (200), to retry
    (503) or dead (400), the job stays cancelled and forgotten, and is not
    tried again (the control job, claimed only once the held job's outcome
    is recorded, is delivered; the held partner heard once)."""
    gate = Gate(status)
    app = web.Application()
    app.router.add_route("*", "/{rest:.*}", gate.handle)
    runner, url = await start_http(app)
    dispatcher = one_at_a_time(queue)
    await dispatcher.start()
    try:
        await queue.enqueue([job("dec-h:h:install", f"{url}/h")], time.time())
        dispatcher.wakeup.set()
        await asyncio.wait_for(gate.arrived.wait(), 10)
        if isinstance(queue, SqliteQueue):  # by its decision, then by id: nothing more
            assert await queue.cancel([], ["dec-h"], time.time()) == (1, 1)
            assert await queue.cancel(["dec-h:h:install"], [], time.time()) == (0, 1)
        else:  # by source, Redis finds only dead letters
            assert await queue.cancel([], ["dec-h"], time.time()) == (0, 0)
            assert await queue.cancel(["dec-h:h:install"], [], time.time()) == (1, 1)
        gate.release.set()
        await queue.enqueue([job("dec-c:c:install", f"{receiver.url}/c")], time.time())
        dispatcher.wakeup.set()
        control = await dispatcher.wait_final("dec-c:c:install", 10)
        assert control.state == pb.DELIVERY_STATE_DELIVERED
        state = await queue.get("dec-h:h:install")
        assert state is not None and state.state == pb.DELIVERY_STATE_CANCELLED
        assert (state.job.url, state.job.body) == ("", "")
        assert state.delivered_at is None
        assert await queue.depth() == 0
        assert await queue.list_dead(10) == []
        assert gate.count == 1
    finally:
        gate.release.set()
        await dispatcher.stop()
        await runner.cleanup()


async def _finish(queue: PostbackQueue, delivered: list[str], dead: list[str]) -> None:
    """Claim the jobs queued so far and record them delivered or dead."""
    claimed = {s.job.job_id for s in await queue.claim(100, time.time(), 30)}
    assert claimed == {*delivered, *dead}
    for job_id in delivered:
        await queue.delivered(job_id, time.time())
    for job_id in dead:
        await queue.dead(job_id, "HTTP 410: not retryable")


async def test_jobs_named_by_their_decision_or_event(queue: PostbackQueue) -> None:
    """A decision's jobs (its winner's and its rejections'), an event's; ids
    that merely start alike are left alone. SQLite finds every job by its
    source; Redis the dead letters only (pending and delivered jobs are
    named by id there, see lookback.postback.redis_queue)."""
    url = "https://partner.example/p?click=c-personal"
    now = time.time()
    await queue.enqueue([job("d1/r1:q:rejected", url), job("d1:q:install", url)], now)
    await _finish(queue, delivered=["d1/r1:q:rejected"], dead=["d1:q:install"])
    others = ["d10:p:install", "event:com.app:e10:p:event", "d1"]
    pending = ["d1:p:install", "d1/r0:q:rejected", "event:com.app:e1:p:event"]
    await queue.enqueue([job(i, url) for i in pending + others], now)

    cancelled, forgotten = await queue.cancel([], ["d1", "event:com.app:e1", "event:com.app"], now)
    if isinstance(queue, SqliteQueue):
        assert (cancelled, forgotten) == (4, 5)
        expected = {i: pb.DELIVERY_STATE_CANCELLED for i in [*pending, "d1:q:install"]}
        expected["d1/r1:q:rejected"] = pb.DELIVERY_STATE_DELIVERED
    else:
        assert (cancelled, forgotten) == (1, 1)
        expected = {"d1:q:install": pb.DELIVERY_STATE_CANCELLED}
    for job_id in [*pending, "d1:q:install", "d1/r1:q:rejected", *others]:
        state = await queue.get(job_id)
        assert state is not None
        if job_id in expected:
            assert state.state == expected[job_id], job_id
            assert (state.job.url, state.job.body, state.job.job_id) == ("", "", job_id)
        else:
            assert state.job.url == url, job_id
    assert await queue.list_dead(10) == []

    # Named by id, as the erasure knows them from the outcomes log: all of them.
    named = [*pending, "d1/r1:q:rejected", "d1:q:install"]
    again = await queue.cancel(named, ["d1"], now)
    assert again == ((0, 5) if isinstance(queue, SqliteQueue) else (3, 5))
    assert await queue.enqueue([job(i, url) for i in named], now) == 0
    # Only the others are claimed (on Redis the cancelled entries are skipped).
    claimed = await queue.claim(100, time.time(), 30)
    assert sorted(s.job.job_id for s in claimed) == sorted(others)
    assert await queue.depth() == len(others)  # in flight
