"""The dispatcher's gRPC front: jobs in, dead letters out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.core import telemetry
from lookback.core import validation as check
from lookback.core.errors import FailedPrecondition, NotFound, Violations
from lookback.postback.dispatcher import Dispatcher
from lookback.postback.lanes import CLOSED, HALF_OPEN, OPEN, Lane, split_lane
from lookback.postback.queue import JobState, PostbackQueue

CIRCUITS = {
    CLOSED: pb.CIRCUIT_STATE_CLOSED,
    OPEN: pb.CIRCUIT_STATE_OPEN,
    HALF_OPEN: pb.CIRCUIT_STATE_HALF_OPEN,
}

MAX_CANCEL = 100_000
"""Job ids, and source ids, a CancelPostbacks call may name (each)."""


def check_cancel(v: Violations, request: pb.CancelPostbacksRequest) -> None:
    """Bounded lists of ids. Job ids as ``EnqueuePostbacks`` takes them; a
    source id is shaped like one too: a rejection's (``<decision>/r<n>``)
    holds a ``/`` and an event's (``event:<app>:<event>``) may run past the
    200 characters of :func:`~lookback.core.validation.check_id`."""
    lists: tuple[tuple[str, Sequence[str]], ...] = (
        ("job_ids", request.job_ids),
        ("source_ids", request.source_ids),
    )
    for path, ids in lists:
        if check.check_count(v, ids, path, MAX_CANCEL):
            for i, value in enumerate(ids):
                check.check_job_id(v, value, f"{path}[{i}]")


@dataclass
class PostbackDispatcherServicer(pb_grpc.PostbackDispatcherServiceServicer):
    """Jobs in, dead letters out; delivery is the dispatcher's."""

    queue: PostbackQueue
    dispatcher: Dispatcher

    async def EnqueuePostbacks(
        self, request: pb.EnqueuePostbacksRequest, context: object
    ) -> pb.EnqueuePostbacksResponse:
        check.ensure(check.check_postback_jobs, request.jobs)
        if telemetry.enabled():  # delivery attempts join the trace that queued them
            traceparent = telemetry.current_traceparent()
            for job in request.jobs:
                if not job.traceparent:
                    job.traceparent = traceparent
        new = await self.queue.enqueue(request.jobs, time.time())
        self.dispatcher.wakeup.set()
        return pb.EnqueuePostbacksResponse(enqueued=new)

    async def GetPostbackJob(
        self, request: pb.GetPostbackJobRequest, context: object
    ) -> pb.GetPostbackJobResponse:
        check.ensure(check.check_job_id, request.job_id, "job_id")
        state = await self.queue.get(request.job_id)
        if state is None:
            raise NotFound(f"no postback job {request.job_id!r}")
        response = pb.GetPostbackJobResponse(
            job=state.job,
            state=state.state,  # type: ignore[arg-type]
            attempts=state.attempts,
            last_error=state.last_error,
        )
        if state.delivered_at is not None:
            response.delivered_at.FromNanoseconds(int(state.delivered_at * 1e9))
        return response

    async def ListDeadLetters(
        self, request: pb.ListDeadLettersRequest, context: object
    ) -> pb.ListDeadLettersResponse:
        check.ensure(check.check_page_size, request.page_size)
        dead = await self.queue.list_dead(request.page_size or 100)
        return pb.ListDeadLettersResponse(dead_letters=[job_status(s) for s in dead])

    async def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context: object
    ) -> pb.ReplayDeadLetterResponse:
        check.ensure(check.check_job_id, request.job_id, "job_id")
        state = await self.queue.replay(request.job_id, time.time())
        if state is None:
            raise NotFound(f"no postback job {request.job_id!r}")
        if state.state != pb.DELIVERY_STATE_PENDING:
            raise FailedPrecondition(f"job {request.job_id!r} is not a dead letter")
        self.dispatcher.wakeup.set()
        return pb.ReplayDeadLetterResponse(status=job_status(state))

    async def CancelPostbacks(
        self, request: pb.CancelPostbacksRequest, context: object
    ) -> pb.CancelPostbacksResponse:
        check.ensure(check_cancel, request)
        cancelled, forgotten = await self.queue.cancel(
            list(request.job_ids), list(request.source_ids), time.time()
        )
        return pb.CancelPostbacksResponse(cancelled=cancelled, forgotten=forgotten)

    async def ListPartnerLanes(
        self, request: pb.ListPartnerLanesRequest, context: object
    ) -> pb.ListPartnerLanesResponse:
        await self.dispatcher.measure()  # the queue's depths as of now
        now = time.time()
        lanes = sorted(self.dispatcher.lanes.values(), key=lambda x: split_lane(x.name))
        return pb.ListPartnerLanesResponse(
            lanes=[partner_lane(lane, self.dispatcher.share(lane, now), now) for lane in lanes]
        )


def partner_lane(lane: Lane, share: int, now: float) -> pb.PartnerLane:
    partner, host = split_lane(lane.name)
    state = lane.state(now)
    out = pb.PartnerLane(
        partner=partner,
        host=host,
        queued=lane.queued,
        in_flight=lane.in_flight,
        share=share,
        circuit=CIRCUITS[state],  # type: ignore[arg-type]
        consecutive_failures=lane.failures,
        paced_in_flight=lane.pace or 0.0,
        delivered=lane.delivered,
        retried=lane.retried,
        dead=lane.dead,
        last_error=lane.last_error,
    )
    if state == OPEN:
        out.circuit_probe_time.FromNanoseconds(int(lane.probe_at * 1e9))
    if lane.latency is not None:
        out.attempt_latency.FromNanoseconds(int(lane.latency * 1e9))
    for q, target in ((0.5, out.delay_p50), (0.99, out.delay_p99)):
        value = lane.delay_percentile(q)
        if value is not None:
            target.FromNanoseconds(int(value * 1e9))
    return out


def job_status(state: JobState) -> pb.JobStatus:
    return pb.JobStatus(
        job=state.job,
        state=state.state,  # type: ignore[arg-type]
        attempts=state.attempts,
        last_error=state.last_error,
    )
