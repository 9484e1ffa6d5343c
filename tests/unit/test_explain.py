"""Explanations and simulations on the in-memory engine: what the decider
records with each decision, and the replay of recorded decisions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from google.protobuf import field_mask_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from lookback.api.types.v1 import app_pb2, decision_pb2, explanation_pb2, install_pb2, touch_pb2
from lookback.core.clock import now_micros
from lookback.core.convert import micros_to_dur, micros_to_ts
from lookback.core.errors import InvalidArgument, NotFound
from lookback.decider.explain import Explainer
from lookback.domain.durations import DAY, HOUR, MINUTE
from lookback.testing.memory import MemoryEngine, memory_engine

APP = "com.example.explain"
GAIDS = ("38400000-8cf0-11bd-b23e-10b96e700001", "38400000-8cf0-11bd-b23e-10b96e700002")
UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36"
SOURCES = ("networka", "networkb", "networkc")
V = explanation_pb2


async def setup(**values: object) -> tuple[MemoryEngine, Explainer]:
    m = memory_engine()
    app = app_pb2.App(app_id=APP, platform=app_pb2.PLATFORM_ANDROID)
    for name, value in values.items():
        field = getattr(app.settings, name)
        if hasattr(field, "CopyFrom"):
            field.CopyFrom(value)
        else:
            setattr(app.settings, name, value)
    await m.engine.apps.create(app)
    return m, Explainer(m.engine.apps, m.store)


def touch(
    click_id: str,
    ago: int,
    source: str = "networka",
    gaid: str = GAIDS[0],
    ip: str = "",
    kind: int = touch_pb2.TOUCH_TYPE_CLICK,
    retargeting: bool = False,
) -> touch_pb2.Touch:
    t = touch_pb2.Touch(
        app_id=APP,
        type=kind,
        media_source=source,
        campaign=f"{source}-spring",
        click_id=click_id,
        engaged_at=micros_to_ts(now_micros() - ago),
        ip=ip,
        user_agent=UA,
        is_retargeting=retargeting,
    )
    if gaid:
        t.device.gaid = gaid
    return t


def install(
    install_id: str, gaid: str = GAIDS[0], ip: str = "", ago: int = 0
) -> install_pb2.Install:
    i = install_pb2.Install(
        app_id=APP,
        install_id=install_id,
        installed_at=micros_to_ts(now_micros() - ago),
        ip=ip,
        user_agent=UA,
        os_version="14",
    )
    if gaid:
        i.device.gaid = gaid
    return i


def verdicts(e: explanation_pb2.Explanation) -> dict[str, int]:
    return {c.click_id: c.verdict for c in e.candidates}


async def simulate(
    x: Explainer, change: app_pb2.AppSettings | None = None, *paths: str
) -> list[object]:
    pages = []
    async for page in x.simulate(
        APP,
        change or app_pb2.AppSettings(),
        field_mask_pb2.FieldMask(paths=list(paths)),
        0,
        now_micros() + HOUR,
        page_size=2,
    ):
        pages.append(page)
    return pages


async def test_an_explanation_is_recorded_with_the_decision_and_read_back_either_way() -> None:
    m, x = await setup()
    m.store.add_touch(touch("c_old", 8 * DAY, "networkb"))
    m.store.add_touch(touch("c_win", HOUR))
    m.store.add_touch(touch("c_view", 2 * HOUR, "networkc", kind=touch_pb2.TOUCH_TYPE_IMPRESSION))
    d = await m.engine.decide_install(install("i1"))
    by_install = await x.explain(APP, install_id="i1")
    by_id = await x.explain(APP, decision_id=d.decision_id)
    assert by_install == by_id
    decision, e = by_id
    assert decision.decision_id == d.decision_id == e.decision_id
    assert e.settings_version == 1
    assert verdicts(e) == {
        "c_win": V.VERDICT_WINNER,
        "c_view": V.VERDICT_LOST_TO_HIGHER_TIER,
        "c_old": V.VERDICT_OUTSIDE_WINDOW,
    }
    old = next(c for c in e.candidates if c.click_id == "c_old")
    assert old.window.ToSeconds() == 7 * 86400
    assert [c.contributor for c in e.candidates if c.click_id == "c_view"] == [True]
    with pytest.raises(NotFound):
        await x.explain(APP, install_id="nope")


async def test_a_reengagement_is_explained_by_its_decision_id() -> None:
    m, x = await setup()
    m.store.add_touch(touch("c1", DAY))
    await m.engine.decide_install(install("i1", ago=HOUR))
    m.store.add_touch(touch("r_ua", 30 * MINUTE, "networkb"))
    m.store.add_touch(touch("r1", 10 * MINUTE, "networkc", retargeting=True))
    opened = install_pb2.Open(app_id=APP, install_id="i1", opened_at=micros_to_ts(now_micros()))
    opened.device.gaid = GAIDS[0]
    d = await m.engine.decide_open(opened)
    assert d.kind == decision_pb2.DECISION_KIND_REENGAGEMENT
    _, e = await x.explain(APP, decision_id=d.decision_id)
    assert verdicts(e) == {
        "r1": V.VERDICT_WINNER,
        "r_ua": V.VERDICT_NOT_RETARGETING,
        "c1": V.VERDICT_NOT_RETARGETING,
    }


async def test_a_simulation_answers_the_changed_installs_and_changes_nothing() -> None:
    m, x = await setup()
    m.store.add_touch(touch("c_3d", 3 * DAY))
    m.store.add_touch(touch("c_1h", HOUR, gaid=GAIDS[1]))
    await m.engine.decide_install(install("i_3d"))
    await m.engine.decide_install(install("i_1h", GAIDS[1]))
    records = {k: r.SerializeToString() for k, r in m.store.records.items()}
    outbox, jobs = list(m.store.outbox), dict(m.postbacks.jobs)
    change = app_pb2.AppSettings(click_lookback=micros_to_dur(DAY))
    pages = await simulate(x, change, "click_lookback")
    last = pages[-1]
    assert (last.done, last.examined, last.changed, last.not_replayable) == (True, 2, 1, 0)
    (item,) = [i for p in pages for i in p.installs]
    assert (item.install_id, item.before.media_source, item.after.media_source) == (
        "i_3d",
        "networka",
        "organic",
    )
    assert verdicts(item.after_explanation) == {"c_3d": V.VERDICT_OUTSIDE_WINDOW}
    assert item.after_explanation.candidates[0].window.ToSeconds() == 86400
    assert last.settings.click_lookback.ToSeconds() == 86400
    # Nothing was written, queued or changed; the live settings are as they were.
    assert {k: r.SerializeToString() for k, r in m.store.records.items()} == records
    assert (m.store.outbox, m.postbacks.jobs) == (outbox, jobs)
    assert not (await m.engine.apps.get(APP)).app.settings.HasField("click_lookback")


async def test_an_install_whose_touches_expired_is_not_replayable() -> None:
    m, x = await setup()
    m.store.add_touch(touch("c1", HOUR))
    await m.engine.decide_install(install("i1"))
    m.store.touches.clear()  # the click expired
    pages = await simulate(x)
    (item,) = [i for p in pages for i in p.installs]
    assert item.not_replayable and list(item.missing_click_ids) == ["c1"]
    assert pages[-1].not_replayable == 1 and pages[-1].changed == 0


async def test_a_simulated_change_is_validated_like_an_update() -> None:
    _, x = await setup()
    with pytest.raises(InvalidArgument):
        await simulate(
            x, app_pb2.AppSettings(click_lookback=micros_to_dur(90 * DAY)), "click_lookback"
        )
    with pytest.raises(InvalidArgument):
        await simulate(x, app_pb2.AppSettings(), "no_such_setting")


# --- the property: replaying under the same settings changes nothing ---------


@dataclass(frozen=True)
class Step:
    kind: str  # "touch" or "install"
    gaid: str
    source: str
    ago: int
    ip: str
    impression: bool
    retargeting: bool


steps = st.lists(
    st.builds(
        Step,
        kind=st.sampled_from(["touch", "touch", "install"]),
        gaid=st.sampled_from([*GAIDS, ""]),
        source=st.sampled_from(SOURCES),
        ago=st.integers(min_value=0, max_value=10 * DAY),
        ip=st.sampled_from(["", "203.0.113.9", "203.0.113.10"]),
        impression=st.booleans(),
        retargeting=st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


async def _replay_unchanged(timeline: list[Step]) -> None:
    m, x = await setup(view_lookback=micros_to_dur(DAY))
    decided = 0
    for n, s in enumerate(timeline):
        if s.kind == "touch":
            kind = touch_pb2.TOUCH_TYPE_IMPRESSION if s.impression else touch_pb2.TOUCH_TYPE_CLICK
            m.store.add_touch(touch(f"c{n}", s.ago, s.source, s.gaid, s.ip, kind, s.retargeting))
        elif s.gaid or s.ip:
            await m.engine.decide_install(install(f"i{n}", s.gaid, s.ip))
            decided += 1
    pages = await simulate(x)
    assert pages[-1].examined == decided
    assert [i.install_id for p in pages for i in p.installs] == []


@settings(max_examples=200, deadline=None)
@given(steps)
def test_simulating_no_change_changes_no_replayable_install(timeline: list[Step]) -> None:
    asyncio.run(_replay_unchanged(timeline))
