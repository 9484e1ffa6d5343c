"""The decision engine on in-memory parts: the whole orchestration (facts,
rules, exactly-once records, postbacks) without processes or gRPC."""

from __future__ import annotations

import asyncio

from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, touch_pb2
from lookback.core.clock import now_micros
from lookback.core.convert import micros_to_ts
from lookback.domain.durations import DAY, HOUR
from lookback.domain.model import SrnClaim, TouchType
from lookback.testing.memory import FixedClaims, MemoryEngine, memory_engine

GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
APP = "com.example.engine"


async def setup(**settings: object) -> MemoryEngine:
    m = memory_engine(claims=FixedClaims())
    app = app_pb2.App(app_id=APP, platform=app_pb2.PLATFORM_ANDROID)
    # A literal public address: destinations are checked (names resolved) when written.
    app.settings.postbacks["networka"].install.url = "https://93.184.216.34/i?c={click_id}&k={kind}"
    app.settings.postbacks[
        "networka"
    ].event.url = "https://93.184.216.34/e?n={event_name}&r={event_revenue}"
    app.settings.postbacks["networka"].reengagement.url = "https://93.184.216.34/r?c={click_id}"
    for name, value in settings.items():
        setattr(app.settings, name, value)
    await m.engine.apps.create(app)
    return m


def click(click_id: str, ago: int, gaid: str = GAID, retargeting: bool = False) -> touch_pb2.Touch:
    t = touch_pb2.Touch(
        app_id=APP,
        type=touch_pb2.TOUCH_TYPE_CLICK,
        media_source="networka",
        campaign="spring",
        click_id=click_id,
        is_retargeting=retargeting,
        engaged_at=micros_to_ts(now_micros() - ago),
    )
    t.device.gaid = gaid
    return t


def install(install_id: str, gaid: str = GAID, ago: int = 0) -> install_pb2.Install:
    i = install_pb2.Install(
        app_id=APP, install_id=install_id, installed_at=micros_to_ts(now_micros() - ago)
    )
    i.device.gaid = gaid
    return i


async def test_a_click_wins_is_recorded_and_its_postback_queued() -> None:
    m = await setup()
    m.store.add_touch(click("c1", HOUR))
    d = await m.engine.decide_install(install("i1"))
    assert (d.kind, d.media_source, d.click_id) == (
        decision_pb2.DECISION_KIND_INSTALL,
        "networka",
        "c1",
    )
    assert d.method == decision_pb2.ATTRIBUTION_METHOD_DEVICE_ID and d.counted
    assert m.store.records[(APP, "i1")].decision.decision_id == d.decision_id
    (job,) = m.postbacks.jobs.values()
    assert job.url == "https://93.184.216.34/i?c=c1&k=install"
    assert job.job_id == f"{d.decision_id}:networka:install"


async def test_organic_install_sends_nothing() -> None:
    m = await setup()
    m.store.add_touch(click("old", 8 * DAY))  # outside the 7-day window
    d = await m.engine.decide_install(install("i1"))
    assert d.media_source == "organic" and not d.counted
    assert m.postbacks.jobs == {}
    assert (APP, "i1") in m.store.records


async def test_concurrent_reports_make_one_decision() -> None:
    m = await setup()
    m.store.add_touch(click("c1", HOUR))
    decisions = await asyncio.gather(*(m.engine.decide_install(install("i1")) for _ in range(10)))
    assert len({d.decision_id for d in decisions}) == 1
    kinds = sorted(d.kind for d in decisions)
    assert kinds.count(decision_pb2.DECISION_KIND_INSTALL) == 1
    assert kinds.count(decision_pb2.DECISION_KIND_DUPLICATE) == 9
    assert len(m.store.records) == 1 and len(m.postbacks.jobs) == 1


async def test_another_replica_answers_duplicate_and_hands_postbacks_again() -> None:
    m = await setup()
    m.store.add_touch(click("c1", HOUR))
    first = await m.engine.decide_install(install("i1"))
    again = await m.replica().decide_install(install("i1"))
    assert again.kind == decision_pb2.DECISION_KIND_DUPLICATE and not again.counted
    assert (again.decision_id, again.click_id) == (first.decision_id, "c1")
    # Handed over twice (the first caller may have failed in between), queued once.
    assert m.postbacks.handed == 2 and len(m.postbacks.jobs) == 1


async def test_srn_claims_are_asked_for_and_unanswered_networks_noted() -> None:
    m = await setup()
    app = await m.store.get_app(APP)
    app.settings.srn_networks.extend(["srn_social", "srn_video"])
    m.engine.apps.cache.clear()
    m.claims.claims.append(
        SrnClaim("srn_social", TouchType.CLICK, now_micros() - HOUR, campaign="feed")
    )
    m.claims.unanswered = ("srn_video",)
    d = await m.engine.decide_install(install("i1"))
    assert (d.media_source, d.campaign, d.method) == (
        "srn_social",
        "feed",
        decision_pb2.ATTRIBUTION_METHOD_SRN,
    )
    assert list(d.unanswered_srns) == ["srn_video"] and m.claims.asked == 1


async def test_a_reinstall_keeps_the_original_attribution() -> None:
    m = await setup()
    m.store.add_touch(click("c1", 2 * DAY))
    first = await m.engine.decide_install(install("i1"))
    second = await m.engine.decide_install(install("i2"))
    assert second.kind == decision_pb2.DECISION_KIND_REINSTALL and not second.counted
    record = m.store.records[(APP, "i2")]
    assert record.attributed_decision.decision_id == first.decision_id
    assert len(m.postbacks.jobs) == 1


async def test_an_open_through_a_retargeting_click_is_a_reengagement() -> None:
    m = await setup()
    await m.engine.decide_install(install("i1", ago=2 * DAY))
    m.store.add_touch(click("rt1", HOUR, retargeting=True))
    open_ = install_pb2.Open(
        app_id=APP, install_id="i1", opened_at=micros_to_ts(now_micros()), deep_link_click_id="rt1"
    )
    open_.device.gaid = GAID
    d = await m.engine.decide_open(open_)
    assert d.kind == decision_pb2.DECISION_KIND_REENGAGEMENT and d.click_id == "rt1"
    record = m.store.records[(APP, "i1")]
    assert record.latest_reengagement.decision_id == d.decision_id
    assert any(j.url == "https://93.184.216.34/r?c=rt1" for j in m.postbacks.jobs.values())


async def test_events_are_attributed_once_with_their_postback() -> None:
    m = await setup()
    m.store.add_touch(click("c1", HOUR))
    await m.engine.decide_install(install("i1"))
    event = install_pb2.InAppEvent(
        app_id=APP,
        install_id="i1",
        event_id="e1",
        name="purchase",
        revenue="4.99",
        currency="USD",
        occurred_at=micros_to_ts(now_micros()),
    )
    first = await m.engine.attribute_event(event)
    again = await m.engine.attribute_event(event)
    assert first.media_source == "networka" and not first.duplicate
    assert again.duplicate and again.media_source == "networka"
    assert m.postbacks.jobs[f"event:{APP}:e1:networka:event"].url == (
        "https://93.184.216.34/e?n=purchase&r=4.99"
    )


async def test_postbacks_are_recorded_with_their_decision() -> None:
    """The jobs go into the same write as the decision (the outcomes log is
    the outbox), whatever becomes of the hand-over to the dispatcher."""
    m = await setup()
    m.store.add_touch(click("c1", HOUR))
    d = await m.engine.decide_install(install("i1"))
    (recorded,) = m.store.outbox
    assert recorded.job_id == f"{d.decision_id}:networka:install"
    assert recorded == m.postbacks.jobs[recorded.job_id]
    # A duplicate report records nothing more; an organic install nothing at all.
    await m.engine.decide_install(install("i1"))
    await m.engine.decide_install(install("i2", gaid="00000000-0000-4000-8000-000000000002"))
    assert len(m.store.outbox) == 1


async def test_a_failed_hand_over_is_not_the_callers_failure() -> None:
    """The dispatcher down: the decision is answered and recorded with its
    jobs (for the relay), not refused."""
    m = await setup()
    m.store.add_touch(click("c1", HOUR))
    m.postbacks.down = True
    d = await m.engine.decide_install(install("i1"))
    assert d.media_source == "networka" and d.counted
    assert m.postbacks.jobs == {}
    (recorded,) = m.store.outbox
    assert recorded.job_id == f"{d.decision_id}:networka:install"
