"""In-memory implementations of the decision engine's interfaces, for fast
unit tests of the engine (and of anything built on it) without processes,
gRPC or a database. They keep the contracts the real backends keep: touches
found by match key or click id inside a time range, create-if-absent
install records, events stored once, postback jobs queued once per id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    explanation_pb2,
    install_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core import convert
from lookback.core.errors import Aborted, AlreadyExists, NotFound, Unavailable
from lookback.decider.apps import AppSettings
from lookback.decider.cache import LruCache
from lookback.decider.engine import ClaimsAnswer, DecisionEngine, InstallFacts
from lookback.decider.explain import REPLAYED_KINDS, ReplayFacts
from lookback.domain import devices, matching
from lookback.domain.model import SrnClaim


@dataclass
class MemoryStore:
    """Facts, records and apps (the engine's ``Facts``, ``Records`` and the
    settings' ``AppStore``)."""

    apps: dict[str, app_pb2.App] = field(default_factory=dict)
    touches: list[tuple[touch_pb2.Touch, frozenset[str]]] = field(default_factory=list)
    records: dict[tuple[str, str], store_pb.InstallRecord] = field(default_factory=dict)
    events: dict[tuple[str, str], decision_pb2.EventAttribution] = field(default_factory=dict)
    outbox: list[postback_pb2.PostbackJob] = field(default_factory=list)
    """Postback jobs recorded with the decisions (the outcomes log's part)."""
    decisions: dict[
        tuple[str, str], tuple[decision_pb2.Decision, explanation_pb2.Explanation | None]
    ] = field(default_factory=dict)
    """Recorded decisions by (app, decision id), with their explanations."""

    def add_touch(self, touch: touch_pb2.Touch) -> None:
        keys = devices.touch_match_keys(convert.device(touch.device), touch.ip)
        self.touches.append((touch, frozenset(keys)))

    def _touches(self, app_id: str, lookup: matching.Lookup) -> list[touch_pb2.Touch]:
        wanted = set(lookup.touch_keys)
        out = []
        for touch, keys in self.touches:
            if touch.app_id != app_id:
                continue
            at = convert.ts_to_micros(touch.engaged_at)
            if touch.click_id in lookup.click_ids or (
                keys & wanted and lookup.engaged_after <= at <= lookup.engaged_before
            ):
                out.append(touch)
        return out

    async def gather_install(
        self, app_id: str, install_id: str, lookup: matching.Lookup
    ) -> InstallFacts:
        existing = self.records.get((app_id, install_id))
        if existing is not None:
            return InstallFacts(existing)
        keys = set(lookup.device_keys)
        prior = sorted(
            (r for (a, _), r in self.records.items() if a == app_id and keys & set(r.match_keys)),
            key=lambda r: -convert.ts_to_micros(r.install.installed_at),
        )
        return InstallFacts(None, self._touches(app_id, lookup), prior)

    async def find_touches(self, app_id: str, lookup: matching.Lookup) -> Sequence[touch_pb2.Touch]:
        return self._touches(app_id, lookup)

    async def install_record(self, app_id: str, install_id: str) -> store_pb.InstallRecord:
        record = self.records.get((app_id, install_id))
        if record is None:
            raise NotFound(f"no install {install_id!r} for app {app_id!r}")
        return record

    async def create_install(
        self, record: store_pb.InstallRecord, postbacks: Sequence[postback_pb2.PostbackJob] = ()
    ) -> tuple[bool, store_pb.InstallRecord]:
        key = (record.install.app_id, record.install.install_id)
        if key in self.records:
            return False, self.records[key]
        self.records[key] = record
        self.outbox.extend(postbacks)
        d = record.decision
        self.decisions[(d.app_id, d.decision_id)] = (
            d,
            record.explanation if record.HasField("explanation") else None,
        )
        return True, record

    async def record_open(
        self,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
        explanation: explanation_pb2.Explanation | None = None,
    ) -> None:
        record = await self.install_record(open_.app_id, open_.install_id)
        record.latest_reengagement.CopyFrom(decision)
        self.outbox.extend(postbacks)
        self.decisions[(decision.app_id, decision.decision_id)] = (decision, explanation)

    # --- history (explanations and simulations) ------------------------------

    async def explained_decision(
        self, app_id: str, decision_id: str
    ) -> tuple[decision_pb2.Decision, explanation_pb2.Explanation | None]:
        found = self.decisions.get((app_id, decision_id))
        if found is None:
            raise NotFound(f"no decision {decision_id!r} for app {app_id!r}")
        return found

    async def list_installs(
        self, app_id: str, start: int, end: int, page_size: int, page_token: str
    ) -> tuple[Sequence[decision_pb2.Decision], str]:
        """Newest first; the token is the index of the next one."""
        chosen = sorted(
            (
                d
                for (a, _), (d, _) in self.decisions.items()
                if a == app_id
                and d.kind in REPLAYED_KINDS
                and start <= convert.ts_to_micros(d.decided_at) < end
            ),
            key=lambda d: (convert.ts_to_micros(d.decided_at), d.decision_id),
            reverse=True,
        )
        first = int(page_token or 0)
        page = chosen[first : first + page_size]
        more = first + page_size < len(chosen)
        return page, str(first + page_size) if more else ""

    async def replay_facts(
        self, app_id: str, decisions: Sequence[decision_pb2.Decision]
    ) -> Sequence[ReplayFacts]:
        out = []
        for d in decisions:
            record = self.records.get((app_id, d.install_id))
            if record is None or record.decision.decision_id != d.decision_id:
                out.append(ReplayFacts(None))
                continue
            wanted = set(convert.stored_touch_ids(record.explanation))
            touches = [t for t, _ in self.touches if t.app_id == app_id and t.click_id in wanted]
            out.append(ReplayFacts(record, touches))
        return out

    async def put_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        key = (event.app_id, event.event_id)
        if key in self.events:
            stored = decision_pb2.EventAttribution()
            stored.CopyFrom(self.events[key])
            return False, stored
        self.events[key] = attribution
        self.outbox.extend(postbacks)
        return True, attribution

    async def create_app(self, app: app_pb2.App) -> app_pb2.App:
        if app.app_id in self.apps:
            raise AlreadyExists(f"app {app.app_id!r} exists already")
        self.apps[app.app_id] = app
        return app

    async def get_app(self, app_id: str) -> app_pb2.App:
        if app_id not in self.apps:
            raise NotFound(f"app {app_id!r} is not registered")
        return self.apps[app_id]

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> app_pb2.App:
        if (await self.get_app(app.app_id)).version != expected_version:
            raise Aborted(f"app {app.app_id!r} changed since version {expected_version}")
        self.apps[app.app_id] = app
        return app


@dataclass
class FixedClaims:
    """SRN answers fixed in advance: ``claims`` for every device asked about,
    and ``unanswered`` networks that never answer in time."""

    claims: list[SrnClaim] = field(default_factory=list)
    unanswered: tuple[str, ...] = ()
    asked: int = 0

    async def query(self, install: install_pb2.Install, networks: Sequence[str]) -> ClaimsAnswer:
        self.asked += 1
        answered = [c for c in self.claims if c.media_source in networks]
        return ClaimsAnswer(answered, tuple(n for n in self.unanswered if n in networks))


@dataclass
class MemoryPostbacks:
    """Queued postback jobs by id (a job id queued twice is kept once)."""

    jobs: dict[str, postback_pb2.PostbackJob] = field(default_factory=dict)
    handed: int = 0
    """Jobs handed over in all, repeats included."""
    down: bool = False
    """While True every hand-over fails (the dispatcher or its queue is down)."""

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob]) -> None:
        if self.down:
            raise Unavailable("the postback dispatcher is down")
        for job in jobs:
            self.handed += 1
            self.jobs.setdefault(job.job_id, job)


@dataclass
class MemoryEngine:
    """A decision engine over in-memory parts, and the parts to look at."""

    engine: DecisionEngine
    store: MemoryStore
    claims: FixedClaims
    postbacks: MemoryPostbacks

    def replica(self) -> DecisionEngine:
        """Another engine over the same store (a second decider replica,
        with caches of its own)."""
        return memory_engine(self.store, self.claims, self.postbacks).engine


def memory_engine(
    store: MemoryStore | None = None,
    claims: FixedClaims | None = None,
    postbacks: MemoryPostbacks | None = None,
) -> MemoryEngine:
    store = store or MemoryStore()
    claims = claims or FixedClaims()
    postbacks = postbacks or MemoryPostbacks()
    engine = DecisionEngine(
        apps=AppSettings(store, LruCache(100, 60.0)),
        facts=store,
        claims=claims,
        records=store,
        postbacks=postbacks,
    )
    return MemoryEngine(engine, store, claims, postbacks)
