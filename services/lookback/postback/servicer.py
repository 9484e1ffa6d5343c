"""The dispatcher's gRPC front: jobs in, dead letters out."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.core import telemetry
from lookback.core.errors import FailedPrecondition, NotFound, Violations
from lookback.postback.dispatcher import Dispatcher
from lookback.postback.queue import JobState, PostbackQueue

JOB_ID = re.compile(r"[!-~]{1,600}")
"""A job id is sent as a header (``Idempotency-Key``): printable ASCII only."""


@dataclass
class PostbackDispatcherServicer(pb_grpc.PostbackDispatcherServiceServicer):
    """Jobs in, dead letters out; delivery is the dispatcher's."""

    queue: PostbackQueue
    dispatcher: Dispatcher

    async def EnqueuePostbacks(
        self, request: pb.EnqueuePostbacksRequest, context: object
    ) -> pb.EnqueuePostbacksResponse:
        v = Violations()
        for i, job in enumerate(request.jobs):
            if not JOB_ID.fullmatch(job.job_id):
                v.add(f"jobs[{i}].job_id", "must be 1 to 600 printable ASCII characters, no spaces")
            if not job.url.startswith(("http://", "https://")):
                v.add(f"jobs[{i}].url", "must be an http:// or https:// URL")
        v.raise_if_any()
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
        if not 0 <= request.page_size <= 1000:
            v = Violations()
            v.add("page_size", "must be 0 to 1000")
            v.raise_if_any()
        dead = await self.queue.list_dead(request.page_size or 100)
        return pb.ListDeadLettersResponse(dead_letters=[job_status(s) for s in dead])

    async def ReplayDeadLetter(
        self, request: pb.ReplayDeadLetterRequest, context: object
    ) -> pb.ReplayDeadLetterResponse:
        state = await self.queue.replay(request.job_id, time.time())
        if state is None:
            raise NotFound(f"no postback job {request.job_id!r}")
        if state.state != pb.DELIVERY_STATE_PENDING:
            raise FailedPrecondition(f"job {request.job_id!r} is not a dead letter")
        self.dispatcher.wakeup.set()
        return pb.ReplayDeadLetterResponse(status=job_status(state))


def job_status(state: JobState) -> pb.JobStatus:
    return pb.JobStatus(
        job=state.job,
        state=state.state,  # type: ignore[arg-type]
        attempts=state.attempts,
        last_error=state.last_error,
    )
