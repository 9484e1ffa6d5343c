"""Delivery: due jobs claimed and sent over HTTP, at least once, with
retries, signing and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time

import aiohttp
import yarl
from opentelemetry.trace import Span

from lookback.api.types.v1 import postback_pb2
from lookback.core import outbound, redact, telemetry
from lookback.core.signing import bound_to, secret_for
from lookback.core.tasks import cancel_and_wait
from lookback.postback import metrics
from lookback.postback.config import PostbackConfig
from lookback.postback.policy import (
    RESPONSE_EXCERPT,
    RetryPolicy,
    judge,
    retry_after_seconds,
)
from lookback.postback.queue import CANCELLED, DEAD, DELIVERED, JobState, PostbackQueue

log = logging.getLogger("lookback.postback")

USER_AGENT = "Lookback-Postback/0.1"


def signature(key: str, timestamp: str, method: str, target: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 with ``key`` over the bytes
    ``{timestamp}.{method}.{target}.`` followed by the body, where ``target``
    is the request-target exactly as on the request line (path and query,
    escapes untouched) and ``body`` the bytes sent (none for GET)."""
    message = f"{timestamp}.{method}.{target}.".encode() + body
    return "sha256=" + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


DEPTH_INTERVAL = 5.0
"""Seconds between measurements of the queue depth (a gauge)."""


class Dispatcher:
    """Claims due jobs and delivers them, at least once, with retries."""

    def __init__(self, config: PostbackConfig, queue: PostbackQueue) -> None:
        self.config = config
        self.queue = queue
        self.policy = RetryPolicy(
            max_attempts=config.max_attempts, max_age=config.max_age, base_delay=config.base_delay
        )
        self.rng = random.Random()
        self.outbound = outbound.OutboundPolicy(config.outbound_allow_cidrs)
        self.wakeup = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._outcomes = asyncio.Condition()
        self._stopping = False
        self._gauge: asyncio.Task[None] | None = None
        self.depth = 0
        """Jobs waiting (due, in flight or delayed), as last measured."""
        metrics.watch(self)

    async def start(self) -> None:
        self.session = outbound.client_session(
            self.outbound, limit=self.config.workers, headers={"User-Agent": USER_AGENT}
        )
        self._task = asyncio.create_task(self._loop())
        self._gauge = asyncio.create_task(self._measure_depth())

    async def stop(self) -> None:
        # Stop by flag first: a cancellation alone can be swallowed (by
        # ``asyncio.wait_for`` on Python 3.11, or inside the Redis client when
        # it lands as a reply arrives), and the loop would then run for ever.
        self._stopping = True
        self.wakeup.set()
        await cancel_and_wait(self._gauge)
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.config.poll_interval + 1)
            await cancel_and_wait(self._task)
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=self.config.request_timeout)
        if self.session is not None:
            await self.session.close()

    async def _loop(self) -> None:
        while not self._stopping:
            free = self.config.workers - len(self._inflight)
            jobs: list[JobState] = []
            # Claim in batches (a quarter of the workers at least, unless idle):
            # a claim costs round trips to the queue whatever its size.
            if free >= max(1, self.config.workers // 4) or not self._inflight:
                try:
                    jobs = await self.queue.claim(free, time.time(), self.config.lease_seconds)
                except Exception:
                    log.exception("claiming postbacks failed")
            for job in jobs:
                task = asyncio.create_task(self._deliver(job))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if not jobs and not self._stopping:
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.config.poll_interval)

    async def _measure_depth(self) -> None:
        while not self._stopping:
            try:
                self.depth = await self.queue.depth()
            except Exception as exc:
                log.debug("measuring the queue depth failed: %s", exc)
            await asyncio.sleep(DEPTH_INTERVAL)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self.wakeup.set()

    async def _deliver(self, state: JobState) -> None:
        if not telemetry.enabled():
            return await self._attempt(state, None)
        attributes = {
            "lookback.postback.job_id": state.job.job_id,
            "lookback.postback.partner": state.job.partner,
            "lookback.postback.attempt": state.attempts,
            # Never the query: the macros put click and device ids there.
            "url.full": redact.url(state.job.url),
        }
        with telemetry.http_client_span(
            f"postback {state.job.partner}", attributes, parent=state.job.traceparent
        ) as span:
            return await self._attempt(state, span)

    async def _attempt(self, state: JobState, span: Span | None) -> None:
        job = state.job
        assert self.session is not None
        method = "POST" if job.method == postback_pb2.HTTP_METHOD_POST else "GET"
        payload = job.body.encode() if method == "POST" else b""
        headers = {"Idempotency-Key": job.job_id}
        status: int | None = None
        error = ""
        retry_after: float | None = None
        body = ""
        try:
            # Sent as written (``%3A`` stays ``%3A``), so the signature is over
            # exactly the request-target the partner receives.
            url = outbound.wire_url(job.url)
        except (ValueError, UnicodeError) as exc:
            url = None
            error = f"{type(exc).__name__}: {exc}"
        if url is not None:
            refused = self._refused(url)
            if refused:
                return await self._dead(job, span, refused)
            if job.signing_secret:
                key = secret_for(self.config.signing_secrets, job.partner, job.signing_secret)
                if key is None:
                    return await self._dead(job, span, self._secret_problem(job))
                stamp = str(int(time.time()))
                headers["X-Lookback-Timestamp"] = stamp
                headers["X-Lookback-Signature"] = signature(
                    key, stamp, method, url.raw_path_qs, payload
                )
            try:
                async with self.session.request(
                    method,
                    url,
                    data=payload if method == "POST" else None,
                    headers=headers,
                    allow_redirects=False,  # a 3xx is judged like any other answer
                    timeout=aiohttp.ClientTimeout(total=self.config.request_timeout),
                ) as response:
                    status = response.status
                    retry_after = retry_after_seconds(
                        response.headers.get("Retry-After"), time.time()
                    )
                    raw = await outbound.read_bounded(response, RESPONSE_EXCERPT * 4, truncate=True)
                    body = raw.decode(errors="replace").strip()
            except outbound.DestinationNotAllowed as exc:
                # The host resolved to addresses none of which may be reached.
                return await self._dead(job, span, f"{outbound.REASON}: {exc}")
            except Exception as exc:
                # Network errors, timeouts, and what the HTTP client refuses to
                # send (a malformed URL or header) alike: the attempt is judged
                # (a retry, or a dead letter once out of attempts), never lost
                # in a loop of leases running out.
                error = f"{type(exc).__name__}: {exc}"
        if span is not None:
            span.set_attribute("http.response.status_code", status or 0)
        verdict = judge(
            self.policy,
            attempt=state.attempts,
            age=time.time() - state.created_at,
            status=status,
            error=error,
            retry_after=retry_after,
            response=body,
            rng=self.rng,
        )
        metrics.outcomes.add(1, {"partner": job.partner, "outcome": verdict.outcome})
        # The reason is kept with the job (for the dead-letter API); the log
        # and the span say what failed, not what the partner answered.
        what = f"HTTP {status}" if status is not None else redact.text(error)
        if span is not None:
            span.set_attribute("lookback.postback.outcome", verdict.outcome)
            if verdict.outcome != "delivered":
                telemetry.record_error(span, verdict.outcome, what)
        try:
            if verdict.outcome == "delivered":
                await self.queue.delivered(job.job_id, time.time())
            elif verdict.outcome == "retry":
                await self.queue.retry(job.job_id, time.time() + verdict.delay, verdict.reason)
            else:
                log.warning(
                    "postback %s to %s dead after %d attempts: %s",
                    job.job_id,
                    redact.url(job.url),
                    state.attempts,
                    what,
                )
                await self.queue.dead(job.job_id, verdict.reason)
        except Exception:
            # The lease runs out and the job is claimed again: at least once.
            log.exception("recording the outcome of postback %s failed", job.job_id)
        async with self._outcomes:
            self._outcomes.notify_all()

    def _refused(self, url: yarl.URL) -> str:
        """Why ``url`` may not be sent (its scheme, or an IP literal that is
        not allowed: the resolver never sees those); empty if it may."""
        try:
            self.outbound.check_target(url)
        except outbound.DestinationNotAllowed as exc:
            return f"{outbound.REASON}: {exc}"
        return ""

    def _secret_problem(self, job: postback_pb2.PostbackJob) -> str:
        if not bound_to(job.partner, job.signing_secret):
            return (
                f"signing secret {job.signing_secret!r} is not bound to partner"
                f" {job.partner!r} (its name must be the partner's or start with"
                f" {job.partner + '.'!r})"
            )
        return f"unknown signing secret {job.signing_secret!r}"

    async def _dead(self, job: postback_pb2.PostbackJob, span: Span | None, reason: str) -> None:
        """Straight to the dead letters, no attempt made, no retry."""
        log.warning("postback %s dead: %s", job.job_id, reason)
        metrics.outcomes.add(1, {"partner": job.partner, "outcome": "dead"})
        if span is not None:
            span.set_attribute("lookback.postback.outcome", "dead")
            telemetry.record_error(span, "dead", reason)
        try:
            await self.queue.dead(job.job_id, reason)
        except Exception:
            log.exception("recording the outcome of postback %s failed", job.job_id)
        async with self._outcomes:
            self._outcomes.notify_all()

    async def wait_final(self, job_id: str, timeout: float) -> JobState:
        """Wait until ``job_id`` is delivered, dead or cancelled (for tools and tests)."""

        async def final() -> JobState:
            while True:
                async with self._outcomes:
                    state = await self.queue.get(job_id)
                    if state is not None and state.state in (DELIVERED, DEAD, CANCELLED):
                        return state
                    await self._outcomes.wait()

        return await asyncio.wait_for(final(), timeout)
