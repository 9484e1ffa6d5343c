"""The attribution rules: pure functions from facts to an outcome.

Nothing here reads a clock, a database or the network. The decider gathers
the facts (the install, the app's settings, candidate touches, SRN claims,
prior installs of the device) and calls :func:`decide_install`,
:func:`decide_open` or :func:`attribute_event`.

See ``docs/attribution-rules.md`` for the rules in prose, including every
choice made where the specification is silent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lookback.domain import devices, useragent
from lookback.domain.matching import Matching, matching_for_install
from lookback.domain.model import (
    ORGANIC,
    Install,
    Kind,
    Method,
    Micros,
    Open,
    Outcome,
    PreloadType,
    PriorDecision,
    PriorInstall,
    Reason,
    Rejection,
    Settings,
    SrnClaim,
    Touch,
    TouchType,
)

MAX_CONTRIBUTORS = 3

# Waterfall tiers, best first.
TIER_PRELOAD = 0
TIER_DETERMINISTIC_CLICK = 1
TIER_PROBABILISTIC_CLICK = 2
TIER_DETERMINISTIC_VIEW = 3
TIER_PROBABILISTIC_VIEW = 4

# Tie-break inside a tier when engagement times are equal: lower wins.
_METHOD_ORDER = {
    Method.PRELOAD: 0,
    Method.INSTALL_REFERRER: 1,
    Method.DEVICE_ID: 2,
    Method.SRN: 3,
    Method.PROBABILISTIC: 4,
}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A touch (or SRN claim, or preload) that matched and lies in its window."""

    tier: int
    method: Method
    touch_type: TouchType
    media_source: str
    engaged_at: Micros
    click_id: str = ""
    campaign: str = ""
    adset: str = ""
    ad: str = ""
    site_id: str = ""
    is_retargeting: bool = False

    def sort_key(self) -> tuple[int, int, int, str, str, str]:
        # Best first: lowest tier, most recent, method order; then click id,
        # media source and campaign, so that the result never depends on the
        # order candidates arrived in.
        return (
            self.tier,
            -self.engaged_at,
            _METHOD_ORDER.get(self.method, 9),
            self.click_id,
            self.media_source,
            self.campaign,
        )


def in_window(engaged_at: Micros, at: Micros, window: Micros | None) -> bool:
    """``engaged_at <= at`` and ``at - engaged_at <= window``; ``None`` is no limit."""
    if engaged_at > at:
        return False
    return window is None or at - engaged_at <= window


def _touch_window(touch: Touch, tier: int, settings: Settings) -> Micros:
    if tier == TIER_DETERMINISTIC_CLICK:
        if touch.click_lookback is not None:
            return touch.click_lookback
        return settings.click_window(touch.media_source)
    if tier == TIER_PROBABILISTIC_CLICK:
        return settings.probabilistic_click_lookback
    if tier == TIER_DETERMINISTIC_VIEW:
        return settings.view_lookback
    return settings.probabilistic_view_lookback


def _from_touch(touch: Touch, tier: int, method: Method) -> Candidate:
    return Candidate(
        tier=tier,
        method=method,
        touch_type=touch.type,
        media_source=touch.media_source,
        engaged_at=touch.engaged_at,
        click_id=touch.click_id,
        campaign=touch.campaign,
        adset=touch.adset,
        ad=touch.ad,
        site_id=touch.site_id,
        is_retargeting=touch.is_retargeting,
    )


def _match_touch(touch: Touch, m: Matching, settings: Settings) -> Candidate | None:
    """The best way ``touch`` qualifies for the install, or ``None``."""
    is_click = touch.type is TouchType.CLICK
    ways: list[tuple[int, Method]] = []
    if is_click and m.referrer_click_id and touch.click_id == m.referrer_click_id:
        ways.append((TIER_DETERMINISTIC_CLICK, Method.INSTALL_REFERRER))
    if m.device_keys and not m.device_keys.isdisjoint(devices.touch_device_keys(touch.device)):
        tier = TIER_DETERMINISTIC_CLICK if is_click else TIER_DETERMINISTIC_VIEW
        ways.append((tier, Method.DEVICE_ID))
    if m.agent is not None and touch.ip and touch.ip.strip().lower() == m.ip:
        agent = useragent.normalise(touch.user_agent)
        if useragent.agents_match(agent, m.agent):
            tier = TIER_PROBABILISTIC_CLICK if is_click else TIER_PROBABILISTIC_VIEW
            ways.append((tier, Method.PROBABILISTIC))
    for tier, method in sorted(ways, key=lambda w: (w[0], _METHOD_ORDER[w[1]])):
        window = _touch_window(touch, tier, settings)
        if window > 0 and in_window(touch.engaged_at, m.at, window):
            return _from_touch(touch, tier, method)
    return None


def _claim_candidate(claim: SrnClaim, at: Micros, settings: Settings) -> Candidate | None:
    if claim.touch_type is TouchType.CLICK:
        tier, window = TIER_DETERMINISTIC_CLICK, settings.click_window(claim.media_source)
    else:
        tier, window = TIER_DETERMINISTIC_VIEW, settings.view_lookback
    if window <= 0 or not in_window(claim.engaged_at, at, window):
        return None
    return Candidate(
        tier=tier,
        method=Method.SRN,
        touch_type=claim.touch_type,
        media_source=claim.media_source,
        engaged_at=claim.engaged_at,
        click_id=claim.click_id,
        campaign=claim.campaign,
    )


def _preload_candidate(install: Install, settings: Settings) -> Candidate | None:
    preload = install.preload
    if preload is None:
        return None
    if preload.type is PreloadType.CONF:
        engaged_at = (
            preload.preloaded_at if preload.preloaded_at is not None else install.installed_at
        )
        if engaged_at > install.installed_at:
            return None
    else:
        if preload.preloaded_at is None:
            return None
        if not in_window(preload.preloaded_at, install.installed_at, settings.preload_lookback):
            return None
        engaged_at = preload.preloaded_at
    return Candidate(
        tier=TIER_PRELOAD,
        method=Method.PRELOAD,
        touch_type=TouchType.NONE,
        media_source=preload.media_source,
        engaged_at=engaged_at,
        campaign=preload.campaign,
    )


def _fraud_reason(c: Candidate, install: Install, settings: Settings) -> Reason | None:
    if c.touch_type is not TouchType.CLICK:
        return None
    if settings.min_ctit > 0 and install.installed_at - c.engaged_at < settings.min_ctit:
        return Reason.CTIT_TOO_SHORT
    begin = install.referrer.install_begin_at if install.referrer else None
    if settings.click_injection_check and begin is not None and begin < c.engaged_at:
        return Reason.CLICK_AFTER_INSTALL_BEGIN
    return None


@dataclass(frozen=True, slots=True)
class Judged:
    """Candidates after the fraud rules, best first."""

    qualified: tuple[Candidate, ...]
    rejected: tuple[Rejection, ...]


def judge(
    install: Install,
    settings: Settings,
    touches: Iterable[Touch],
    claims: Iterable[SrnClaim] = (),
    matching: Matching | None = None,
) -> Judged:
    """Match every touch and claim, apply the windows and the fraud rules
    (``matching``: the install's, when the caller has it already)."""
    m = matching or matching_for_install(install, settings)
    candidates: list[Candidate] = []
    seen: set[str] = set()
    known_click_ids: set[str] = set()
    for touch in touches:
        known_click_ids.add(touch.click_id)
        if touch.click_id in seen:
            continue
        seen.add(touch.click_id)
        candidate = _match_touch(touch, m, settings)
        if candidate is not None:
            candidates.append(candidate)
    for claim in claims:
        candidate = _claim_candidate(claim, install.installed_at, settings)
        if candidate is not None:
            candidates.append(candidate)
    preload = _preload_candidate(install, settings)
    if preload is not None:
        candidates.append(preload)

    rejected: list[Rejection] = []
    if m.referrer_click_id and m.referrer_click_id not in known_click_ids:
        rejected.append(Rejection(m.referrer_click_id, "", Reason.UNKNOWN_CLICK_ID))
    qualified: list[Candidate] = []
    for c in candidates:
        reason = _fraud_reason(c, install, settings)
        if reason is None:
            qualified.append(c)
        else:
            rejected.append(Rejection(c.click_id, c.media_source, reason))
    qualified.sort(key=Candidate.sort_key)
    rejected.sort(key=lambda r: (r.reason.value, r.click_id, r.media_source))
    return Judged(tuple(qualified), tuple(rejected))


def contributors_of(winner: Candidate, qualified: Sequence[Candidate]) -> tuple[str, ...]:
    """Other media sources with a qualifying touch: distinct, most recent first, at most 3."""
    out: list[str] = []
    for c in sorted(qualified, key=lambda c: (-c.engaged_at, c.media_source)):
        if c.media_source in (winner.media_source, ORGANIC) or c.media_source in out:
            continue
        out.append(c.media_source)
        if len(out) == MAX_CONTRIBUTORS:
            break
    return tuple(out)


def _attributed(
    kind: Kind, winner: Candidate, qualified: Sequence[Candidate], rejected: tuple[Rejection, ...]
) -> Outcome:
    return Outcome(
        kind=kind,
        media_source=winner.media_source,
        campaign=winner.campaign,
        method=winner.method,
        touch_type=winner.touch_type,
        click_id=winner.click_id,
        adset=winner.adset,
        ad=winner.ad,
        site_id=winner.site_id,
        contributors=contributors_of(winner, qualified),
        rejected=rejected,
    )


def waterfall(kind: Kind, judged: Judged) -> Outcome:
    """The best qualified candidate wins; with none, the outcome is organic."""
    if not judged.qualified:
        return Outcome(kind=kind, rejected=judged.rejected)
    return _attributed(kind, judged.qualified[0], judged.qualified, judged.rejected)


def _holding_prior(
    install: Install, settings: Settings, prior: Sequence[PriorInstall]
) -> PriorInstall | None:
    """The prior install whose re-attribution window the install falls in."""
    inside = [
        p
        for p in prior
        if p.install_id != install.install_id
        and in_window(p.attributed.event_time, install.installed_at, settings.reattribution_window)
    ]
    return max(inside, key=lambda p: p.attributed.event_time, default=None)


def decide_install(
    install: Install,
    settings: Settings,
    touches: Iterable[Touch],
    claims: Iterable[SrnClaim] = (),
    prior: Sequence[PriorInstall] = (),
    matching: Matching | None = None,
) -> Outcome:
    """Decide a first launch: new install, re-attribution or reinstall."""
    judged = judge(install, settings, touches, claims, matching)
    holder = _holding_prior(install, settings, prior)
    if holder is None:
        return waterfall(Kind.INSTALL, judged)
    retargeting = tuple(c for c in judged.qualified if c.is_retargeting)
    if retargeting:
        return _attributed(Kind.REATTRIBUTION, retargeting[0], retargeting, judged.rejected)
    original = holder.attributed
    return Outcome(
        kind=Kind.REINSTALL,
        media_source=original.media_source,
        campaign=original.campaign,
        method=original.method,
        touch_type=original.touch_type,
        click_id=original.click_id,
        rejected=judged.rejected,
        original_decision_id=original.decision_id,
    )


def decide_open(
    open_: Open,
    settings: Settings,
    touches: Iterable[Touch],
    record: PriorInstall,
) -> Outcome:
    """An open through a retargeting click is a re-engagement; otherwise nothing.

    The click must be a retargeting click of this app inside its click window,
    reached by the deep link's click id or by a device identifier, and newer
    than the install's attribution and its latest re-engagement (a click is
    used once).
    """
    since = record.attributed.event_time
    if record.latest_reengagement is not None:
        since = max(since, record.latest_reengagement.event_time)
    keys = devices.install_device_keys(open_.device)
    best: Candidate | None = None
    for touch in touches:
        if not touch.is_retargeting or touch.type is not TouchType.CLICK:
            continue
        if touch.engaged_at <= since:
            continue
        if not in_window(
            touch.engaged_at, open_.opened_at, settings.click_window(touch.media_source)
        ):
            continue
        if open_.deep_link_click_id and touch.click_id == open_.deep_link_click_id:
            method = Method.DEEP_LINK
        elif keys and not keys.isdisjoint(devices.touch_device_keys(touch.device)):
            method = Method.DEVICE_ID
        else:
            continue
        candidate = _from_touch(touch, TIER_DETERMINISTIC_CLICK, method)
        rank = (method is not Method.DEEP_LINK, -touch.engaged_at, touch.click_id)
        if best is None or rank < (
            best.method is not Method.DEEP_LINK,
            -best.engaged_at,
            best.click_id,
        ):
            best = candidate
    if best is None:
        return Outcome(kind=Kind.NONE)
    return _attributed(Kind.REENGAGEMENT, best, (best,), ())


@dataclass(frozen=True, slots=True)
class EventOutcome:
    """Who an in-app event is attributed to."""

    media_source: str
    """The media source of the install's latest counted decision."""
    campaign: str
    decision_id: str
    """That decision's id."""
    reengagement_media_source: str = ""
    """Inside a re-engagement window: the re-engagement's media source."""


def attribute_event(occurred_at: Micros, settings: Settings, record: PriorInstall) -> EventOutcome:
    """An event goes to the install's latest counted decision; inside a
    re-engagement window it also carries the re-engagement's media source."""
    holder: PriorDecision = record.attributed
    reengaged = ""
    latest = record.latest_reengagement
    if latest is not None and in_window(
        latest.event_time, occurred_at, settings.reengagement_window
    ):
        reengaged = latest.media_source
    return EventOutcome(holder.media_source, holder.campaign, holder.decision_id, reengaged)
