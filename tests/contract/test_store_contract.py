"""The store backend contract: the same tests against SQLite and against a
real Cassandra (started by scripts/cassandra.sh; see tests/conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, postback_pb2, touch_pb2
from lookback.core.convert import micros_to_ts
from lookback.core.errors import Unavailable
from lookback.domain.durations import DAY, HOUR, SECOND
from lookback.touchpoint_store.backend import DecisionFilter, InstallQuery, StoreBackend
from lookback.touchpoint_store.cassandra import CassandraBackend
from lookback.touchpoint_store.sqlite import SqliteBackend
from tests.backends import CassandraNode

NOW = 1_780_000_000 * SECOND


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app() -> str:
    return f"app-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "cassandra"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[StoreBackend]:
    b: StoreBackend
    if request.param == "sqlite":
        b = SqliteBackend(tmp_path / "store.sqlite3", clock=clock)
    else:
        node: CassandraNode = request.getfixturevalue("cassandra")
        b = CassandraBackend(node.settings(), clock=clock)
    await b.open()
    yield b
    await b.close()


def touch(
    app: str, click_id: str, at: int, kind: int = touch_pb2.TOUCH_TYPE_CLICK, received: int = NOW
) -> store_pb.IndexedTouch:
    t = touch_pb2.Touch(
        app_id=app,
        click_id=click_id,
        type=kind,
        media_source="networka",  # type: ignore[arg-type]
        engaged_at=micros_to_ts(at),
        received_at=micros_to_ts(received),
    )
    return store_pb.IndexedTouch(touch=t, match_keys=["gaid:x", "ip:1.2.3.4"])


def record(app: str, install_id: str, at: int) -> store_pb.InstallRecord:
    d = decision_pb2.Decision(
        decision_id=f"d-{install_id}",
        app_id=app,
        install_id=install_id,
        kind=decision_pb2.DECISION_KIND_INSTALL,
        media_source="networka",
        event_time=micros_to_ts(at),
    )
    return store_pb.InstallRecord(
        install=install_pb2.Install(
            app_id=app, install_id=install_id, installed_at=micros_to_ts(at)
        ),
        match_keys=["gaid:x"],
        decision=d,
        attributed_decision=d,
    )


async def test_touches_found_by_key_and_by_click_id(backend: StoreBackend, app: str) -> None:
    assert (
        await backend.put_touches([touch(app, "c1", NOW - HOUR), touch(app, "c2", NOW - 2 * DAY)])
        == 2
    )
    found = await backend.find_touches(app, ["gaid:x"], [], NOW - DAY, NOW)
    assert [t.click_id for t in found] == ["c1"]
    found = await backend.find_touches(app, [], ["c2"], NOW - DAY, NOW)
    assert [t.click_id for t in found] == ["c2"]  # named click ids come back whatever their time
    assert await backend.find_touches(app + "-other", ["gaid:x"], ["c1"], 0, NOW) == []


async def test_touches_found_by_several_keys_and_click_ids_at_once(
    backend: StoreBackend, app: str
) -> None:
    by_sha1, by_md5, by_ip, elsewhere = (touch(app, c, NOW - HOUR) for c in ("s", "m", "p", "e"))
    by_sha1.match_keys[:] = ["sha1:gaid:1"]
    by_md5.match_keys[:] = ["md5:gaid:1"]
    by_ip.match_keys[:] = ["ip:1.2.3.4"]
    elsewhere.match_keys[:] = ["sha1:gaid:2"]
    await backend.put_touches([by_sha1, by_md5, by_ip, elsewhere])
    found = await backend.find_touches(
        app, ["sha1:gaid:1", "md5:gaid:1", "ip:1.2.3.4", "ip:9.9.9.9"], ["e", "x"], NOW - DAY, NOW
    )
    assert sorted(t.click_id for t in found) == ["e", "m", "p", "s"]


async def test_a_stored_click_id_keeps_its_first_version(backend: StoreBackend, app: str) -> None:
    await backend.put_touches([touch(app, "c1", NOW - HOUR, received=NOW - 10)])
    await backend.put_touches([touch(app, "c1", NOW - 2 * HOUR, received=NOW)])
    (found,) = await backend.find_touches(app, [], ["c1"], 0, NOW)
    assert found.engaged_at == micros_to_ts(NOW - HOUR)
    by_key = await backend.find_touches(app, ["gaid:x"], [], 0, NOW)
    assert [t.engaged_at for t in by_key] == [micros_to_ts(NOW - HOUR)]


async def test_a_large_batch_is_stored_whole(backend: StoreBackend, app: str) -> None:
    items = [touch(app, f"c{i}", NOW - HOUR) for i in range(1500)]
    for i, item in enumerate(items):
        item.match_keys[:] = [f"gaid:{i}"]
    assert await backend.put_touches(items) == 1500
    found = await asyncio.gather(
        *(backend.find_touches(app, [f"gaid:{i}"], [], 0, NOW) for i in range(0, 1500, 149))
    )
    assert [f[0].click_id for f in found] == [f"c{i}" for i in range(0, 1500, 149)]


async def test_sqlite_retention_expires_by_each_records_own_time(
    tmp_path: Path, clock: Clock, app: str
) -> None:
    # (Cassandra expires by TTL in real time: tests/integration/test_cassandra.py checks its TTLs.)
    # Each keeps a day's margin past its longest window for late reports.
    backend = SqliteBackend(tmp_path / "store.sqlite3", clock=clock)
    await backend.open()
    await backend.put_touches(
        [touch(app, "c", NOW), touch(app, "v", NOW, touch_pb2.TOUCH_TYPE_IMPRESSION)]
    )
    clock.now = NOW + 2 * DAY - 1
    found = await backend.find_touches(app, ["gaid:x"], [], 0, clock.now)
    assert sorted(t.click_id for t in found) == ["c", "v"]
    clock.now = NOW + 2 * DAY + 1
    assert [t.click_id for t in await backend.find_touches(app, ["gaid:x"], [], 0, clock.now)] == [
        "c"
    ]
    clock.now = NOW + 31 * DAY + 1
    assert await backend.find_touches(app, ["gaid:x"], ["c"], 0, clock.now) == []
    assert await backend.purge_expired() > 0
    await backend.close()


async def test_install_records_are_created_exactly_once(backend: StoreBackend, app: str) -> None:
    created, _ = await backend.create_install_record(record(app, "i1", NOW))
    assert created
    again = record(app, "i1", NOW)
    again.decision.decision_id = "other"
    created, stored = await backend.create_install_record(again)
    assert not created
    assert stored.decision.decision_id == "d-i1"


async def test_concurrent_creates_of_one_install_keep_one(backend: StoreBackend, app: str) -> None:
    attempts = []
    for n in range(20):
        r = record(app, "race", NOW)
        r.decision.decision_id = f"d{n}"
        attempts.append(backend.create_install_record(r))
    results = await asyncio.gather(*attempts)
    winners = [r for created, r in results if created]
    assert len(winners) == 1
    assert {r.decision.decision_id for _, r in results} == {winners[0].decision.decision_id}


async def test_gather_returns_existing_or_candidates_and_prior(
    backend: StoreBackend, app: str
) -> None:
    await backend.create_install_record(record(app, "old", NOW - 10 * DAY))
    await backend.put_touches([touch(app, "c1", NOW - HOUR)])
    facts = await backend.gather_install_facts(
        InstallQuery(app, "new", ["gaid:x"], [], NOW - DAY, NOW, ["gaid:x"])
    )
    assert facts.existing is None
    assert [t.click_id for t in facts.touches] == ["c1"]
    assert [r.install.install_id for r in facts.prior] == ["old"]
    facts = await backend.gather_install_facts(
        InstallQuery(app, "old", ["gaid:x"], [], NOW - DAY, NOW, ["gaid:x"])
    )
    assert "old" not in [r.install.install_id for r in facts.prior]
    if facts.existing is not None:  # SQLite reads it; Cassandra leaves it to the create
        assert facts.existing.decision.decision_id == "d-old"


async def test_a_duplicate_install_gets_the_original_decision(
    backend: StoreBackend, app: str
) -> None:
    """What the decider does with the facts: an install id decided before
    answers its first decision, whether the backend reported it as
    ``existing`` or the create (Cassandra: the lightweight transaction's
    not-applied row) did."""
    await backend.put_touches([touch(app, "c1", NOW - HOUR)])
    assert (await backend.create_install_record(record(app, "i1", NOW)))[0]

    facts = await backend.gather_install_facts(
        InstallQuery(app, "i1", ["gaid:x"], [], NOW - DAY, NOW, [])
    )
    if facts.existing is not None:
        original = facts.existing
    else:
        again = record(app, "i1", NOW + SECOND)
        again.decision.decision_id = "d-again"
        created, original = await backend.create_install_record(again)
        assert not created
    assert original.decision.decision_id == "d-i1"
    assert original.install.installed_at == micros_to_ts(NOW)
    stored = await backend.get_install_record(app, "i1")
    assert stored is not None and stored.decision.decision_id == "d-i1"
    # The device index names the original decision, not the duplicate's.
    facts = await backend.gather_install_facts(InstallQuery(app, "i2", [], [], 0, NOW, ["gaid:x"]))
    assert {r.decision.decision_id for r in facts.prior} == {"d-i1"}


async def test_prior_installs_newest_first_from_every_key(backend: StoreBackend, app: str) -> None:
    for n, age in enumerate((30, 10, 20)):
        await backend.create_install_record(record(app, f"i{n}", NOW - age * DAY))
    other = record(app, "i3", NOW - 5 * DAY)
    other.match_keys[:] = ["gaid:y", "idfv:y"]
    await backend.create_install_record(other)
    facts = await backend.gather_install_facts(
        InstallQuery(app, "new", [], [], 0, NOW, ["gaid:x", "gaid:y", "idfv:y", "gaid:none"])
    )
    assert [r.install.install_id for r in facts.prior] == ["i3", "i1", "i2", "i0"]


async def test_open_decisions_and_events(backend: StoreBackend, app: str) -> None:
    await backend.create_install_record(record(app, "i1", NOW - DAY))
    reengage = decision_pb2.Decision(
        decision_id="r1", kind=decision_pb2.DECISION_KIND_REENGAGEMENT, media_source="networkb"
    )
    updated = await backend.record_open_decision(
        install_pb2.Open(app_id=app, install_id="i1"), reengage
    )
    assert updated is not None and updated.latest_reengagement.decision_id == "r1"
    stored = await backend.get_install_record(app, "i1")
    assert stored is not None and stored.latest_reengagement.decision_id == "r1"
    missing = install_pb2.Open(app_id=app, install_id="nope")
    assert await backend.record_open_decision(missing, reengage) is None
    event = install_pb2.InAppEvent(
        app_id=app, install_id="i1", event_id="e1", name="buy", occurred_at=micros_to_ts(NOW)
    )
    created, _ = await backend.put_event(
        event, decision_pb2.EventAttribution(media_source="networka")
    )
    assert created
    created, kept = await backend.put_event(event, decision_pb2.EventAttribution(media_source="x"))
    assert not created and kept.media_source == "networka"


async def test_apps_create_get_and_replace_with_versions(backend: StoreBackend, app: str) -> None:
    a = app_pb2.App(app_id=app, platform=app_pb2.PLATFORM_IOS, version=1)
    assert await backend.create_app(a)
    assert not await backend.create_app(a)
    got = await backend.get_app(app)
    assert got is not None and got.platform == app_pb2.PLATFORM_IOS
    a.version = 2
    assert await backend.replace_app(a, expected_version=1)
    assert not await backend.replace_app(a, expected_version=1)
    assert await backend.get_app(app + "-missing") is None
    assert await backend.healthy()


# --- the outcomes log (the outbox) and the decision index --------------------


def job(app: str, job_id: str) -> postback_pb2.PostbackJob:
    return postback_pb2.PostbackJob(
        job_id=job_id,
        app_id=app,
        partner="networka",
        trigger=postback_pb2.POSTBACK_TRIGGER_INSTALL,
        url=f"https://partner.example/pb?id={job_id}",
        method=postback_pb2.HTTP_METHOD_GET,
    )


def decided(
    app: str,
    install_id: str,
    at: int,
    kind: int = decision_pb2.DECISION_KIND_INSTALL,
    media_source: str = "networka",
) -> store_pb.InstallRecord:
    r = record(app, install_id, at)
    r.decision.decided_at.CopyFrom(micros_to_ts(at))
    r.decision.kind = kind  # type: ignore[assignment]
    r.decision.media_source = media_source
    r.attributed_decision.CopyFrom(r.decision)
    return r


async def read_all(backend: StoreBackend, app: str, limit: int = 0) -> list[store_pb.Outcome]:
    out: list[store_pb.Outcome] = []
    cursor = ""
    while True:
        page, cursor = await backend.read_outcomes(app, cursor, limit)
        if not page:
            return out
        out += page


def source(o: store_pb.Outcome) -> str:
    return o.decision.decision_id if o.HasField("decision") else f"event:{o.event.event_id}"


async def test_a_created_install_appends_one_outcome_with_its_postbacks(
    backend: StoreBackend, app: str
) -> None:
    created, _ = await backend.create_install_record(
        decided(app, "i1", NOW - SECOND), [job(app, "j1"), job(app, "j2")]
    )
    assert created
    (entry,), cursor = await backend.read_outcomes(app, "", 0)
    assert entry.decision.decision_id == "d-i1"
    assert [j.job_id for j in entry.postbacks] == ["j1", "j2"]
    assert entry.record_time == micros_to_ts(NOW)
    assert entry.cursor and cursor == entry.cursor
    assert await backend.read_outcomes(app, cursor, 0) == ([], cursor)
    assert await backend.read_outcomes(app + "-other", "", 0) == ([], "")


async def test_a_not_created_install_appends_nothing(backend: StoreBackend, app: str) -> None:
    await backend.create_install_record(decided(app, "i1", NOW - SECOND), [job(app, "j1")])
    duplicate = decided(app, "i1", NOW)
    duplicate.decision.decision_id = "d-duplicate"
    created, _ = await backend.create_install_record(duplicate, [job(app, "j2")])
    assert not created
    assert [source(o) for o in await read_all(backend, app)] == ["d-i1"]


async def test_a_retried_create_keeps_one_entry(backend: StoreBackend, app: str) -> None:
    """The same create twice (its first answer lost): one entry, the same one."""
    r = decided(app, "i1", NOW - SECOND)
    assert (await backend.create_install_record(r, [job(app, "j1")]))[0]
    (first,), _ = await backend.read_outcomes(app, "", 0)
    created, stored = await backend.create_install_record(r, [job(app, "j1")])
    assert not created and stored.decision.decision_id == "d-i1"  # the servicer answers created
    (again,) = await read_all(backend, app)
    assert again.cursor == first.cursor
    assert [j.job_id for j in again.postbacks] == ["j1"]


async def test_cassandra_rewrites_an_outcome_lost_after_the_transaction(
    request: pytest.FixtureRequest, clock: Clock, app: str
) -> None:
    """The install's transaction applied, then the outcome write failed: the
    retried create (which finds its own decision) writes it."""
    node: CassandraNode = request.getfixturevalue("cassandra")
    backend = CassandraBackend(node.settings(), clock=clock)
    await backend.open()
    try:
        logged = backend._logged

        async def lost(rows: object) -> None:
            raise Unavailable("Cassandra: lost")

        backend._logged = lost  # type: ignore[method-assign,assignment]
        r = decided(app, "i1", NOW - SECOND)
        with pytest.raises(Unavailable):
            await backend.create_install_record(r, [job(app, "j1")])
        assert await read_all(backend, app) == []
        backend._logged = logged  # type: ignore[method-assign]
        created, stored = await backend.create_install_record(r, [job(app, "j1")])
        assert not created and stored.decision.decision_id == "d-i1"
        (entry,) = await read_all(backend, app)
        assert entry.decision.decision_id == "d-i1"
        assert [j.job_id for j in entry.postbacks] == ["j1"]
    finally:
        await backend.close()


async def test_outcomes_read_in_order_from_a_cursor(backend: StoreBackend, app: str) -> None:
    for n in range(7):
        await backend.create_install_record(decided(app, f"i{n}", NOW - (10 - n) * SECOND))
    await backend.create_install_record(decided(app + "-other", "x", NOW - SECOND))
    everything = await read_all(backend, app, limit=3)
    assert [source(o) for o in everything] == [f"d-i{n}" for n in range(7)]
    page, cursor = await backend.read_outcomes(app, "", 3)
    assert [source(o) for o in page] == ["d-i0", "d-i1", "d-i2"]
    page, cursor = await backend.read_outcomes(app, cursor, 3)
    assert [source(o) for o in page] == ["d-i3", "d-i4", "d-i5"]
    page, cursor = await backend.read_outcomes(app, everything[1].cursor, 100)
    assert [source(o) for o in page] == [f"d-i{n}" for n in range(2, 7)]
    assert cursor == everything[-1].cursor
    assert await backend.read_outcomes(app, cursor, 100) == ([], cursor)


async def test_opens_and_events_are_in_the_log(backend: StoreBackend, app: str) -> None:
    await backend.create_install_record(decided(app, "i1", NOW - 3 * SECOND))
    opened = install_pb2.Open(app_id=app, install_id="i1")
    reengage = decision_pb2.Decision(
        decision_id="r1",
        app_id=app,
        kind=decision_pb2.DECISION_KIND_REENGAGEMENT,
        media_source="networkb",
        decided_at=micros_to_ts(NOW - 2 * SECOND),
    )
    nothing = decision_pb2.Decision(
        decision_id="n1",
        app_id=app,
        kind=decision_pb2.DECISION_KIND_NONE,
        decided_at=micros_to_ts(NOW - SECOND),
    )
    assert await backend.record_open_decision(opened, reengage, [job(app, "j-r1")]) is not None
    assert await backend.record_open_decision(opened, nothing) is not None
    unknown = install_pb2.Open(app_id=app, install_id="nope")
    assert await backend.record_open_decision(unknown, reengage) is None
    event = install_pb2.InAppEvent(
        app_id=app, install_id="i1", event_id="e1", name="buy", occurred_at=micros_to_ts(NOW)
    )
    attribution = decision_pb2.EventAttribution(event_id="e1", media_source="networka")
    assert (await backend.put_event(event, attribution, [job(app, "j-e1")]))[0]
    assert not (await backend.put_event(event, attribution, [job(app, "j-e1")]))[0]
    log = await read_all(backend, app)
    assert [source(o) for o in log] == ["d-i1", "r1", "n1", "event:e1"]
    assert [[j.job_id for j in o.postbacks] for o in log] == [[], ["j-r1"], [], ["j-e1"]]
    assert log[3].event.media_source == "networka"
    stored = await backend.get_install_record(app, "i1")
    assert stored is not None and stored.latest_reengagement.decision_id == "r1"


async def test_get_decision_by_id(backend: StoreBackend, app: str) -> None:
    await backend.create_install_record(decided(app, "i1", NOW - 3 * SECOND))
    reengage = decision_pb2.Decision(
        decision_id="r1",
        kind=decision_pb2.DECISION_KIND_REENGAGEMENT,
        decided_at=micros_to_ts(NOW - SECOND),
    )
    await backend.record_open_decision(install_pb2.Open(app_id=app, install_id="i1"), reengage)
    found = await backend.get_decision(app, "d-i1")
    assert found is not None and found.install_id == "i1"
    found = await backend.get_decision(app, "r1")
    assert found is not None and found.kind == decision_pb2.DECISION_KIND_REENGAGEMENT
    assert await backend.get_decision(app, "nope") is None
    assert await backend.get_decision(app + "-other", "d-i1") is None


async def list_all(
    backend: StoreBackend, app: str, which: DecisionFilter, page_size: int
) -> list[list[str]]:
    pages = []
    token = ""
    while True:
        decisions, token = await backend.list_decisions(app, which, page_size, token)
        pages.append([d.decision_id for d in decisions])
        if not token:
            return pages


def flat(pages: list[list[str]]) -> list[str]:
    return [item for page in pages for item in page]


async def test_list_decisions_newest_first_filtered_and_paged(
    backend: StoreBackend, app: str
) -> None:
    kinds = (decision_pb2.DECISION_KIND_INSTALL, decision_pb2.DECISION_KIND_REATTRIBUTION)
    sources = ("networka", "organic", "networkb")
    for n in range(25):  # i0 is the oldest, one per 10 minutes (several day buckets)
        at = NOW - (25 - n) * 10 * 60 * SECOND
        await backend.create_install_record(decided(app, f"i{n}", at, kinds[n % 2], sources[n % 3]))
    nothing = decision_pb2.Decision(
        decision_id="n1", kind=decision_pb2.DECISION_KIND_NONE, decided_at=micros_to_ts(NOW)
    )
    await backend.record_open_decision(install_pb2.Open(app_id=app, install_id="i0"), nothing)
    newest_first = [f"d-i{n}" for n in reversed(range(25))]
    everything = DecisionFilter(start=NOW - DAY, end=NOW + SECOND)

    pages = await list_all(backend, app, everything, 10)
    assert [len(p) for p in pages] == [10, 10, 5]
    assert flat(pages) == newest_first  # no overlap, no gap, kind NONE left out
    assert await list_all(backend, app, everything, 25) == [newest_first]
    assert await list_all(backend, app, everything, 0) == [newest_first]

    reattributions = DecisionFilter(start=NOW - DAY, end=NOW + SECOND, kinds=frozenset({kinds[1]}))
    expected = [f"d-i{n}" for n in reversed(range(25)) if n % 2 == 1]
    assert flat(await list_all(backend, app, reattributions, 4)) == expected
    organic = DecisionFilter(start=NOW - DAY, end=NOW + SECOND, media_source="organic")
    expected = [f"d-i{n}" for n in reversed(range(25)) if n % 3 == 1]
    assert flat(await list_all(backend, app, organic, 3)) == expected
    both = DecisionFilter(
        start=NOW - DAY, end=NOW + SECOND, kinds=frozenset({kinds[1]}), media_source="organic"
    )
    assert flat(await list_all(backend, app, both, 10)) == ["d-i19", "d-i13", "d-i7", "d-i1"]
    nones = DecisionFilter(
        start=NOW - DAY, end=NOW + SECOND, kinds=frozenset({decision_pb2.DECISION_KIND_NONE})
    )
    assert await list_all(backend, app, nones, 10) == [["n1"]]
    # [start, end): i10 (at NOW - 150 min) to i14 (NOW - 110 min), i15 excluded
    window = DecisionFilter(start=NOW - 150 * 60 * SECOND, end=NOW - 100 * 60 * SECOND)
    assert flat(await list_all(backend, app, window, 2)) == [
        f"d-i{n}" for n in (14, 13, 12, 11, 10)
    ]
    assert await backend.list_decisions(app + "-other", everything, 10, "") == ([], "")


async def test_every_app_is_listed_once_in_pages(backend: StoreBackend, app: str) -> None:
    """ListApps (for the relay): pages of a stable order, each app once."""
    prefix = f"{app}.list"
    mine = {f"{prefix}{i}" for i in range(7)}
    for app_id in mine:
        assert await backend.create_app(
            app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID, version=1)
        )
    seen: list[str] = []
    after = ""
    while True:
        page = await backend.list_apps(after, 3)
        assert len(page) <= 3
        seen += page
        if len(page) < 3:
            break
        after = page[-1]
    assert len(seen) == len(set(seen))  # nothing twice
    assert mine <= set(seen)  # the other tests' apps are there too
