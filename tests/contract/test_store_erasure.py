"""Erasure and access at the store, on SQLite and on a real Cassandra: after
an erasure, a scan of every table (not the API) finds nothing of the
device; the other devices' records are untouched; access answers exactly
what was written (docs/privacy.md)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    decision_pb2,
    device_pb2,
    explanation_pb2,
    install_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core import convert
from lookback.core.convert import micros_to_ts
from lookback.domain import devices
from lookback.domain.durations import HOUR, MINUTE, SECOND
from lookback.testing.tables import Values, cassandra_values, sqlite_values, tables_holding
from lookback.touchpoint_store.backend import InstallQuery, StoreBackend
from lookback.touchpoint_store.cassandra import CassandraBackend
from lookback.touchpoint_store.erasure import touch_keys
from lookback.touchpoint_store.sqlite import SqliteBackend
from tests.backends import CassandraNode

NOW = 1_780_000_000 * SECOND


@pytest.fixture(params=["sqlite", "cassandra"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreBackend]:
    b: StoreBackend
    if request.param == "sqlite":
        b = SqliteBackend(tmp_path / "store.sqlite3", clock=lambda: NOW)
    else:
        node: CassandraNode = request.getfixturevalue("cassandra")
        b = CassandraBackend(node.settings(), clock=lambda: NOW)
    await b.open()
    yield b
    await b.close()


def _hex(algorithm: str, value: str) -> str:
    return hashlib.new(algorithm, value.lower().encode()).hexdigest()


@dataclass
class Device:
    """One device's records as written, and every string that would betray it."""

    app: str
    name: str
    gaid: str
    idfv: str
    ip: str
    install_id: str = ""
    click_ids: tuple[str, ...] = ()
    event_id: str = ""
    open_decision: str = ""

    def identifiers(self) -> device_pb2.DeviceIdentifiers:
        return device_pb2.DeviceIdentifiers(gaid=self.gaid, idfv=self.idfv)

    def keys(self) -> list[str]:
        return sorted(devices.erasure_keys(convert.device(self.identifiers())))

    def needles(self) -> list[str]:
        """Found nowhere once the device is erased."""
        out = [self.gaid, self.idfv, self.ip, self.install_id]
        out += [_hex(a, v) for a in ("sha1", "md5") for v in (self.gaid, self.idfv)]
        return out


def _touch(d: Device, click_id: str, at: int, device: device_pb2.DeviceIdentifiers) -> Any:
    t = touch_pb2.Touch(
        app_id=d.app,
        click_id=click_id,
        type=touch_pb2.TOUCH_TYPE_CLICK,
        media_source="networka",
        campaign="c1",
        engaged_at=micros_to_ts(at),
        received_at=micros_to_ts(at),
        device=device,
        ip=d.ip,
        user_agent="Mozilla/5.0 (Linux; Android 14)",
    )
    convert.hash_raw_ids(t.device)  # as the store's servicer does
    return store_pb.IndexedTouch(touch=t, match_keys=sorted(touch_keys(t)))


async def _populate(backend: StoreBackend, d: Device) -> None:
    """A click by the raw GAID, an impression by the MD5 of the GAID only, an
    install, a re-engagement with its explanation, an event."""
    md5_only = device_pb2.DeviceIdentifiers(
        hashed=[
            device_pb2.HashedIdentifier(
                type=device_pb2.DEVICE_ID_TYPE_GAID,
                algorithm=device_pb2.HASH_ALGORITHM_MD5,
                value=_hex("md5", d.gaid),
            )
        ]
    )
    d.click_ids = (f"{d.name}-click", f"{d.name}-md5")
    await backend.put_touches(
        [
            _touch(d, d.click_ids[0], NOW - 2 * HOUR, d.identifiers()),
            _touch(d, d.click_ids[1], NOW - HOUR, md5_only),
        ]
    )
    d.install_id = f"{d.name}-install-{uuid.uuid4().hex[:6]}"
    install = install_pb2.Install(
        app_id=d.app,
        install_id=d.install_id,
        installed_at=micros_to_ts(NOW - 30 * MINUTE),
        device=d.identifiers(),
        ip=d.ip,
    )
    decision = decision_pb2.Decision(
        decision_id=f"{d.name}-decision",
        app_id=d.app,
        install_id=d.install_id,
        kind=decision_pb2.DECISION_KIND_INSTALL,
        media_source="networka",
        click_id=d.click_ids[0],
        event_time=install.installed_at,
        decided_at=install.installed_at,
        counted=True,
    )
    record = store_pb.InstallRecord(
        install=install,
        match_keys=devices.install_keys(
            devices.install_device_keys(convert.device(install.device))
        ),
        decision=decision,
        attributed_decision=decision,
        explanation=explanation_pb2.Explanation(settings_version=1),
    )
    job = postback_pb2.PostbackJob(
        job_id=f"{decision.decision_id}:networka:install",
        app_id=d.app,
        url=f"https://partner.example/pb?install={d.install_id}",
        source_id=decision.decision_id,
    )
    created, _ = await backend.create_install_record(record, [job])
    assert created
    d.open_decision = f"{d.name}-reengagement"
    reengagement = decision_pb2.Decision(
        decision_id=d.open_decision,
        app_id=d.app,
        install_id=d.install_id,
        kind=decision_pb2.DECISION_KIND_REENGAGEMENT,
        media_source="networka",
        click_id=d.click_ids[1],
        decided_at=micros_to_ts(NOW - 10 * MINUTE),
    )
    opened = install_pb2.Open(
        app_id=d.app,
        install_id=d.install_id,
        opened_at=micros_to_ts(NOW - 10 * MINUTE),
        device=d.identifiers(),
        ip=d.ip,
    )
    explanation = explanation_pb2.Explanation(settings_version=2).SerializeToString()
    assert await backend.record_open_decision(opened, reengagement, [], explanation) is not None
    d.event_id = f"{d.name}-event"
    event = install_pb2.InAppEvent(
        app_id=d.app,
        install_id=d.install_id,
        event_id=d.event_id,
        name="purchase",
        occurred_at=micros_to_ts(NOW - 5 * MINUTE),
        revenue="1.5",
        currency="EUR",
    )
    attribution = decision_pb2.EventAttribution(
        event_id=d.event_id, media_source="networka", decision_id=decision.decision_id
    )
    created, _ = await backend.put_event(event, attribution, [])
    assert created


async def every_value(backend: StoreBackend, tmp_path: Path) -> Values:
    """Every value of every row of every table, read from the database itself."""
    if isinstance(backend, SqliteBackend):
        return sqlite_values(tmp_path / "store.sqlite3")
    assert isinstance(backend, CassandraBackend)
    s = backend.settings
    return await asyncio.to_thread(cassandra_values, s.hosts[0], s.port, s.keyspace)


async def test_erasure_leaves_nothing_of_the_device_in_any_table(
    backend: StoreBackend, tmp_path: Path
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    gone = Device(app, "gone", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.7")
    kept = Device(app, "kept", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.8")
    await _populate(backend, gone)
    await _populate(backend, kept)
    before = await backend.device_records(app, kept.keys())
    values = await every_value(backend, tmp_path)
    assert tables_holding(values, gone.install_id) and tables_holding(
        values, _hex("sha1", gone.gaid)
    )

    # By the raw GAID alone: the install record found by it adds its IDFV
    # and the MD5 form, which find the impression stored by MD5 only.
    by_gaid = devices.erasure_keys(convert.device(device_pb2.DeviceIdentifiers(gaid=gone.gaid)))
    erased = await backend.erase_devices(app, sorted(by_gaid), [], [])
    assert erased.install_ids == {gone.install_id}
    assert erased.click_ids == set(gone.click_ids)
    assert erased.decision_ids == {"gone-decision", gone.open_decision}
    assert erased.event_ids == {gone.event_id}
    assert erased.job_ids == {"gone-decision:networka:install"}

    values = await every_value(backend, tmp_path)
    for needle in gone.needles():
        assert tables_holding(values, needle) == [], needle
    for click_id in gone.click_ids:  # the touch counts of the reports only
        assert set(tables_holding(values, click_id)) <= {"outcomes"}, click_id
    for needle in (kept.install_id, kept.ip, _hex("sha1", kept.gaid), _hex("md5", kept.gaid)):
        assert tables_holding(values, needle), needle
    assert await backend.device_records(app, kept.keys()) == before
    assert await backend.device_records(app, gone.keys()) == store_pb.DeviceRecords()

    # Idempotent; and the device is new again: no prior install, no touches.
    again = await backend.erase_devices(app, gone.keys(), [gone.install_id], list(gone.click_ids))
    assert again.install_ids == again.click_ids == again.decision_ids == set()
    facts = await backend.gather_install_facts(
        InstallQuery(app, "later", gone.keys(), [], 0, NOW, gone.keys())
    )
    assert facts.touches == [] and facts.prior == []


async def test_erasure_by_a_hashed_identifier(backend: StoreBackend, tmp_path: Path) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    d = Device(app, "hashed", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.9")
    await _populate(backend, d)
    sha1 = device_pb2.HashedIdentifier(
        type=device_pb2.DEVICE_ID_TYPE_GAID,
        algorithm=device_pb2.HASH_ALGORITHM_SHA1,
        value=_hex("sha1", d.gaid).upper(),
    )
    keys = devices.erasure_keys(convert.device(device_pb2.DeviceIdentifiers(hashed=[sha1])))
    erased = await backend.erase_devices(app, sorted(keys), [], [])
    assert erased.install_ids == {d.install_id}
    assert erased.click_ids == set(d.click_ids)
    values = await every_value(backend, tmp_path)
    for needle in d.needles():
        assert tables_holding(values, needle) == [], needle


async def test_erased_log_entries_keep_their_counts(backend: StoreBackend) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    d = Device(app, "logged", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.10")
    await _populate(backend, d)
    before, _ = await backend.read_outcomes(app, "", 100)
    await backend.erase_devices(app, d.keys(), [], [])
    after, _ = await backend.read_outcomes(app, "", 100)
    assert [o.cursor for o in after] == [o.cursor for o in before]  # nothing moved
    decisions = [o.decision for o in after if o.HasField("decision")]
    assert sorted(x.decision_id for x in decisions) == ["logged-decision", "logged-reengagement"]
    assert all(x.install_id == "" and x.click_id == "" for x in decisions)
    assert {x.media_source for x in decisions} == {"networka"}
    assert all(not o.postbacks for o in after)
    (event,) = [o.event for o in after if o.HasField("event")]
    assert event.install_id == "" and event.revenue == "1.5" and event.name == "purchase"


async def test_access_answers_exactly_the_records_written(backend: StoreBackend) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    d = Device(app, "seen", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.11")
    other = Device(app, "other", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.12")
    await _populate(backend, d)
    await _populate(backend, other)
    records = await backend.device_records(app, d.keys())
    assert [t.click_id for t in records.touches] == list(d.click_ids)
    assert [r.install.install_id for r in records.installs] == [d.install_id]
    assert records.installs[0].explanation.settings_version == 1
    assert [x.decision.decision_id for x in records.decisions] == [d.open_decision]
    assert records.decisions[0].explanation.settings_version == 2
    assert [e.event.event_id for e in records.events] == [d.event_id]
    assert records.events[0].attribution.decision_id == "seen-decision"


async def test_cassandra_backfill_indexes_events_and_opens_recorded_before_schema_7(
    cassandra: CassandraNode,
) -> None:
    from lookback.touchpoint_store.cassandra import backfill_install_items

    b = CassandraBackend(cassandra.settings(), clock=lambda: NOW)
    await b.open()
    try:
        app = f"app-{uuid.uuid4().hex[:8]}"
        d = Device(app, "old", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.13")
        await _populate(backend=b, d=d)
        ks = b.settings.keyspace
        await b._execute(
            f"DELETE FROM {ks}.install_items WHERE app_id = %s AND install_id = %s",
            (app, d.install_id),
        )
        before = await b.device_records(app, d.keys())
        assert (len(before.events), len(before.decisions)) == (0, 0)  # as before schema 7
        events, opens = await backfill_install_items(b)
        assert events >= 1 and opens >= 1
        after = await b.device_records(app, d.keys())
        assert [e.event.event_id for e in after.events] == [d.event_id]
        assert [x.decision.decision_id for x in after.decisions] == [d.open_decision]
    finally:
        await b.close()


async def test_an_install_found_only_through_another_ones_identifiers_goes_too(
    backend: StoreBackend, tmp_path: Path
) -> None:
    app = f"app-{uuid.uuid4().hex[:8]}"
    d = Device(app, "both", str(uuid.uuid4()), str(uuid.uuid4()), "198.51.100.14")
    await _populate(backend, d)
    # A later install reported with the IDFV alone: no GAID key finds it.
    other = store_pb.InstallRecord()
    other.CopyFrom((await backend.device_records(app, d.keys())).installs[0])
    other.install.install_id = "by-idfv-only"
    other.install.device.Clear()
    other.install.device.idfv = d.idfv
    other.decision.decision_id = "by-idfv-decision"
    other.decision.install_id = "by-idfv-only"
    other.match_keys[:] = devices.install_keys(
        devices.install_device_keys(convert.device(other.install.device))
    )
    assert (await backend.create_install_record(other))[0]
    by_gaid = devices.erasure_keys(convert.device(device_pb2.DeviceIdentifiers(gaid=d.gaid)))
    erased = await backend.erase_devices(app, sorted(by_gaid), [], [])
    assert erased.install_ids == {d.install_id, "by-idfv-only"}
    values = await every_value(backend, tmp_path)
    for needle in ("by-idfv-only", _hex("sha1", d.idfv), d.install_id):
        assert tables_holding(values, needle) == [], needle
