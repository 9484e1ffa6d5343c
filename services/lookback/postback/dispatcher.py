"""Delivery: due jobs claimed and sent over HTTP, at least once, with
retries, signing and dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import logging
import random
import time
from dataclasses import dataclass

import aiohttp
import yarl
from opentelemetry.trace import Span

from lookback.api.types.v1 import postback_pb2
from lookback.core import outbound, redact, telemetry
from lookback.core.config import ConfigError
from lookback.core.signing import bound_to, secret_for
from lookback.core.tasks import cancel_and_wait
from lookback.postback import metrics
from lookback.postback.config import PostbackConfig
from lookback.postback.lanes import (
    RESERVE_FRACTION,
    Lane,
    Protection,
    bounds,
    lane_of,
    share_out,
)
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
LANE_IDLE = 3600.0
"""A lane with nothing queued or in flight is forgotten after this many seconds."""


@dataclass
class _Attempt:
    """What an attempt's HTTP exchange ended with, for its lane."""

    status: int | None = None
    duration: float = 0.0
    retry_after: float | None = None
    sent: bool = False
    """A request went out (else the job was refused before sending)."""


def partner_limits(config: PostbackConfig) -> dict[str, int]:
    """``max_in_flight_by_partner`` as numbers, having checked the delivery
    settings (a bad one fails at start, :class:`ConfigError`)."""
    checks = (
        ("workers", config.workers >= 1, "at least 1"),
        ("max_in_flight_per_partner", 0 <= config.max_in_flight_per_partner <= 1000, "0 to 1000"),
        ("slow_attempt", config.slow_attempt > 0, "more than 0"),
        ("circuit_failures", config.circuit_failures >= 1, "at least 1"),
        ("circuit_cooldown", config.circuit_cooldown > 0, "more than 0"),
        (
            "circuit_max_cooldown",
            config.circuit_max_cooldown >= config.circuit_cooldown,
            "at least circuit_cooldown",
        ),
    )
    for name, ok, want in checks:
        if not ok:
            raise ConfigError(f"{name} must be {want}")
    out: dict[str, int] = {}
    for partner, value in config.max_in_flight_by_partner.items():
        try:
            n = int(value)
        except ValueError:
            n = -1
        if not 0 <= n <= 1000:
            raise ConfigError(
                f"max_in_flight_by_partner: {partner}={value!r} is not a number from 0 to 1000"
            )
        out[partner] = n
    return out


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
        self.lanes: dict[str, Lane] = {}
        """Each partner lane's state on this dispatcher (lookback.postback.lanes)."""
        self.protection = Protection(
            slow_attempt=config.slow_attempt,
            failures=config.circuit_failures,
            cooldown=config.circuit_cooldown,
            max_cooldown=config.circuit_max_cooldown,
        )
        self.partner_limits = partner_limits(config)
        self._turn = 0
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
        workers = self.config.workers
        reserve = workers // RESERVE_FRACTION
        last_claim = 0.0
        while not self._stopping:
            busy = len(self._inflight)
            free = max(0, workers - busy)
            spare = max(0, min(reserve, workers + reserve - busy))
            jobs: list[JobState] = []
            now = time.time()
            # Claim in batches (a quarter of the workers at least, unless
            # idle): a claim costs round trips to the queue whatever its
            # size. At least once a poll interval, though, while the reserve
            # has room: a partner with nothing in flight may be waiting.
            if (
                free >= max(1, workers // 4)
                or not self._inflight
                or (spare and now - last_claim >= self.config.poll_interval)
            ):
                last_claim = now
                # The plan sees a snapshot: on SQLite it runs on another thread.
                plan = functools.partial(
                    share_out,
                    free,
                    workers,
                    views={name: lane.view(now) for name, lane in self.lanes.items()},
                    turn=self._turn,
                    spare=spare,
                )
                self._turn += 1
                try:
                    jobs = await self.queue.claim(
                        free + spare, now, self.config.lease_seconds, plan
                    )
                except Exception:
                    log.exception("claiming postbacks failed")
            for job in jobs:
                probe = self._lane(job.lane, job.job).started(time.time())
                task = asyncio.create_task(self._deliver(job, probe))
                self._inflight.add(task)
                task.add_done_callback(self._done)
            if not jobs and not self._stopping:
                self.wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), self.config.poll_interval)

    def _lane(self, name: str, job: postback_pb2.PostbackJob | None = None) -> Lane:
        lane = self.lanes.get(name)
        if lane is None:
            lane = self.lanes[name] = Lane(name, self.protection, last_active=time.time())
        if job is not None:  # the newest job's setting, else the dispatcher's
            lane.cap = job.max_in_flight or self.partner_limits.get(
                job.partner, self.config.max_in_flight_per_partner
            )
        return lane

    async def measure(self) -> None:
        """Measure the queue's depth, overall and by lane."""
        by_lane = await self.queue.lane_depths()
        self.depth = sum(by_lane.values())
        now = time.time()
        for name in by_lane:
            self._lane(name)
        for name, lane in list(self.lanes.items()):
            lane.queued = by_lane.get(name, 0)
            if not lane.queued and not lane.in_flight and now - lane.last_active > LANE_IDLE:
                del self.lanes[name]

    async def _measure_depth(self) -> None:
        while not self._stopping:
            try:
                await self.measure()
            except Exception as exc:
                log.debug("measuring the queue depth failed: %s", exc)
            await asyncio.sleep(DEPTH_INTERVAL)

    def share(self, lane: Lane, now: float) -> int:
        """The most deliveries ``lane`` may hold now (its ceiling)."""
        busy = sum(1 for x in self.lanes.values() if x.in_flight or x.queued)
        limit = lane.limit(now)
        if limit == 0:
            return 0
        return bounds(self.config.workers, max(1, busy), lane.view(now))[1]

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self.wakeup.set()

    async def _deliver(self, state: JobState, probe: bool = False) -> None:
        lane = self._lane(state.lane)
        attempt = _Attempt()
        try:
            await self._traced(state, attempt)
        finally:
            now = time.time()
            if attempt.sent:
                in_flight = lane.in_flight
                lane.finished(
                    now,
                    attempt.duration,
                    status=attempt.status,
                    retry_after=attempt.retry_after,
                    in_flight_then=in_flight,
                    probe=probe,
                )
            else:
                lane.abandoned(probe)

    async def _traced(self, state: JobState, attempt: _Attempt) -> None:
        if not telemetry.enabled():
            return await self._attempt(state, None, attempt)
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
            return await self._attempt(state, span, attempt)

    async def _attempt(self, state: JobState, span: Span | None, attempt: _Attempt) -> None:
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
            started = time.monotonic()
            attempt.sent = True
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
                # The host resolved to addresses none of which may be reached
                # (nothing was sent: not the endpoint's failure).
                attempt.sent = False
                return await self._dead(job, span, f"{outbound.REASON}: {exc}")
            except Exception as exc:
                # Network errors, timeouts, and what the HTTP client refuses to
                # send (a malformed URL or header) alike: the attempt is judged
                # (a retry, or a dead letter once out of attempts), never lost
                # in a loop of leases running out.
                error = f"{type(exc).__name__}: {exc}"
            attempt.status = status
            attempt.duration = time.monotonic() - started
            attempt.retry_after = retry_after
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
        self._count(state, verdict.outcome, what)
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

    def _count(self, state: JobState, outcome: str, what: str) -> None:
        """Count an attempt's outcome for its lane (and the delay, if delivered)."""
        lane = self._lane(state.lane)
        if outcome == "delivered":
            lane.delivered += 1
            job = state.job
            created = (
                job.create_time.ToNanoseconds() / 1e9
                if job.HasField("create_time")
                else state.created_at
            )
            delay = max(0.0, time.time() - created)
            lane.delays.append(delay)
            metrics.delay.record(delay, {"partner": job.partner})
            return
        if outcome == "retry":
            lane.retried += 1
        else:
            lane.dead += 1
        # What failed, never the URL or what the partner answered.
        lane.last_error = what.split(":", 1)[0][:100]

    async def _dead(self, job: postback_pb2.PostbackJob, span: Span | None, reason: str) -> None:
        """Straight to the dead letters, no attempt made, no retry."""
        log.warning("postback %s dead: %s", job.job_id, reason)
        metrics.outcomes.add(1, {"partner": job.partner, "outcome": "dead"})
        self._lane(lane_of(job.partner, job.url)).dead += 1
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
