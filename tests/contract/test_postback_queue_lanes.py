"""Partner lanes in both postback queues (SQLite and Redis Streams), issue
16: each job is kept in its lane, a claim offers the planner the lanes with
due jobs not in flight and takes from each what the plan says, oldest due
first, and retries, replays and cancellations keep to the job's lane."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lookback.api.types.v1 import postback_pb2
from lookback.postback.lanes import lane_of
from lookback.postback.queue import DEAD, PENDING, PostbackQueue

A = lane_of("adnet", "https://a.example/p")
B = lane_of("bnet", "https://b.example/p")
LEASE = 30.0


def job(job_id: str, partner: str) -> postback_pb2.PostbackJob:
    host = {"adnet": "a.example", "bnet": "b.example"}[partner]
    return postback_pb2.PostbackJob(job_id=job_id, partner=partner, url=f"https://{host}/p")


async def fill(queue: PostbackQueue) -> None:
    """a-0..a-2 for adnet and b-0..b-1 for bnet, queued one after another."""
    for t, (job_id, partner) in enumerate(
        [("a-0", "adnet"), ("b-0", "bnet"), ("a-1", "adnet"), ("a-2", "adnet"), ("b-1", "bnet")]
    ):
        assert await queue.enqueue([job(job_id, partner)], now=1.0 + t) == 1


class Planner:
    """A plan that records the lanes it was offered and claims what it is told."""

    def __init__(self, wants: Mapping[str, int]) -> None:
        self.wants = dict(wants)
        self.offered: list[set[str]] = []

    def __call__(self, lanes: Sequence[str]) -> dict[str, int]:
        self.offered.append(set(lanes))
        return {lane: n for lane, n in self.wants.items() if lane in lanes}


async def test_each_job_is_kept_in_its_partners_and_hosts_lane(queue: PostbackQueue) -> None:
    await fill(queue)
    assert await queue.lane_depths() == {A: 3, B: 2}
    assert await queue.depth() == 5
    state = await queue.get("a-1")
    assert state is not None and state.lane == A == "adnet@a.example"


async def test_a_claim_takes_from_each_lane_what_the_plan_says_oldest_first(
    queue: PostbackQueue,
) -> None:
    await fill(queue)
    plan = Planner({A: 2, B: 1})
    claimed = await queue.claim(10, now=10.0, lease=LEASE, plan=plan)
    assert plan.offered == [{A, B}]
    assert sorted((s.lane, s.job.job_id) for s in claimed) == [
        (A, "a-0"),
        (A, "a-1"),
        (B, "b-0"),
    ]
    assert all(s.attempts == 1 for s in claimed)
    # A lane left out of the plan gets none; the limit bounds the whole claim.
    assert await queue.claim(10, now=10.0, lease=LEASE, plan=Planner({})) == []
    (one,) = await queue.claim(1, now=10.0, lease=LEASE, plan=Planner({A: 5, B: 5}))
    assert one.job.job_id in {"a-2", "b-1"}


async def test_a_lane_with_every_due_job_in_flight_is_not_offered(queue: PostbackQueue) -> None:
    await fill(queue)
    await queue.claim(10, now=10.0, lease=LEASE, plan=Planner({A: 3}))
    plan = Planner({A: 3, B: 3})
    claimed = await queue.claim(10, now=10.0, lease=LEASE, plan=plan)
    assert plan.offered == [{B}]
    assert {s.job.job_id for s in claimed} == {"b-0", "b-1"}
    # In flight is still queued: depths count jobs not yet finished.
    assert await queue.lane_depths() == {A: 3, B: 2}
    plan = Planner({A: 3, B: 3})
    assert await queue.claim(10, now=10.0, lease=LEASE, plan=plan) == []
    assert plan.offered in ([], [set()])  # nothing due: nothing, or nothing to offer


async def test_without_a_plan_due_jobs_of_every_lane_each_in_order(queue: PostbackQueue) -> None:
    await fill(queue)
    claimed = await queue.claim(10, now=10.0, lease=LEASE)
    assert [s.job.job_id for s in claimed if s.lane == A] == ["a-0", "a-1", "a-2"]
    assert [s.job.job_id for s in claimed if s.lane == B] == ["b-0", "b-1"]
    assert len(await queue.claim(1, now=10.0, lease=LEASE)) == 0


async def test_a_retry_waits_in_its_own_lane(queue: PostbackQueue) -> None:
    await fill(queue)
    (first,) = await queue.claim(1, now=10.0, lease=LEASE, plan=Planner({A: 1}))
    await queue.retry(first.job.job_id, at=100.0, error="HTTP 503")
    assert await queue.lane_depths() == {A: 3, B: 2}
    # Before it is due, adnet's other two are offered and claimed, not it.
    taken = await queue.claim(10, now=50.0, lease=LEASE, plan=Planner({A: 5}))
    assert {s.job.job_id for s in taken} == {"a-1", "a-2"}
    for s in taken:
        await queue.delivered(s.job.job_id, now=50.0)
    plan = Planner({A: 5})
    assert await queue.claim(10, now=60.0, lease=LEASE, plan=plan) == []
    assert all(A not in offered for offered in plan.offered)
    # Once due, it is claimed from its lane, its second attempt.
    plan = Planner({A: 5})
    (again,) = await queue.claim(10, now=101.0, lease=LEASE, plan=plan)
    assert A in plan.offered[0]
    assert (again.job.job_id, again.lane, again.attempts) == ("a-0", A, 2)
    assert again.last_error == "HTTP 503"


async def test_a_replayed_dead_letter_returns_to_its_lane(queue: PostbackQueue) -> None:
    await fill(queue)
    (first,) = await queue.claim(1, now=10.0, lease=LEASE, plan=Planner({B: 1}))
    assert first.job.job_id == "b-0"
    await queue.dead("b-0", error="HTTP 404")
    assert await queue.lane_depths() == {A: 3, B: 1}
    dead = await queue.get("b-0")
    assert dead is not None and dead.state == DEAD
    replayed = await queue.replay("b-0", now=20.0)
    assert replayed is not None and (replayed.state, replayed.lane) == (PENDING, B)
    assert await queue.lane_depths() == {A: 3, B: 2}
    claimed = await queue.claim(10, now=30.0, lease=LEASE, plan=Planner({B: 5}))
    assert {s.job.job_id for s in claimed} == {"b-0", "b-1"}


async def test_cancelled_jobs_leave_their_lane(queue: PostbackQueue) -> None:
    await fill(queue)
    cancelled, _ = await queue.cancel(["b-0", "b-1", "a-2"], [], now=10.0)
    assert cancelled == 3
    assert await queue.lane_depths() == {A: 2}
    plan = Planner({A: 5, B: 5})
    claimed = await queue.claim(10, now=10.0, lease=LEASE, plan=plan)
    assert plan.offered == [{A}]
    assert {s.job.job_id for s in claimed} == {"a-0", "a-1"}
    # A lane emptied stays usable: a new job for it is queued and claimed.
    assert await queue.enqueue([job("b-2", "bnet")], now=11.0) == 1
    (again,) = await queue.claim(10, now=12.0, lease=LEASE, plan=Planner({B: 5}))
    assert (again.job.job_id, again.lane) == ("b-2", B)
