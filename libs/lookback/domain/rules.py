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
from dataclasses import dataclass, replace
from typing import Any

from lookback.domain import addresses, devices, useragent
from lookback.domain.matching import Matching, matching_for_install
from lookback.domain.model import (
    ORGANIC,
    Considered,
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
    Verdict,
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
    ip: str = ""
    """The touch's address (for the blocklist); empty for claims and preloads."""
    user_agent: str = ""
    """The touch's user agent (for the bot rule)."""
    deep_link_value: str = ""
    deep_link_params: tuple[tuple[str, str], ...] = ()

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
        ip=touch.ip,
        user_agent=touch.user_agent,
        deep_link_value=touch.deep_link_value,
        deep_link_params=touch.deep_link_params,
    )


def _deep_link(winner: Candidate) -> dict[str, Any]:
    """The winner's deferred deep link (LINKS.md): a click's only; a match
    is guaranteed unless it was probabilistic."""
    if winner.touch_type is not TouchType.CLICK or not (
        winner.deep_link_value or winner.deep_link_params
    ):
        return {}
    return {
        "deep_link_value": winner.deep_link_value,
        "deep_link_params": winner.deep_link_params,
        "match_guaranteed": winner.method is not Method.PROBABILISTIC,
    }


@dataclass(frozen=True, slots=True)
class Miss:
    """How a candidate failed to qualify: the way its verdict is about."""

    method: Method
    verdict: Verdict
    window: Micros | None = None


def _check_window(engaged_at: Micros, at: Micros, window: Micros) -> Miss | None:
    """``None`` when the engagement lies in ``window``; else why not."""
    if engaged_at > at:
        return Miss(Method.NONE, Verdict.AFTER_INSTALL)
    if window <= 0:
        return Miss(Method.NONE, Verdict.DISABLED)
    if at - engaged_at > window:
        return Miss(Method.NONE, Verdict.OUTSIDE_WINDOW, window)
    return None


def _match_touch(touch: Touch, m: Matching, settings: Settings) -> Candidate | Miss | None:
    """The best way ``touch`` qualifies for the install; else why it does
    not (its best way's miss); ``None`` when it is no candidate at all."""
    is_click = touch.type is TouchType.CLICK
    ways: list[tuple[int, Method]] = []
    blocked: Miss | None = None
    if is_click and m.referrer_click_id and touch.click_id == m.referrer_click_id:
        ways.append((TIER_DETERMINISTIC_CLICK, Method.INSTALL_REFERRER))
    touch_keys: set[str] = set()
    if m.device_keys or m.excluded_keys:
        touch_keys = devices.touch_device_keys(touch.device)
    if m.device_keys and not m.device_keys.isdisjoint(touch_keys):
        tier = TIER_DETERMINISTIC_CLICK if is_click else TIER_DETERMINISTIC_VIEW
        ways.append((tier, Method.DEVICE_ID))
    elif m.excluded_keys and not m.excluded_keys.isdisjoint(touch_keys):
        blocked = Miss(Method.DEVICE_ID, Verdict.PRIVACY)
    if m.ip and touch.ip and touch.ip.strip().lower() == m.ip:
        if m.agent is not None:
            if useragent.agents_match(useragent.normalise(touch.user_agent), m.agent):
                tier = TIER_PROBABILISTIC_CLICK if is_click else TIER_PROBABILISTIC_VIEW
                ways.append((tier, Method.PROBABILISTIC))
            elif blocked is None:
                blocked = Miss(Method.PROBABILISTIC, Verdict.FINGERPRINT_MISMATCH)
        elif m.probabilistic_blocked and blocked is None:
            blocked = Miss(Method.PROBABILISTIC, Verdict.PRIVACY)
    first_miss: Miss | None = None
    for tier, method in sorted(ways, key=lambda w: (w[0], _METHOD_ORDER[w[1]])):
        miss = _check_window(touch.engaged_at, m.at, _touch_window(touch, tier, settings))
        if miss is None:
            return _from_touch(touch, tier, method)
        if first_miss is None:
            first_miss = Miss(method, miss.verdict, miss.window)
    if first_miss is not None:
        return first_miss
    if blocked is not None and touch.engaged_at > m.at:
        return Miss(blocked.method, Verdict.AFTER_INSTALL)
    return blocked


def _claim_candidate(claim: SrnClaim, at: Micros, settings: Settings) -> Candidate | Miss:
    if claim.touch_type is TouchType.CLICK:
        tier, window = TIER_DETERMINISTIC_CLICK, settings.click_window(claim.media_source)
    else:
        tier, window = TIER_DETERMINISTIC_VIEW, settings.view_lookback
    miss = _check_window(claim.engaged_at, at, window)
    if miss is not None:
        return Miss(Method.SRN, miss.verdict, miss.window)
    return Candidate(
        tier=tier,
        method=Method.SRN,
        touch_type=claim.touch_type,
        media_source=claim.media_source,
        engaged_at=claim.engaged_at,
        click_id=claim.click_id,
        campaign=claim.campaign,
    )


def _preload_candidate(install: Install, settings: Settings) -> Candidate | Miss | None:
    preload = install.preload
    if preload is None:
        return None
    if preload.type is PreloadType.CONF:
        engaged_at = (
            preload.preloaded_at if preload.preloaded_at is not None else install.installed_at
        )
        if engaged_at > install.installed_at:
            return Miss(Method.PRELOAD, Verdict.AFTER_INSTALL)
    else:
        if preload.preloaded_at is None:
            return None
        miss = _check_window(preload.preloaded_at, install.installed_at, settings.preload_lookback)
        if miss is not None:
            return Miss(Method.PRELOAD, miss.verdict, miss.window)
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
    """The first fraud rule that refuses ``c``: where it came from (a blocked
    address, an automated client; any touch), then its timing (clicks)."""
    if settings.blocked_ips and addresses.blocked(c.ip, settings.blocked_ips):
        return Reason.BLOCKED_IP
    if c.user_agent and useragent.is_bot(c.user_agent):
        return Reason.BOT
    if c.touch_type is not TouchType.CLICK:
        return None
    ctit = install.installed_at - c.engaged_at
    if settings.min_ctit > 0 and ctit < settings.min_ctit:
        return Reason.CTIT_TOO_SHORT
    if settings.max_ctit > 0 and ctit > settings.max_ctit:
        return Reason.CTIT_TOO_LONG
    begin = install.referrer.install_begin_at if install.referrer else None
    if settings.click_injection_check and begin is not None and begin < c.engaged_at:
        return Reason.CLICK_AFTER_INSTALL_BEGIN
    return None


def _considered(c: Candidate, verdict: Verdict, **extra: object) -> Considered:
    return Considered(
        media_source=c.media_source,
        touch_type=c.touch_type,
        engaged_at=c.engaged_at,
        method=c.method,
        verdict=verdict,
        click_id=c.click_id,
        campaign=c.campaign,
        is_retargeting=c.is_retargeting,
        **extra,  # type: ignore[arg-type]
    )


def _missed(
    miss: Miss, media_source: str, touch_type: TouchType, engaged_at: Micros, **names: Any
) -> Considered:
    return Considered(
        media_source=media_source,
        touch_type=touch_type,
        engaged_at=engaged_at,
        method=miss.method,
        verdict=miss.verdict,
        window=miss.window,
        **names,
    )


def _missed_touch(miss: Miss, touch: Touch) -> Considered:
    return _missed(
        miss,
        touch.media_source,
        touch.type,
        touch.engaged_at,
        click_id=touch.click_id,
        campaign=touch.campaign,
        is_retargeting=touch.is_retargeting,
    )


@dataclass(frozen=True, slots=True)
class Judged:
    """Candidates after the windows and the fraud rules."""

    qualified: tuple[Candidate, ...]
    """Best first."""
    rejected: tuple[Rejection, ...]
    missed: tuple[Considered, ...] = ()
    """The candidates that did not qualify, with their verdicts (when explaining)."""


def judge(
    install: Install,
    settings: Settings,
    touches: Iterable[Touch],
    claims: Iterable[SrnClaim] = (),
    matching: Matching | None = None,
    explain: bool = True,
) -> Judged:
    """Match every touch and claim, apply the windows and the fraud rules
    (``matching``: the install's, when the caller has it already)."""
    m = matching or matching_for_install(install, settings)
    candidates: list[Candidate] = []
    missed: list[Considered] = []
    known_click_ids: set[str] = set()
    for touch in touches:
        if touch.click_id in known_click_ids:
            continue
        known_click_ids.add(touch.click_id)
        found = _match_touch(touch, m, settings)
        if isinstance(found, Candidate):
            candidates.append(found)
        elif found is not None and explain:
            missed.append(_missed_touch(found, touch))
    for claim in claims:
        found = _claim_candidate(claim, install.installed_at, settings)
        if isinstance(found, Candidate):
            candidates.append(found)
        elif explain:
            missed.append(
                _missed(
                    found,
                    claim.media_source,
                    claim.touch_type,
                    claim.engaged_at,
                    click_id=claim.click_id,
                    campaign=claim.campaign,
                )
            )
    preload = _preload_candidate(install, settings)
    if isinstance(preload, Candidate):
        candidates.append(preload)
    elif preload is not None and explain and install.preload is not None:
        p = install.preload
        missed.append(
            _missed(
                preload, p.media_source, TouchType.NONE, p.preloaded_at or 0, campaign=p.campaign
            )
        )

    rejected: list[Rejection] = []
    if m.referrer_click_id and m.referrer_click_id not in known_click_ids:
        rejected.append(Rejection(m.referrer_click_id, "", Reason.UNKNOWN_CLICK_ID))
        if explain:
            missed.append(
                Considered(
                    media_source="",
                    touch_type=TouchType.CLICK,
                    engaged_at=0,
                    method=Method.INSTALL_REFERRER,
                    verdict=Verdict.REJECTED,
                    click_id=m.referrer_click_id,
                    reason=Reason.UNKNOWN_CLICK_ID,
                )
            )
    qualified: list[Candidate] = []
    for c in candidates:
        reason = _fraud_reason(c, install, settings)
        if reason is None:
            qualified.append(c)
        else:
            rejected.append(Rejection(c.click_id, c.media_source, reason))
            if explain:
                missed.append(_considered(c, Verdict.REJECTED, reason=reason))
    qualified.sort(key=Candidate.sort_key)
    rejected.sort(key=lambda r: (r.reason.value, r.click_id, r.media_source))
    return Judged(tuple(qualified), tuple(rejected), tuple(missed))


def _contributing(winner: Candidate, qualified: Sequence[Candidate]) -> list[Candidate]:
    """The touch of each contributing media source: other media sources with
    a qualifying touch, distinct, most recent first, at most 3."""
    out: list[Candidate] = []
    sources: set[str] = set()
    for c in sorted(qualified, key=lambda c: (-c.engaged_at, c.media_source)):
        if c.media_source in (winner.media_source, ORGANIC) or c.media_source in sources:
            continue
        out.append(c)
        sources.add(c.media_source)
        if len(out) == MAX_CONTRIBUTORS:
            break
    return out


def contributors_of(winner: Candidate, qualified: Sequence[Candidate]) -> tuple[str, ...]:
    """Other media sources with a qualifying touch: distinct, most recent first, at most 3."""
    return tuple(c.media_source for c in _contributing(winner, qualified))


def _explained(
    winner: Candidate | None,
    qualified: Sequence[Candidate],
    contributing: Sequence[Candidate],
    others: Iterable[Considered],
    not_retargeting: Iterable[Candidate] = (),
) -> tuple[Considered, ...]:
    """Every candidate with its verdict, most recent first."""
    marked = {id(c) for c in contributing}
    out = list(others)
    for c in qualified:
        if c is winner:
            out.append(_considered(c, Verdict.WINNER))
        else:
            assert winner is not None
            verdict = Verdict.LOST_TO_HIGHER_TIER if c.tier > winner.tier else Verdict.LOST_TO_NEWER
            out.append(_considered(c, verdict, contributor=id(c) in marked))
    out.extend(_considered(c, Verdict.NOT_RETARGETING) for c in not_retargeting)
    out.sort(key=Considered.sort_key)
    return tuple(out)


def _attributed(
    kind: Kind,
    winner: Candidate,
    qualified: Sequence[Candidate],
    judged: Judged,
    explain: bool,
    not_retargeting: Sequence[Candidate] = (),
) -> Outcome:
    contributing = _contributing(winner, qualified)
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
        contributors=tuple(c.media_source for c in contributing),
        rejected=judged.rejected,
        considered=(
            _explained(winner, qualified, contributing, judged.missed, not_retargeting)
            if explain
            else ()
        ),
        **_deep_link(winner),
    )


def waterfall(kind: Kind, judged: Judged, explain: bool = True) -> Outcome:
    """The best qualified candidate wins; with none, the outcome is organic."""
    if not judged.qualified:
        considered = _explained(None, (), (), judged.missed) if explain else ()
        return Outcome(kind=kind, rejected=judged.rejected, considered=considered)
    return _attributed(kind, judged.qualified[0], judged.qualified, judged, explain)


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
    explain: bool = True,
) -> Outcome:
    """Decide a first launch: new install, re-attribution or reinstall.
    With ``explain``, the outcome also lists every candidate and its verdict."""
    judged = judge(install, settings, touches, claims, matching, explain)
    holder = _holding_prior(install, settings, prior)
    if holder is None:
        return waterfall(Kind.INSTALL, judged, explain)
    retargeting = tuple(c for c in judged.qualified if c.is_retargeting)
    acquisition = tuple(c for c in judged.qualified if not c.is_retargeting)
    if retargeting:
        return _attributed(
            Kind.REATTRIBUTION, retargeting[0], retargeting, judged, explain, acquisition
        )
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
        considered=_explained(None, (), (), judged.missed, acquisition) if explain else (),
    )


def decide_open(
    open_: Open,
    settings: Settings,
    touches: Iterable[Touch],
    record: PriorInstall,
    explain: bool = True,
) -> Outcome:
    """An open through a retargeting click is a re-engagement; otherwise nothing.

    The click must be a retargeting click of this app inside its click window,
    reached by the deep link's click id or by a device identifier, and newer
    than the install's attribution and its latest re-engagement (a click is
    used once: an older one is ``outside_window``, its window running from
    that time to the open).
    """
    since = record.attributed.event_time
    if record.latest_reengagement is not None:
        since = max(since, record.latest_reengagement.event_time)
    keys = devices.install_device_keys(open_.device)
    at = open_.opened_at
    found: list[Candidate] = []
    missed: list[Considered] = []
    for touch in touches:
        if open_.deep_link_click_id and touch.click_id == open_.deep_link_click_id:
            method = Method.DEEP_LINK
        elif keys and not keys.isdisjoint(devices.touch_device_keys(touch.device)):
            method = Method.DEVICE_ID
        else:
            continue
        miss: Miss | None = None
        if not touch.is_retargeting or touch.type is not TouchType.CLICK:
            miss = Miss(method, Verdict.NOT_RETARGETING)
        elif touch.engaged_at <= since:
            miss = Miss(method, Verdict.OUTSIDE_WINDOW, max(0, at - since))
        else:
            checked = _check_window(touch.engaged_at, at, settings.click_window(touch.media_source))
            if checked is not None:
                miss = Miss(method, checked.verdict, checked.window)
        if miss is None:
            found.append(_from_touch(touch, TIER_DETERMINISTIC_CLICK, method))
        elif explain:
            missed.append(_missed_touch(miss, touch))
    # A deep link's click beats a device match (a higher tier here), then the newest.
    found.sort(key=lambda c: (c.method is not Method.DEEP_LINK, -c.engaged_at, c.click_id))
    if not found:
        considered = tuple(sorted(missed, key=Considered.sort_key)) if explain else ()
        return Outcome(kind=Kind.NONE, considered=considered)
    best = found[0]
    outcome = _attributed(Kind.REENGAGEMENT, best, (best,), Judged((best,), (), ()), False)
    if not explain:
        return outcome
    for c in found[1:]:
        higher = best.method is Method.DEEP_LINK and c.method is not Method.DEEP_LINK
        verdict = Verdict.LOST_TO_HIGHER_TIER if higher else Verdict.LOST_TO_NEWER
        missed.append(_considered(c, verdict))
    missed.append(_considered(best, Verdict.WINNER))
    return replace(outcome, considered=tuple(sorted(missed, key=Considered.sort_key)))


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
