"""Properties of the pure rules, checked with hypothesis."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from lookback.domain import rules
from lookback.domain.durations import DAY, HOUR, SECOND
from lookback.domain.model import (
    ORGANIC,
    QUALIFYING_VERDICTS,
    Device,
    Install,
    Outcome,
    Platform,
    Referrer,
    Settings,
    SrnClaim,
    Touch,
    TouchType,
    Verdict,
)

T0 = 1_780_000_000 * SECOND
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
OTHER = "38400000-8cf0-11bd-b23e-10b96e40000e"
UAS = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36",
    "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36",
    "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)",
)
SOURCES = ("networka", "networkb", "networkc", "networkd", "networke")

offsets = st.integers(min_value=-2 * DAY, max_value=40 * DAY)


@st.composite
def touches(draw: st.DrawFn, index: int = 0) -> Touch:
    kind = draw(st.sampled_from([TouchType.CLICK, TouchType.IMPRESSION]))
    device = draw(st.sampled_from([{"gaid": GAID}, {"gaid": OTHER}, {}]))
    lookback = draw(st.none() | st.integers(min_value=1, max_value=30).map(lambda d: d * DAY))
    return Touch(
        click_id=f"c{index}-{draw(st.integers(0, 10**6))}",
        type=kind,
        media_source=draw(st.sampled_from(SOURCES)),
        engaged_at=T0 - draw(offsets),
        campaign=draw(st.sampled_from(["", "x", "y"])),
        device=Device(raw=device),
        ip=draw(st.sampled_from(["", "203.0.113.1", "203.0.113.2"])),
        user_agent=draw(st.sampled_from(UAS)),
        is_retargeting=draw(st.booleans()),
        click_lookback=lookback if kind is TouchType.CLICK else None,
    )


@st.composite
def touch_lists(draw: st.DrawFn) -> list[Touch]:
    n = draw(st.integers(min_value=0, max_value=8))
    return [draw(touches(i)) for i in range(n)]


@st.composite
def app_settings(draw: st.DrawFn) -> Settings:
    return Settings(
        platform=draw(st.sampled_from([Platform.ANDROID, Platform.OTHER])),
        click_lookback=draw(st.integers(1, 30)) * DAY,
        view_lookback=draw(st.sampled_from([0, HOUR, 24 * HOUR])),
        probabilistic_click_lookback=draw(st.integers(1, 24)) * HOUR,
        probabilistic_view_lookback=draw(st.sampled_from([0, 6 * HOUR])),
        min_ctit=draw(st.sampled_from([0, 10 * SECOND, HOUR])),
    )


@st.composite
def installs(draw: st.DrawFn, candidates: list[Touch]) -> Install:
    referrer = None
    if draw(st.booleans()):
        names = [t.click_id for t in candidates] + ["unknown-click"]
        begin = draw(st.none() | offsets.map(lambda o: T0 - o))
        referrer = Referrer(raw="", click_id=draw(st.sampled_from(names)), install_begin_at=begin)
    return Install(
        install_id="i1",
        installed_at=T0,
        device=Device(raw={"gaid": GAID}),
        ip="203.0.113.1",
        user_agent=draw(st.sampled_from(UAS)),
        os_version="14",
        referrer=referrer,
    )


@st.composite
def cases(draw: st.DrawFn) -> tuple[Install, Settings, list[Touch], list[SrnClaim]]:
    ts = draw(touch_lists())
    claims = [
        SrnClaim(
            media_source=draw(st.sampled_from(SOURCES)),
            touch_type=draw(st.sampled_from([TouchType.CLICK, TouchType.IMPRESSION])),
            engaged_at=T0 - draw(offsets),
        )
        for _ in range(draw(st.integers(0, 2)))
    ]
    return draw(installs(ts)), draw(app_settings()), ts, claims


def decide(case: tuple[Install, Settings, list[Touch], list[SrnClaim]]) -> Outcome:
    install, s, ts, claims = case
    return rules.decide_install(install, s, ts, claims)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_the_winner_always_qualifies(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]],
) -> None:
    install, s, ts, claims = case
    out = decide(case)
    judged = rules.judge(install, s, ts, claims)
    if out.media_source == ORGANIC:
        assert judged.qualified == ()
    else:
        winner = judged.qualified[0]
        assert (winner.media_source, winner.click_id, winner.method) == (
            out.media_source,
            out.click_id,
            out.method,
        )
        assert rules.in_window(winner.engaged_at, install.installed_at, None)


@settings(max_examples=300, deadline=None)
@given(cases(), st.sampled_from(SOURCES), st.sampled_from([TouchType.CLICK, TouchType.IMPRESSION]))
def test_a_touch_outside_every_window_changes_nothing(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]], source: str, kind: TouchType
) -> None:
    install, s, ts, claims = case
    stale = Touch(
        click_id="stale",
        type=kind,
        media_source=source,
        engaged_at=T0 - 31 * DAY,
        device=Device(raw={"gaid": GAID}),
        ip=install.ip,
        user_agent=install.user_agent,
    )
    future = replace(stale, click_id="future", engaged_at=T0 + 1)
    with_them = decide((install, s, [*ts, stale, future], claims))
    assert replace(with_them, considered=()) == replace(decide(case), considered=())
    verdicts = {c.click_id: c.verdict for c in with_them.considered}
    assert verdicts["future"] is Verdict.AFTER_INSTALL
    assert verdicts["stale"] in (Verdict.OUTSIDE_WINDOW, Verdict.DISABLED)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_rejected_touches_never_win_or_contribute(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]],
) -> None:
    out = decide(case)
    _, _, ts, _ = case
    by_id = {t.click_id: t for t in ts}
    rejected_ids = {r.click_id for r in out.rejected}
    assert out.click_id not in rejected_ids or not out.click_id
    for r in out.rejected:
        touch = by_id.get(r.click_id)
        if touch is None:
            continue
        # A source whose only qualifying touches were rejected never contributes.
        others = [
            c
            for c in rules.judge(case[0], case[1], ts, case[3]).qualified
            if c.media_source == touch.media_source
        ]
        if not others:
            assert touch.media_source not in out.contributors


@settings(max_examples=300, deadline=None)
@given(cases())
def test_contributors_are_distinct_at_most_three_and_never_the_winner(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]],
) -> None:
    out = decide(case)
    assert len(out.contributors) <= 3
    assert len(set(out.contributors)) == len(out.contributors)
    assert out.media_source not in out.contributors
    assert ORGANIC not in out.contributors


@settings(max_examples=300, deadline=None)
@given(cases(), st.randoms(use_true_random=False))
def test_the_order_candidates_arrive_in_never_matters(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]], rnd: object
) -> None:
    install, s, ts, claims = case
    shuffled_ts, shuffled_claims = list(ts), list(claims)
    rnd.shuffle(shuffled_ts)  # type: ignore[attr-defined]
    rnd.shuffle(shuffled_claims)  # type: ignore[attr-defined]
    assert decide((install, s, shuffled_ts, shuffled_claims)) == decide(case)


# --- explanations (OUTCOMES.md section 4) -----------------------------------


@settings(max_examples=500, deadline=None)
@given(cases())
def test_exactly_one_winner_unless_organic_and_it_is_the_decisions(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]],
) -> None:
    out = decide(case)
    winners = [c for c in out.considered if c.verdict is Verdict.WINNER]
    if out.media_source == ORGANIC:
        assert winners == []
    else:
        assert len(winners) == 1
        assert (winners[0].click_id, winners[0].media_source) == (out.click_id, out.media_source)
        assert winners[0].method is out.method


@settings(max_examples=500, deadline=None)
@given(cases())
def test_the_marked_contributors_are_the_decisions_in_order(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]],
) -> None:
    out = decide(case)
    marked = [c.media_source for c in out.considered if c.contributor]
    assert tuple(marked) == out.contributors
    assert all(c.verdict in QUALIFYING_VERDICTS for c in out.considered if c.contributor)


@settings(max_examples=300, deadline=None)
@given(cases())
def test_every_touch_that_shares_a_key_is_explained_and_rejections_agree(
    case: tuple[Install, Settings, list[Touch], list[SrnClaim]],
) -> None:
    install, _, ts, _ = case
    out = decide(case)
    explained = {c.click_id for c in out.considered}
    for t in ts:
        shares = (t.device.raw.get("gaid") == install.device.raw.get("gaid") and t.device.raw) or (
            t.ip and t.ip == install.ip
        )
        if shares:
            assert t.click_id in explained
    rejected = sorted((c.click_id, c.reason) for c in out.considered if c.reason is not None)
    assert rejected == sorted((r.click_id, r.reason) for r in out.rejected)
    # Explaining changes nothing about the decision.
    install, s, ts, claims = case
    quiet = rules.decide_install(install, s, ts, claims, explain=False)
    assert quiet == replace(out, considered=())
