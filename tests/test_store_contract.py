"""The store backend contract. Every backend must pass these (SQLite now;
Cassandra joins the ``backend`` fixture's parameters)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, touch_pb2
from lookback.core.convert import micros_to_ts
from lookback.domain.durations import DAY, HOUR, SECOND
from lookback.touchpoint_store.sqlite import SqliteBackend

NOW = 1_780_000_000 * SECOND


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[SqliteBackend]:
    b = SqliteBackend(tmp_path / "store.sqlite3", clock=clock)
    await b.open()
    yield b
    await b.close()


def touch(click_id: str, at: int, kind: int = touch_pb2.TOUCH_TYPE_CLICK) -> store_pb.IndexedTouch:
    t = touch_pb2.Touch(
        app_id="app",
        click_id=click_id,
        type=kind,
        media_source="networka",  # type: ignore[arg-type]
        engaged_at=micros_to_ts(at),
    )
    return store_pb.IndexedTouch(touch=t, match_keys=["gaid:x", "ip:1.2.3.4"])


def record(
    install_id: str, at: int, kind: int = decision_pb2.DECISION_KIND_INSTALL
) -> store_pb.InstallRecord:
    d = decision_pb2.Decision(
        decision_id=f"d-{install_id}",
        app_id="app",
        install_id=install_id,
        kind=kind,
        media_source="networka",
        event_time=micros_to_ts(at),
    )  # type: ignore[arg-type]
    return store_pb.InstallRecord(
        install=install_pb2.Install(
            app_id="app", install_id=install_id, installed_at=micros_to_ts(at)
        ),
        match_keys=["gaid:x"],
        decision=d,
        attributed_decision=d,
    )


async def test_touches_found_by_key_and_by_click_id(backend: SqliteBackend) -> None:
    assert await backend.put_touches([touch("c1", NOW - HOUR), touch("c2", NOW - 2 * DAY)]) == 2
    found = await backend.find_touches("app", ["gaid:x"], [], NOW - DAY, NOW)
    assert [t.click_id for t in found] == ["c1"]
    found = await backend.find_touches("app", [], ["c2"], NOW - DAY, NOW)
    assert [t.click_id for t in found] == ["c2"]  # named click ids come back whatever their time
    assert await backend.find_touches("other", ["gaid:x"], ["c1"], 0, NOW) == []


async def test_a_stored_click_id_keeps_its_first_version(backend: SqliteBackend) -> None:
    await backend.put_touches([touch("c1", NOW - HOUR)])
    assert await backend.put_touches([touch("c1", NOW - 2 * HOUR)]) == 0
    (found,) = await backend.find_touches("app", [], ["c1"], 0, NOW)
    assert found.engaged_at == micros_to_ts(NOW - HOUR)


async def test_retention_expires_impressions_after_a_day_and_clicks_after_30(
    backend: SqliteBackend, clock: Clock
) -> None:
    # Each keeps a day's margin past its longest window for late reports.
    await backend.put_touches([touch("c", NOW), touch("v", NOW, touch_pb2.TOUCH_TYPE_IMPRESSION)])
    clock.now = NOW + 2 * DAY - 1
    found = await backend.find_touches("app", ["gaid:x"], [], 0, clock.now)
    assert sorted(t.click_id for t in found) == ["c", "v"]
    clock.now = NOW + 2 * DAY + 1
    assert [
        t.click_id for t in await backend.find_touches("app", ["gaid:x"], [], 0, clock.now)
    ] == ["c"]
    clock.now = NOW + 31 * DAY + 1
    assert await backend.find_touches("app", ["gaid:x"], ["c"], 0, clock.now) == []
    assert await backend.purge_expired() > 0


async def test_install_records_are_created_exactly_once(backend: SqliteBackend) -> None:
    created, _ = await backend.create_install_record(record("i1", NOW))
    assert created
    again = record("i1", NOW)
    again.decision.decision_id = "other"
    created, stored = await backend.create_install_record(again)
    assert not created
    assert stored.decision.decision_id == "d-i1"


async def test_gather_returns_existing_or_candidates_and_prior(backend: SqliteBackend) -> None:
    await backend.create_install_record(record("old", NOW - 10 * DAY))
    await backend.put_touches([touch("c1", NOW - HOUR)])
    facts = await backend.gather_install_facts(
        "app", "new", ["gaid:x"], [], NOW - DAY, NOW, ["gaid:x"]
    )
    assert facts.existing is None
    assert [t.click_id for t in facts.touches] == ["c1"]
    assert [r.install.install_id for r in facts.prior] == ["old"]
    facts = await backend.gather_install_facts(
        "app", "old", ["gaid:x"], [], NOW - DAY, NOW, ["gaid:x"]
    )
    assert facts.existing is not None and facts.existing.decision.decision_id == "d-old"


async def test_open_decisions_and_events(backend: SqliteBackend) -> None:
    await backend.create_install_record(record("i1", NOW - DAY))
    reengage = decision_pb2.Decision(
        decision_id="r1", kind=decision_pb2.DECISION_KIND_REENGAGEMENT, media_source="networkb"
    )
    updated = await backend.record_open_decision(
        install_pb2.Open(app_id="app", install_id="i1"), reengage
    )
    assert updated is not None and updated.latest_reengagement.decision_id == "r1"
    assert (
        await backend.record_open_decision(
            install_pb2.Open(app_id="app", install_id="nope"), reengage
        )
        is None
    )
    event = install_pb2.InAppEvent(
        app_id="app", install_id="i1", event_id="e1", name="buy", occurred_at=micros_to_ts(NOW)
    )
    created, _ = await backend.put_event(
        event, decision_pb2.EventAttribution(media_source="networka")
    )
    assert created
    created, stored = await backend.put_event(
        event, decision_pb2.EventAttribution(media_source="x")
    )
    assert not created and stored.media_source == "networka"


async def test_apps_create_get_and_replace_with_versions(backend: SqliteBackend) -> None:
    app = app_pb2.App(app_id="a1", platform=app_pb2.PLATFORM_IOS, version=1)
    assert await backend.create_app(app)
    assert not await backend.create_app(app)
    got = await backend.get_app("a1")
    assert got is not None and got.platform == app_pb2.PLATFORM_IOS
    app.version = 2
    assert await backend.replace_app(app, expected_version=1)
    assert not await backend.replace_app(app, expected_version=1)
    assert await backend.get_app("missing") is None
