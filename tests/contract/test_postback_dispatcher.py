"""The dispatcher against a real local HTTP receiver that fails on purpose:
delivery, retries (5xx, timeouts, 429 with Retry-After), dead letters (4xx,
exhausted attempts) through the gRPC API, idempotency keys and signatures
(checked on the receiving side), secrets bound to their partner, redirects
never followed, cancellations (an erasure). Every test runs on both queues, SQLite and Redis (the
dispatcher contract)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import postback_pb2
from lookback.core import wire
from lookback.core.errors import InvalidArgument
from lookback.core.server import GrpcServer
from lookback.postback.component import PostbackComponent
from lookback.postback.config import PostbackConfig
from lookback.postback.dispatcher import Dispatcher, signature
from lookback.postback.policy import RESPONSE_EXCERPT, RetryPolicy, judge
from lookback.postback.queue import PostbackQueue, SqliteQueue
from lookback.postback.redis_queue import RedisQueue
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.testing.receiver import PostbackSink, Received


@pytest.fixture(params=["sqlite", "redis"])
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[GrpcServer]:
    """The dispatcher service over each queue backend, on a real port."""
    config = PostbackConfig(
        admin_keys=ADMIN_KEY,
        port=0,
        grace_period=1,
        queue_path=str(tmp_path / "q.sqlite3"),
        base_delay=0.01,
        max_attempts=3,
        poll_interval=0.02,
        lease_seconds=1.0,
        request_timeout=0.3,
        signing_secrets={"p.k1": "s3cret", "q": "not-p's"},
        delivered_retention=0.5,
        outbound_allow_cidrs=LOCAL_CIDRS,  # the receivers are on loopback
    )
    queue: PostbackQueue
    if request.param == "sqlite":
        queue = SqliteQueue(config.queue_path, retention=config.delivered_retention)
    else:
        url = request.getfixturevalue("redis_url")
        queue = RedisQueue(
            url, prefix=f"test:{uuid.uuid4().hex[:8]}:", retention=config.delivered_retention
        )
    server = GrpcServer(PostbackComponent(config, queue), config)
    await server.start()
    yield server
    await server.stop(0)


@pytest.fixture
def dispatcher(served: GrpcServer) -> Dispatcher:
    component = served.component
    assert isinstance(component, PostbackComponent)
    return component.dispatcher


@pytest.fixture
async def rpc(served: GrpcServer) -> AsyncIterator[pb_grpc.PostbackDispatcherServiceStub]:
    async with admin_channel(served.address) as channel:
        yield pb_grpc.PostbackDispatcherServiceStub(channel)


def job(job_id: str, url: str, **kw: object) -> postback_pb2.PostbackJob:
    return postback_pb2.PostbackJob(job_id=job_id, url=url, partner="p", **kw)  # type: ignore[arg-type]


async def send(dispatcher: Dispatcher, *jobs: postback_pb2.PostbackJob) -> None:
    """Queue ``jobs`` now and wake the workers."""
    await dispatcher.queue.enqueue(list(jobs), time.time())
    dispatcher.wakeup.set()


async def test_a_400_goes_straight_to_dead_letters(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 400
    receiver.reply_body = "unknown click id"
    await send(dispatcher, job("j4", f"{receiver.url}/p"))
    state = await dispatcher.wait_final("j4", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert state.attempts == 1
    assert "HTTP 400" in state.last_error
    assert "unknown click id" in state.last_error  # the partner's last answer is kept


def signed_as_received(key: str, got: Received) -> str:
    """The signature recomputed from what the receiver got: the method, the
    request-target as on the request line, the body's bytes."""
    return signature(key, got.headers["X-Lookback-Timestamp"], got.method, got.target, got.raw_body)


# Escapes the HTTP client would otherwise normalise (%3A to ":"), escaped
# slashes, spaces written both ways, an unescaped space and non-ASCII text.
TRICKY = "/p/a%3Ab%2Fc%20d?x=1&u=http%3A%2F%2Fh%2Fq%3Fr%3D1&s=a+b%20c&raw=a b&n=caf\u00e9&t=%7E~"


async def test_delivers_with_idempotency_key_and_signature(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    await dispatcher.queue.enqueue(
        [job("j1", f"{receiver.url}{TRICKY}", signing_secret="p.k1")], time.time()
    )
    dispatcher.wakeup.set()
    (got,) = await receiver.wait_for("p")
    assert got.headers["Idempotency-Key"] == "j1"
    # Sent as written (only what is never allowed in a URL is escaped), and
    # signed over exactly that.
    assert got.target == TRICKY.replace(" ", "%20").replace("\u00e9", "%C3%A9")
    assert got.headers["X-Lookback-Signature"] == signed_as_received("s3cret", got)
    state = await dispatcher.wait_final("j1", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DELIVERED


async def test_a_signed_post_is_signed_over_its_body_bytes(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    body = '{"click": "a%3Ab", "name": "caf\u00e9 \u2615"}'
    await send(
        dispatcher,
        job(
            "j-post",
            f"{receiver.url}/p/i%2F?c=a%3Ab",
            method=postback_pb2.HTTP_METHOD_POST,
            body=body,
            signing_secret="p.k1",
        ),
    )
    (got,) = await receiver.wait_for("p")
    assert got.method == "POST" and got.raw_body == body.encode()
    assert got.target == "/p/i%2F?c=a%3Ab"
    assert got.headers["X-Lookback-Signature"] == signed_as_received("s3cret", got)
    assert got.headers["X-Lookback-Signature"] != signed_as_received("other", got)


async def test_a_secret_bound_to_another_partner_is_never_used(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    """Partner p's settings naming partner q's secret (a signature oracle)
    go straight to the dead letters, saying why; nothing is sent."""
    await send(dispatcher, job("j-other", f"{receiver.url}/p", signing_secret="q"))
    await send(dispatcher, job("j-unknown", f"{receiver.url}/p", signing_secret="p.gone"))
    other = await dispatcher.wait_final("j-other", timeout=10)
    assert other.state == pb.DELIVERY_STATE_DEAD and other.attempts == 1
    assert "signing secret 'q' is not bound to partner 'p'" in other.last_error
    unknown = await dispatcher.wait_final("j-unknown", timeout=10)
    assert unknown.state == pb.DELIVERY_STATE_DEAD
    assert "unknown signing secret 'p.gone'" in unknown.last_error
    assert receiver.received == []


async def test_a_redirect_is_judged_not_followed(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    """A 302 to another (local) receiver is an answer like any 3xx: dead,
    not retried, and the place it points to never hears a thing."""
    async with PostbackSink() as elsewhere:
        receiver.status = 302
        receiver.reply_headers = {"Location": f"{elsewhere.url}/p?stolen=1"}
        await send(dispatcher, job("j-302", f"{receiver.url}/p"))
        state = await dispatcher.wait_final("j-302", timeout=10)
        assert state.state == pb.DELIVERY_STATE_DEAD and state.attempts == 1
        assert "HTTP 302" in state.last_error and "not retryable" in state.last_error
        assert len(receiver.for_partner("p")) == 1
        assert elsewhere.received == []


async def test_a_huge_answer_leaves_only_an_excerpt(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 400
    receiver.reply_body = "x" * (4 * 1024 * 1024)
    await send(dispatcher, job("j-big", f"{receiver.url}/p"))
    state = await dispatcher.wait_final("j-big", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert "HTTP 400" in state.last_error
    assert len(state.last_error) < RESPONSE_EXCERPT + 100


async def test_a_destination_not_allowed_is_dead_at_once(dispatcher: Dispatcher) -> None:
    """Private and metadata addresses (loopback is allowed here, for the
    receivers) are refused before any connection: no retries."""
    for n, url in enumerate(["http://10.0.0.1:9/p", "http://169.254.169.254/latest/meta-data"]):
        await send(dispatcher, job(f"j-private-{n}", url))
        state = await dispatcher.wait_final(f"j-private-{n}", timeout=10)
        assert state.state == pb.DELIVERY_STATE_DEAD and state.attempts == 1
        assert state.last_error.startswith("destination_not_allowed"), state.last_error


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
    await send(dispatcher, job("j3", f"{receiver.url}/p"))
    state = await dispatcher.wait_final("j3", timeout=10)
    assert len(receiver.for_partner("p")) == 3
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert "gave up after 3 attempts" in state.last_error


async def test_retries_wait_for_retry_after_then_deliver(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 503
    await send(dispatcher, job("j6", f"{receiver.url}/p"))
    await receiver.wait_for("p", count=2)  # failed, backed off, tried again
    receiver.status = 200
    state = await dispatcher.wait_final("j6", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DELIVERED
    assert state.attempts == len(receiver.for_partner("p"))


async def test_a_429_waits_as_long_as_retry_after_says(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.status = 429
    receiver.reply_headers = {"Retry-After": "1"}
    await send(dispatcher, job("j7", f"{receiver.url}/p"))
    await receiver.wait_for("p")
    receiver.status, receiver.reply_headers = 200, {}
    state = await dispatcher.wait_final("j7", timeout=10)
    assert state.state == pb.DELIVERY_STATE_DELIVERED
    first, second = receiver.for_partner("p")
    # The backoff alone would be about base_delay (10 ms); Retry-After says 1 s.
    assert second.at - first.at >= 1.0


async def test_timeouts_are_retried_then_dead_lettered(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    receiver.delay = 1.0  # longer than the 0.3 s request timeout
    await send(dispatcher, job("j8", f"{receiver.url}/p"))
    state = await dispatcher.wait_final("j8", timeout=15)
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert state.attempts == 3
    assert "TimeoutError" in state.last_error and "gave up after 3 attempts" in state.last_error


async def test_dead_letters_through_the_grpc_api(
    dispatcher: Dispatcher, rpc: pb_grpc.PostbackDispatcherServiceStub, receiver: PostbackSink
) -> None:
    receiver.status = 410
    receiver.reply_body = "campaign archived"
    await rpc.EnqueuePostbacks(
        pb.EnqueuePostbacksRequest(
            jobs=[job("d1", f"{receiver.url}/p"), job("d2", f"{receiver.url}/q")]
        )
    )
    await dispatcher.wait_final("d1", timeout=10)
    await dispatcher.wait_final("d2", timeout=10)

    listed = await rpc.ListDeadLetters(pb.ListDeadLettersRequest())
    assert [d.job.job_id for d in listed.dead_letters] == ["d1", "d2"]
    assert all(
        "HTTP 410" in d.last_error and "campaign archived" in d.last_error
        for d in listed.dead_letters
    )
    assert (
        len((await rpc.ListDeadLetters(pb.ListDeadLettersRequest(page_size=1))).dead_letters) == 1
    )

    inspected = await rpc.GetPostbackJob(pb.GetPostbackJobRequest(job_id="d1"))
    assert inspected.state == pb.DELIVERY_STATE_DEAD and inspected.attempts == 1

    receiver.status = 200
    replayed = await rpc.ReplayDeadLetter(pb.ReplayDeadLetterRequest(job_id="d1"))
    assert replayed.status.state == pb.DELIVERY_STATE_PENDING and replayed.status.attempts == 0
    assert (await dispatcher.wait_final("d1", timeout=10)).state == pb.DELIVERY_STATE_DELIVERED
    listed = await rpc.ListDeadLetters(pb.ListDeadLettersRequest())
    assert [d.job.job_id for d in listed.dead_letters] == ["d2"]

    with pytest.raises(grpc.aio.AioRpcError) as not_dead:
        await rpc.ReplayDeadLetter(pb.ReplayDeadLetterRequest(job_id="d1"))
    assert not_dead.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await rpc.ReplayDeadLetter(pb.ReplayDeadLetterRequest(job_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await rpc.ListDeadLetters(pb.ListDeadLettersRequest(page_size=5000))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_delivered_jobs_are_forgotten_after_their_retention(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    """Nothing grows for ever: a delivered job is dropped after the retention
    (0.5 s here); dead letters stay until replayed."""
    receiver.status = 200
    await dispatcher.queue.enqueue([job("r1", f"{receiver.url}/p")], time.time())
    await receiver.wait_for("p")
    receiver.status = 400
    await send(dispatcher, job("r2", f"{receiver.url}/q"))
    assert (await dispatcher.wait_final("r1", timeout=10)).state == pb.DELIVERY_STATE_DELIVERED
    assert (await dispatcher.wait_final("r2", timeout=10)).state == pb.DELIVERY_STATE_DEAD
    deadline = time.monotonic() + 10
    while await dispatcher.queue.get("r1") is not None:
        assert time.monotonic() < deadline, "the delivered job was kept past its retention"
        dispatcher.wakeup.set()  # the SQLite queue purges as it polls
        await asyncio.sleep(0.05)
    dead = await dispatcher.queue.get("r2")
    assert dead is not None and dead.state == pb.DELIVERY_STATE_DEAD


async def test_a_job_the_http_client_refuses_ends_dead_and_is_not_sent(
    dispatcher: Dispatcher, receiver: PostbackSink
) -> None:
    """A job that cannot be sent at all (here a job id with CR/LF, which
    the HTTP client refuses as a header; such jobs can only reach the queue
    around the RPC's validation) is judged like any failed attempt: retried,
    then dead-lettered, not claimed again and again."""
    poison = "poison\r\nX-Injected: 1"
    await send(dispatcher, job(poison, f"{receiver.url}/p"))
    state = await dispatcher.wait_final(poison, timeout=20)
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert state.attempts == 3  # max_attempts, then dead: no loop
    assert receiver.for_partner("p") == []


async def test_enqueue_refuses_job_ids_that_cannot_be_sent(
    rpc: pb_grpc.PostbackDispatcherServiceStub, dispatcher: Dispatcher
) -> None:
    bad = [
        job("a\r\nb", "https://p.example/x"),
        job("with space", "https://p.example/x"),
        job("trailing-newline\n", "https://p.example/x"),  # `$` let it through
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await rpc.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=bad))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = refused.value.details() or ""
    assert all(f"jobs[{i}].job_id" in details for i in range(3)), details
    for j in bad:  # nothing of the batch was queued
        assert await dispatcher.queue.get(j.job_id) is None
        # Such an id cannot name a job: asking for one is refused as well.
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await rpc.GetPostbackJob(pb.GetPostbackJobRequest(job_id=j.job_id))
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_consumers_cursors_are_kept_with_the_queue(dispatcher: Dispatcher) -> None:
    """The relay's position in each app's outcomes log (both queue backends)."""
    queue = dispatcher.queue
    name = f"outcomes:com.cursor.{uuid.uuid4().hex[:6]}"
    assert await queue.get_cursor(name) == ""
    await queue.set_cursor(name, "00000000000000000007")
    await queue.set_cursor(name, "00000000000000000009")
    assert await queue.get_cursor(name) == "00000000000000000009"
    assert await queue.get_cursor(name + "-other") == ""


# --- CancelPostbacks (an erasure) --------------------------------------------

TRACED = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"


def personal(job_id: str, url: str) -> postback_pb2.PostbackJob:
    """A job as the decider renders it, with what an erasure must forget."""
    j = job(
        job_id,
        url,
        app_id="com.cancel",
        trigger=postback_pb2.POSTBACK_TRIGGER_INSTALL,
        method=postback_pb2.HTTP_METHOD_POST,
        body='{"click_id": "c-personal"}',
        source_id=job_id.rsplit(":", 2)[0],
        traceparent=TRACED,
    )
    j.create_time.FromSeconds(1_700_000_000)
    return j


async def until_recorded(queue: PostbackQueue, job_id: str, timeout: float = 10) -> None:
    """Wait until a failed attempt of ``job_id`` is recorded (its error)."""
    deadline = time.monotonic() + timeout
    while not ((state := await queue.get(job_id)) and state.last_error):
        assert time.monotonic() < deadline, f"no attempt of {job_id} was recorded"
        await asyncio.sleep(0.01)


async def test_cancel_postbacks_cancels_pending_and_dead_jobs_and_forgets_every_named_one(
    dispatcher: Dispatcher, rpc: pb_grpc.PostbackDispatcherServiceStub, receiver: PostbackSink
) -> None:
    """By id: a pending job (waiting ten minutes for a retry, as a 429 asked)
    and a delivered one; by its decision: a dead letter (the only jobs the
    Redis queue finds by source). The pending and the dead job are
    cancelled, all three forgotten; enqueuing them again queues nothing."""
    async with PostbackSink() as busy:
        busy.status, busy.reply_headers = 429, {"Retry-After": "600"}
        delivered = personal("dec-d:p:install", f"{receiver.url}/p?click=c-personal")
        dead = personal("dec-x:p:install", "http://10.0.0.1:9/p?click=c-personal")
        pending = personal("dec-p:p:install", f"{busy.url}/p?click=c-personal")
        await rpc.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=[delivered, dead, pending]))
        assert (
            await dispatcher.wait_final(delivered.job_id, 10)
        ).state == pb.DELIVERY_STATE_DELIVERED
        assert (await dispatcher.wait_final(dead.job_id, 10)).state == pb.DELIVERY_STATE_DEAD
        await busy.wait_for("p")
        await until_recorded(dispatcher.queue, pending.job_id)

        request = pb.CancelPostbacksRequest(
            job_ids=[pending.job_id, delivered.job_id, "dec-unknown:p:install"],
            source_ids=["dec-x"],
        )
        answer = await rpc.CancelPostbacks(request)
        assert (answer.cancelled, answer.forgotten) == (2, 3)

        expected = {
            pending.job_id: pb.DELIVERY_STATE_CANCELLED,
            dead.job_id: pb.DELIVERY_STATE_CANCELLED,
            delivered.job_id: pb.DELIVERY_STATE_DELIVERED,
        }
        for original in (pending, dead, delivered):
            got = await rpc.GetPostbackJob(pb.GetPostbackJobRequest(job_id=original.job_id))
            assert got.state == expected[original.job_id], original.job_id
            assert (got.job.url, got.job.body, got.job.traceparent) == ("", "", "")
            kept = postback_pb2.PostbackJob()
            kept.CopyFrom(original)
            for name in ("url", "body", "traceparent"):
                kept.ClearField(name)
            assert got.job == kept  # id, app, partner, trigger, source, times stay
        assert (await rpc.ListDeadLetters(pb.ListDeadLettersRequest())).dead_letters == []
        assert await dispatcher.queue.depth() == 0
        with pytest.raises(grpc.aio.AioRpcError) as not_dead:
            await rpc.ReplayDeadLetter(pb.ReplayDeadLetterRequest(job_id=dead.job_id))
        assert not_dead.value.code() == grpc.StatusCode.FAILED_PRECONDITION

        # The relay (or a retried hand-over) queueing them again: nothing.
        again = await rpc.EnqueuePostbacks(
            pb.EnqueuePostbacksRequest(jobs=[delivered, dead, pending])
        )
        assert again.enqueued == 0
        for original in (pending, dead, delivered):
            state = await dispatcher.queue.get(original.job_id)
            assert state is not None and state.state == expected[original.job_id]
            assert state.job.url == "" and state.job.body == ""
        # The same erasure again: nothing more to cancel, the same jobs forgotten.
        repeated = await rpc.CancelPostbacks(request)
        assert (repeated.cancelled, repeated.forgotten) == (0, 3)
        assert len(busy.for_partner("p")) == 1 and len(receiver.for_partner("p")) == 1


async def test_a_cancelled_job_is_purged_after_the_retention(
    dispatcher: Dispatcher, rpc: pb_grpc.PostbackDispatcherServiceStub
) -> None:
    """The tombstone goes like a delivered job, after the retention (0.5 s)."""
    await send(dispatcher, job("dec-purge:p:install", "http://10.0.0.1:9/p"))
    assert (await dispatcher.wait_final("dec-purge:p:install", 10)).state == pb.DELIVERY_STATE_DEAD
    answer = await rpc.CancelPostbacks(pb.CancelPostbacksRequest(source_ids=["dec-purge"]))
    assert (answer.cancelled, answer.forgotten) == (1, 1)
    deadline = time.monotonic() + 10
    while await dispatcher.queue.get("dec-purge:p:install") is not None:
        assert time.monotonic() < deadline, "the cancelled job was kept past its retention"
        dispatcher.wakeup.set()  # the SQLite queue purges as it polls
        await asyncio.sleep(0.05)


async def test_cancel_postbacks_refuses_bad_ids_naming_the_field(
    rpc: pb_grpc.PostbackDispatcherServiceStub,
) -> None:
    cases = [
        (pb.CancelPostbacksRequest(job_ids=["ok:p:install", "with space"]), {"job_ids[1]"}),
        (pb.CancelPostbacksRequest(source_ids=["", "x" * 601]), {"source_ids[0]", "source_ids[1]"}),
        (pb.CancelPostbacksRequest(job_ids=[f"d{i}" for i in range(100_001)]), {"job_ids"}),
        (pb.CancelPostbacksRequest(source_ids=[f"d{i}" for i in range(100_001)]), {"source_ids"}),
    ]
    for request, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rpc.CancelPostbacks(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        error = wire.from_rpc_error(refused.value)
        assert isinstance(error, InvalidArgument)
        assert {v.field for v in error.violations} == fields
    # At the limit, and naming nothing at all: fine.
    many = [f"d{i}:p:install" for i in range(100_000)]
    answer = await rpc.CancelPostbacks(pb.CancelPostbacksRequest(job_ids=many, source_ids=many))
    assert (answer.cancelled, answer.forgotten) == (0, 0)
    assert await rpc.CancelPostbacks(pb.CancelPostbacksRequest()) == pb.CancelPostbacksResponse()
