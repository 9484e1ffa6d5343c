"""Explanations and simulations (OUTCOMES.md sections 4 and 5).

An explanation is recorded with its decision (the rules produce the verdicts
while deciding: :mod:`lookback.domain.rules`); reading one back is a store
read. A simulation replays recorded install decisions through the same rules
under changed settings, from the facts each decision saw: the install as
reported, the touches its explanation names (read again from the store), the
SRN claims and prior installs its explanation recorded. It writes nothing,
queues nothing, logs nothing: only reads.

Like the engine, this knows nothing of gRPC or of any database; it reads
through the small :class:`History` interface.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf import field_mask_pb2

from lookback.api.explain.v1 import explain_service_pb2 as pb
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import app_pb2, decision_pb2, explanation_pb2, touch_pb2
from lookback.core import convert
from lookback.core.errors import NotFound, Violations
from lookback.decider.apps import AppSettings
from lookback.domain import rules
from lookback.domain.model import Settings

REPLAYED_KINDS = (
    decision_pb2.DECISION_KIND_INSTALL,
    decision_pb2.DECISION_KIND_REATTRIBUTION,
    decision_pb2.DECISION_KIND_REINSTALL,
)
"""The decisions a simulation re-decides: an install's first launch."""

DEFAULT_PAGE = 500
MAX_PAGE = 1000


@dataclass(frozen=True)
class ReplayFacts:
    """What a replay of one recorded decision reads."""

    record: store_pb.InstallRecord | None
    """The install's record, while it still holds the decision."""
    touches: Sequence[touch_pb2.Touch] = ()
    """The touches its explanation names that are still stored."""


class History(Protocol):
    """Reads recorded decisions and what they saw."""

    async def explained_decision(
        self, app_id: str, decision_id: str
    ) -> tuple[decision_pb2.Decision, explanation_pb2.Explanation | None]:
        """Raises :class:`~lookback.core.errors.NotFound`."""
        ...

    async def install_record(self, app_id: str, install_id: str) -> store_pb.InstallRecord:
        """Raises :class:`~lookback.core.errors.NotFound`."""
        ...

    async def list_installs(
        self, app_id: str, start: int, end: int, page_size: int, page_token: str
    ) -> tuple[Sequence[decision_pb2.Decision], str]:
        """The app's install decisions (:data:`REPLAYED_KINDS`) made in
        ``[start, end)``, newest first, paged."""
        ...

    async def replay_facts(
        self, app_id: str, decisions: Sequence[decision_pb2.Decision]
    ) -> Sequence[ReplayFacts]:
        """One entry per decision, in order."""
        ...


def attribution(d: decision_pb2.Decision) -> tuple[object, ...]:
    """What a simulation compares: everything the decision answers about
    who earned the install (not its ids, times or latency)."""
    return (
        d.kind,
        d.media_source,
        d.campaign,
        d.method,
        d.touch_type,
        d.click_id,
        tuple(d.contributors),
        tuple((r.click_id, r.media_source, r.reason) for r in d.rejected),
    )


def replay(
    before: decision_pb2.Decision,
    record: store_pb.InstallRecord,
    touches: Sequence[touch_pb2.Touch],
    settings: Settings,
    settings_version: int,
) -> tuple[decision_pb2.Decision, explanation_pb2.Explanation]:
    """The decision ``before`` would be under ``settings``, from the facts
    it saw (its record's install and explanation, and ``touches``)."""
    explained = record.explanation
    priors = [convert.prior_from_attribution(p) for p in explained.prior]
    install = convert.install(record.install)
    outcome = rules.decide_install(
        install,
        settings,
        [convert.touch(t) for t in touches],
        convert.srn_claims(explained),
        priors,
    )
    after = convert.decision(
        outcome,
        decision_id="",
        app_id=before.app_id,
        install_id=before.install_id,
        event_time=install.installed_at,
        decided_at=convert.ts_to_micros(before.decided_at),
        latency=0,
        unanswered_srns=tuple(before.unanswered_srns),
    )
    return after, convert.explanation(outcome, "", settings_version, priors)


@dataclass
class Explainer:
    """ExplainDecision and Simulate over recorded decisions."""

    apps: AppSettings
    history: History
    max_installs: int = 1_000_000

    async def explain(
        self, app_id: str, decision_id: str = "", install_id: str = ""
    ) -> tuple[decision_pb2.Decision, explanation_pb2.Explanation]:
        """A decision and its explanation, by decision id or by install id
        (the install's own decision)."""
        if not decision_id:
            record = await self.history.install_record(app_id, install_id)
            decision_id = record.decision.decision_id
        decision, explanation = await self.history.explained_decision(app_id, decision_id)
        if explanation is None:
            raise NotFound(f"decision {decision_id!r} was recorded without an explanation")
        return decision, explanation

    async def settings_with(
        self, app_id: str, change: app_pb2.AppSettings, mask: field_mask_pb2.FieldMask
    ) -> tuple[app_pb2.App, Settings]:
        """The app's current settings with the fields ``mask`` names taken
        from ``change`` (none: unchanged), validated as an update would be."""
        current = (await self.apps.get(app_id)).app
        v = Violations()
        for path in mask.paths:
            if not field_mask_pb2.FieldMask(paths=[path]).IsValidForDescriptor(
                app_pb2.AppSettings.DESCRIPTOR
            ):
                v.add("update_mask", f"{path!r} is not an app setting")
        v.raise_if_any()
        if not mask.paths:
            return current, convert.settings(current)
        request = app_pb2.App(app_id=app_id, settings=change)
        full = field_mask_pb2.FieldMask(paths=[f"settings.{p}" for p in mask.paths])
        changed = await self.apps.changed(current, request, full)
        return changed, convert.settings(changed)

    async def simulate(
        self,
        app_id: str,
        change: app_pb2.AppSettings,
        mask: field_mask_pb2.FieldMask,
        start: int,
        end: int,
        page_size: int = 0,
    ) -> AsyncIterator[pb.SimulateResponse]:
        """Pages of the installs whose decision would change (or that cannot
        be replayed), newest first, each with the progress so far."""
        app, settings = await self.settings_with(app_id, change, mask)
        version = app.version
        size = page_size or DEFAULT_PAGE
        examined = changed = not_replayable = 0
        token = ""
        while True:
            decisions, token = await self.history.list_installs(app_id, start, end, size, token)
            facts = await self.history.replay_facts(app_id, decisions) if decisions else []
            page = pb.SimulateResponse(settings_version=version)
            for before, fact in zip(decisions, facts, strict=True):
                item = self._replayed(before, fact, settings, version)
                if item is not None:
                    page.installs.append(item)
                    if item.not_replayable:
                        not_replayable += 1
                    else:
                        changed += 1
            examined += len(decisions)
            page.examined, page.changed, page.not_replayable = examined, changed, not_replayable
            page.reached.CopyFrom(
                decisions[-1].decided_at if decisions else convert.micros_to_ts(start)
            )
            page.done = not token or examined >= self.max_installs
            if page.done:
                page.settings.CopyFrom(app.settings)
            yield page
            if page.done:
                return

    @staticmethod
    def _replayed(
        before: decision_pb2.Decision, fact: ReplayFacts, settings: Settings, version: int
    ) -> pb.SimulatedInstall | None:
        record = fact.record
        if record is None or not record.HasField("explanation"):
            return pb.SimulatedInstall(
                install_id=before.install_id, before=before, not_replayable=True
            )
        have = {t.click_id for t in fact.touches}
        missing = [c for c in convert.stored_touch_ids(record.explanation) if c not in have]
        if missing:
            return pb.SimulatedInstall(
                install_id=before.install_id,
                before=before,
                not_replayable=True,
                missing_click_ids=missing,
            )
        after, explained = replay(before, record, fact.touches, settings, version)
        if attribution(after) == attribution(before):
            return None
        return pb.SimulatedInstall(
            install_id=before.install_id, before=before, after=after, after_explanation=explained
        )
