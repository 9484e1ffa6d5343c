"""The dispatcher against a real local HTTP receiver: delivery, retries,
dead letters, idempotency keys and signatures."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.types.v1 import postback_pb2
from lookback.postback.policy import RetryPolicy, judge
from lookback.postback.queue import PostbackQueue, SqliteQueue
from lookback.postback.redis_queue import RedisQueue
from lookback.postback.service import Dispatcher, PostbackConfig, signature
from lookback.postback.sink import PostbackSink


@pytest.fixture
async def receiver() -> AsyncIterator[PostbackSink]:
    sink = PostbackSink()
    await sink.start()
    yield sink
    await sink.stop()


@pytest.fixture(params=["sqlite", "redis"])
async def dispatcher(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Dispatcher]:
    """The same dispatcher over each queue backend (the dispatcher contract)."""
    config = PostbackConfig(
        queue_path=str(tmp_path / "q.sqlite3"),
        base_delay=0.01,
        max_attempts=3,
        poll_interval=0.02,
        lease_seconds=1.0,
        signing_secrets={"k1": "s3cret"},
    )
    queue: PostbackQueue
    if request.param == "sqlite":
        queue = SqliteQueue(config.queue_path)
    else:
        url = request.getfixturevalue("redis_url")
        queue = RedisQueue(url, prefix=f"test:{uuid.uuid4().hex[:8]}:")
    await queue.open()
    d = Dispatcher(config, queue)
    await d.start()
    yield d
    await d.stop()
    await queue.close()


def job(job_id: str, url: str, **kw: object) -> postback_pb2.PostbackJob:
    return postback_pb2.PostbackJob(job_id=job_id, url=url, partner="p", **kw)  # type: ignore[arg-type]


async def test_a_400_goes_straight_to_dead_letters(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 400
    await dispatcher.queue.enqueue([job("j4", f"{receiver.url}/p")], time.time())
    dispatcher.wakeup.set()
    state = await dispatcher.wait_final("j4", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert state.attempts == 1
    assert "HTTP 400" in state.last_error


async def test_delivers_with_idempotency_key_and_signature(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    await dispatcher.queue.enqueue(
        [job("j1", f"{receiver.url}/p?x=1", signing_secret="k1")], time.time()
    )
    dispatcher.wakeup.set()
    (got,) = await receiver.wait_for("p")
    assert got.headers["Idempotency-Key"] == "j1"
    expected = signature(
        "s3cret", got.headers["X-Lookback-Timestamp"], "GET", f"{receiver.url}/p?x=1", ""
    )
    assert got.headers["X-Lookback-Signature"] == expected
    state = await dispatcher.queue.get("j1")
    assert state is not None and state.state == pb.DELIVERY_STATE_DELIVERED


async def test_same_job_id_enqueued_twice_is_queued_once(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    assert await dispatcher.queue.enqueue([job("j2", f"{receiver.url}/p")], time.time()) == 1
    assert await dispatcher.queue.enqueue([job("j2", f"{receiver.url}/p")], time.time()) == 0


def test_retry_policy() -> None:
    rng = random.Random(1)
    policy = RetryPolicy(max_attempts=3, base_delay=1.0)
    assert judge(policy, attempt=1, age=0, status=204, rng=rng).outcome == "delivered"
    assert judge(policy, attempt=1, age=0, status=503, rng=rng).outcome == "retry"
    assert judge(policy, attempt=1, age=0, status=None, error="refused", rng=rng).outcome == "retry"
    assert judge(policy, attempt=1, age=0, status=400, rng=rng).outcome == "dead"
    assert judge(policy, attempt=1, age=0, status=302, rng=rng).outcome == "dead"
    assert judge(policy, attempt=3, age=0, status=500, rng=rng).outcome == "dead"
    slow = judge(policy, attempt=1, age=0, status=429, retry_after=30, rng=rng)
    assert slow.outcome == "retry" and slow.delay >= 30


async def test_retries_5xx_then_gives_up_into_dead_letters(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 500
    await dispatcher.queue.enqueue([job("j3", f"{receiver.url}/p")], time.time())
    dispatcher.wakeup.set()
    state = await dispatcher.wait_final("j3", timeout=10)
    assert len(receiver.for_partner("p")) == 3
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert "gave up after 3 attempts" in state.last_error


async def test_dead_letters_are_listed_and_replayed(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 404
    await dispatcher.queue.enqueue([job("j5", f"{receiver.url}/p")], time.time())
    dispatcher.wakeup.set()
    await dispatcher.wait_final("j5", timeout=10)
    (dead,) = await dispatcher.queue.list_dead(10)
    assert dead.job.job_id == "j5" and "HTTP 404" in dead.last_error
    receiver.status = 200
    replayed = await dispatcher.queue.replay("j5", time.time())
    assert replayed is not None and replayed.state == pb.DELIVERY_STATE_PENDING
    dispatcher.wakeup.set()
    state = await dispatcher.wait_final("j5", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DELIVERED
    assert await dispatcher.queue.list_dead(10) == []


async def test_retries_wait_for_retry_after_then_deliver(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 503
    await dispatcher.queue.enqueue([job("j6", f"{receiver.url}/p")], time.time())
    dispatcher.wakeup.set()
    await receiver.wait_for("p", count=2)  # failed, backed off, tried again
    receiver.status = 200
    state = await dispatcher.wait_final("j6", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DELIVERED
    assert state.attempts == len(receiver.for_partner("p"))
