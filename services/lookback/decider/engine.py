"""The decision engine: install, open and event decisions around the pure rules.

It knows nothing of gRPC or of any database. It reads facts, SRN claims and
app settings through the small interfaces below, records decisions and hands
postbacks over through two more; the servicers only translate requests, and
``backends`` implements the interfaces over the other services' stubs. Unit
tests run it with in-memory implementations (``lookback.testing.engine``).

For an install the engine, in order:

1. reads the app's settings (an LRU cache in :class:`~lookback.decider.apps.AppSettings`);
2. gathers the facts (the install id's existing record, candidate touches,
   prior installs of the device) while it asks the app's SRNs;
3. applies the rules (:mod:`lookback.domain.rules`);
4. records the decision with create-if-absent, so concurrent reports of the
   same install id, through any replica, keep exactly one decision; every
   caller but the first gets it back with kind DUPLICATE;
5. hands a counted decision's postbacks over (job ids derived from the
   decision, so handing them over twice sends once).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    decision_pb2,
    explanation_pb2,
    install_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core import convert
from lookback.core.clock import Clock, now_micros
from lookback.core.errors import LookbackError
from lookback.decider.apps import AppSettings, CachedApp
from lookback.decider.cache import LruCache, SingleFlight
from lookback.domain import matching, rules
from lookback.domain.model import Kind, Outcome, PriorInstall, SrnClaim
from lookback.domain.postbacks import Event, for_decision, for_event

log = logging.getLogger("lookback.decider")

# --- what the engine needs ----------------------------------------------------


@dataclass(frozen=True)
class InstallFacts:
    """What the store knows for one install decision."""

    existing: store_pb.InstallRecord | None
    """The install id's record when it was decided before."""
    touches: Sequence[touch_pb2.Touch] = ()
    prior: Sequence[store_pb.InstallRecord] = ()
    """Prior install records of the device, newest first."""


@dataclass(frozen=True)
class ClaimsAnswer:
    """What the app's SRNs answered in time."""

    claims: Sequence[SrnClaim] = ()
    unanswered: Sequence[str] = ()


class Facts(Protocol):
    """Reads the stored facts a decision needs."""

    async def gather_install(
        self, app_id: str, install_id: str, lookup: matching.Lookup
    ) -> InstallFacts: ...

    async def find_touches(
        self, app_id: str, lookup: matching.Lookup
    ) -> Sequence[touch_pb2.Touch]: ...

    async def install_record(self, app_id: str, install_id: str) -> store_pb.InstallRecord:
        """The install's record; raises :class:`~lookback.core.errors.NotFound`."""
        ...


class Claims(Protocol):
    """Asks self-reporting networks about a device, under a deadline."""

    async def query(
        self, install: install_pb2.Install, networks: Sequence[str]
    ) -> ClaimsAnswer: ...


class Records(Protocol):
    """Where decisions are recorded (durably before the call returns)."""

    async def create_install(
        self, record: store_pb.InstallRecord, postbacks: Sequence[postback_pb2.PostbackJob] = ()
    ) -> tuple[bool, store_pb.InstallRecord]:
        """Create unless the install id exists: (created, the stored record).
        ``postbacks`` are recorded with the decision, in the same write (the
        outcomes log is the outbox)."""
        ...

    async def record_open(
        self,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
        explanation: explanation_pb2.Explanation | None = None,
    ) -> None: ...

    async def put_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        """Store unless the event id exists: (created, the stored attribution)."""
        ...


class Postbacks(Protocol):
    """Where postback jobs go (queued durably; a job id queued twice sends once)."""

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob]) -> None: ...


# --- the engine -----------------------------------------------------------------


def as_duplicate(decision: decision_pb2.Decision) -> decision_pb2.Decision:
    dup = decision_pb2.Decision()
    dup.CopyFrom(decision)
    dup.kind = decision_pb2.DECISION_KIND_DUPLICATE
    dup.counted = False
    return dup


def srn_view(install: install_pb2.Install, matched: matching.Matching) -> install_pb2.Install:
    """The install as self-reporting networks may see it: without the
    identifiers the privacy rules keep from matching (an IDFA the user did
    not authorise is never sent anywhere)."""
    excluded = matched.excluded_ids
    if not excluded:
        return install
    view = install_pb2.Install()
    view.CopyFrom(install)
    for id_type in excluded:
        view.device.ClearField(id_type)  # type: ignore[arg-type]
    return view


def prior_install(r: store_pb.InstallRecord) -> PriorInstall:
    return PriorInstall(
        install_id=r.install.install_id,
        installed_at=convert.ts_to_micros(r.install.installed_at),
        attributed=convert.prior_decision(r.attributed_decision),
        latest_reengagement=(
            convert.prior_decision(r.latest_reengagement)
            if r.HasField("latest_reengagement")
            else None
        ),
    )


def _new_id() -> str:
    """A decision id: 32 hex digits, the first 12 the time in milliseconds
    and the other 20 random (80 bits), like a UUIDv7: ids made one after the
    other sort together, so the store's decision index takes them at its end
    (a random id would dirty a random page of it per decision)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


@dataclass
class DecisionEngine:
    """Install, open and event decisions."""

    apps: AppSettings
    facts: Facts
    claims: Claims
    records: Records
    postbacks: Postbacks
    install_cache: LruCache[tuple[str, str], decision_pb2.Decision] = field(
        default_factory=lambda: LruCache(100_000, 600.0)
    )
    clock: Clock = now_micros
    new_id: Callable[[], str] = _new_id
    explain: bool = True
    """Record each decision's explanation with it."""
    _flights: SingleFlight[decision_pb2.Decision] = field(default_factory=SingleFlight)

    # --- installs ---------------------------------------------------------------

    async def decide_install(self, install: install_pb2.Install) -> decision_pb2.Decision:
        key = (install.app_id, install.install_id)
        cached = self.install_cache.get(key)
        if cached is not None:
            return as_duplicate(cached)
        decision, ran = await self._flights.run(key, lambda: self._decide_install(install))
        return decision if ran else as_duplicate(decision)

    async def _decide_install(self, install: install_pb2.Install) -> decision_pb2.Decision:
        started = time.perf_counter_ns()
        app = await self.apps.get(install.app_id)
        facts_install = convert.install(install)
        matched = matching.matching_for_install(facts_install, app.settings)
        lookup = matching.install_lookup(facts_install, matched)
        gather = self.facts.gather_install(install.app_id, install.install_id, lookup)
        if app.settings.srn_networks:
            facts, answer = await asyncio.gather(
                gather, self.claims.query(srn_view(install, matched), app.settings.srn_networks)
            )
        else:
            facts, answer = await gather, ClaimsAnswer()
        if facts.existing is not None:
            return await self._known(facts.existing.decision, app)

        priors = [prior_install(r) for r in facts.prior]
        outcome = rules.decide_install(
            facts_install,
            app.settings,
            [convert.touch(t) for t in facts.touches],
            answer.claims,
            priors,
            matched,
            self.explain,
        )
        decision = self._decision(
            outcome, install, facts_install.installed_at, started, tuple(answer.unanswered)
        )
        record = store_pb.InstallRecord(
            install=install, match_keys=lookup.device_keys, decision=decision
        )
        if self.explain:
            record.explanation.CopyFrom(
                convert.explanation(outcome, decision.decision_id, app.app.version, priors)
            )
        if outcome.kind is Kind.REINSTALL:
            holder = next(
                r
                for r in facts.prior
                if r.attributed_decision.decision_id == outcome.original_decision_id
            )
            record.attributed_decision.CopyFrom(holder.attributed_decision)
        else:
            record.attributed_decision.CopyFrom(decision)
        jobs = self._jobs(decision, app)
        created, stored = await self.records.create_install(record, jobs)
        if not created:
            return await self._known(stored.decision, app)
        self.install_cache.put((install.app_id, install.install_id), decision)
        await self._hand_over(jobs)
        return decision

    def _decision(
        self,
        outcome: Outcome,
        subject: install_pb2.Install | install_pb2.Open,
        at: int,
        started_ns: int,
        unanswered_srns: tuple[str, ...] = (),
    ) -> decision_pb2.Decision:
        """The decision message for an outcome about ``subject``, decided now."""
        return convert.decision(
            outcome,
            decision_id=self.new_id(),
            app_id=subject.app_id,
            install_id=subject.install_id,
            event_time=at,
            decided_at=self.clock(),
            latency=(time.perf_counter_ns() - started_ns) // 1000,
            unanswered_srns=unanswered_srns,
        )

    async def _known(
        self, decision: decision_pb2.Decision, app: CachedApp
    ) -> decision_pb2.Decision:
        """An install id decided before: hand its postbacks over again (idempotent,
        in case the first caller failed in between) and answer as a duplicate."""
        self.install_cache.put((decision.app_id, decision.install_id), decision)
        await self._hand_over(self._jobs(decision, app))
        return as_duplicate(decision)

    def _jobs(
        self, decision: decision_pb2.Decision, app: CachedApp
    ) -> list[postback_pb2.PostbackJob]:
        """The postback jobs a decision triggers (rendered before it is
        recorded, so that they are recorded with it)."""
        winner_has_one = decision.counted and decision.media_source in app.settings.postbacks
        if not winner_has_one and not decision.rejected:
            return []  # nothing to send (checked first: this runs for every decision)
        rendered = for_decision(app.settings, convert.recorded_decision(decision))
        created = convert.ts_to_micros(decision.decided_at)
        return [convert.postback_job(p, decision.app_id, created) for p in rendered]

    async def _hand_over(self, jobs: Sequence[postback_pb2.PostbackJob]) -> None:
        """Queue jobs with the dispatcher at once (the fast path). A failed
        hand-over is not the caller's failure: the decision is recorded with
        its jobs (the outcomes log is the outbox), and the dispatcher's relay
        queues them from there."""
        if not jobs:
            return
        try:
            await self.postbacks.enqueue(jobs)
        except LookbackError as exc:
            log.warning(
                "postback hand-over failed (%s); %d job(s) left to the relay",
                exc.code.name,
                len(jobs),
            )

    # --- opens ------------------------------------------------------------------

    async def decide_open(self, open_: install_pb2.Open) -> decision_pb2.Decision:
        started = time.perf_counter_ns()
        app = await self.apps.get(open_.app_id)
        record = await self.facts.install_record(open_.app_id, open_.install_id)
        facts_open = convert.open_(open_)
        touches = await self.facts.find_touches(open_.app_id, matching.open_lookup(facts_open))
        outcome = rules.decide_open(
            facts_open,
            app.settings,
            [convert.touch(t) for t in touches],
            prior_install(record),
            self.explain,
        )
        decision = self._decision(outcome, open_, facts_open.opened_at, started)
        if outcome.kind is Kind.REENGAGEMENT:
            jobs = self._jobs(decision, app)
            explanation = (
                convert.explanation(outcome, decision.decision_id, app.app.version)
                if self.explain
                else None
            )
            await self.records.record_open(open_, decision, jobs, explanation)
            await self._hand_over(jobs)
        return decision

    # --- events -----------------------------------------------------------------

    async def attribute_event(self, event: install_pb2.InAppEvent) -> decision_pb2.EventAttribution:
        app = await self.apps.get(event.app_id)
        record = await self.facts.install_record(event.app_id, event.install_id)
        occurred_at = convert.ts_to_micros(event.occurred_at)
        result = rules.attribute_event(occurred_at, app.settings, prior_install(record))
        attribution = decision_pb2.EventAttribution(
            event_id=event.event_id,
            media_source=result.media_source,
            campaign=result.campaign,
            reengagement_media_source=result.reengagement_media_source,
            decision_id=result.decision_id,
        )
        facts_event = Event(
            app_id=event.app_id,
            install_id=event.install_id,
            event_id=event.event_id,
            name=event.name,
            revenue=event.revenue,
            currency=event.currency,
            occurred_at=occurred_at,
        )
        attributed = convert.recorded_decision(record.attributed_decision)

        def jobs_for(a: decision_pb2.EventAttribution) -> list[postback_pb2.PostbackJob]:
            rendered = for_event(
                app.settings, facts_event, attributed, a.media_source, a.reengagement_media_source
            )
            return [convert.postback_job(p, event.app_id, occurred_at) for p in rendered]

        jobs = jobs_for(attribution)
        created, stored = await self.records.put_event(event, attribution, jobs)
        if not created:
            attribution = stored
            attribution.duplicate = True
            jobs = jobs_for(attribution)  # the stored attribution's (same job ids)
        await self._hand_over(jobs)
        return attribution
