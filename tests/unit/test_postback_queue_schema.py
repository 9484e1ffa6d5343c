"""The SQLite postback queue on numbered migrations: a new file gets the
schema the queue always had (plus the tables later migrations add), and a
queue file from before migrations keeps working (and keeps its jobs)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from lookback.api.types.v1 import postback_pb2
from lookback.domain import reports
from lookback.postback.queue import DEAD, PENDING, SqliteQueue
from lookback.reports.counts import SqliteCounts
from lookback.reports.facts import Fact

# The queue's schema before migrations, as it created it on every open.
BEFORE_MIGRATIONS = """
    CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, body BLOB NOT NULL, state INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        delivered_at REAL, created_at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_at);
"""
LANES = """
    ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_lane_due ON jobs (state, lane, next_at);
"""
"""Migration 4: partner lanes."""


def schema(path: Path) -> dict[str, object]:
    with sqlite3.connect(path) as db:
        return {
            "objects": db.execute(
                "SELECT type, name, tbl_name FROM sqlite_master"
                " WHERE name NOT LIKE 'sqlite_%' AND name NOT IN ('schema_version', 'cursors')"
                " AND tbl_name NOT LIKE 'report_%'"
                " ORDER BY name"
            ).fetchall(),
            "columns": db.execute("PRAGMA table_xinfo(jobs)").fetchall(),
            "index": db.execute("PRAGMA index_xinfo(jobs_due)").fetchall(),
            "lane_index": db.execute("PRAGMA index_xinfo(jobs_lane_due)").fetchall(),
        }


def old_queue_file(path: Path) -> None:
    """A queue file as the queue left it before migrations: one job
    pending, one dead."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(BEFORE_MIGRATIONS)
    for job_id, state in (("pending-1", PENDING), ("dead-1", DEAD)):
        job = postback_pb2.PostbackJob(job_id=job_id, url="http://127.0.0.1:9/p", partner="p")
        db.execute(
            "INSERT INTO jobs (job_id, body, state, next_at, created_at, last_error)"
            " VALUES (?,?,?,?,?,?)",
            (job_id, job.SerializeToString(), state, 100.0, 100.0, "HTTP 400"),
        )
    db.close()


async def test_a_new_queue_file_has_the_schema_from_before_migrations(tmp_path: Path) -> None:
    queue = SqliteQueue(tmp_path / "new.sqlite3")
    await queue.open()
    await queue.close()
    reference = tmp_path / "reference.sqlite3"
    with sqlite3.connect(reference) as db:
        db.executescript(BEFORE_MIGRATIONS + LANES)
    assert schema(tmp_path / "new.sqlite3") == schema(reference)


async def test_a_queue_file_from_before_migrations_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old_queue_file(path)
    for _ in range(2):  # the first open records every version; the second finds them
        queue = SqliteQueue(path)
        await queue.open()
        try:
            dead = await queue.list_dead(10)
            assert [d.job.job_id for d in dead] == ["dead-1"]
            assert dead[0].last_error == "HTTP 400"
            assert await queue.depth() == 1
        finally:
            await queue.close()
        with sqlite3.connect(path) as db:
            versions = db.execute("SELECT version FROM schema_version").fetchall()
            assert versions == [(1,), (2,), (3,), (4,)]
    queue = SqliteQueue(path)
    await queue.open()
    try:
        (claimed,) = await queue.claim(10, now=200.0, lease=30.0)
        assert (claimed.job.job_id, claimed.attempts) == ("pending-1", 1)
        replayed = await queue.replay("dead-1", now=200.0)
        assert replayed is not None and (replayed.state, replayed.attempts) == (PENDING, 0)
    finally:
        await queue.close()


async def test_migration_2_adds_the_consumers_cursors_and_keeps_the_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old_queue_file(path)
    queue = SqliteQueue(path)
    await queue.open()
    try:
        assert await queue.get_cursor("outcomes:com.example") == ""
        await queue.set_cursor("outcomes:com.example", "00000000000000000042")
        assert await queue.get_cursor("outcomes:com.example") == "00000000000000000042"
        assert (await queue.get("pending-1")) is not None
    finally:
        await queue.close()


async def test_migration_3_adds_the_reports_counts_to_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old_queue_file(path)
    queue = SqliteQueue(path)
    await queue.open()
    try:
        counts = SqliteCounts(queue.db)
        fact = Fact("d:1", tuple(reports.decision_counts("install", "networka", "ua", 0)))
        assert await counts.add("com.example", [fact], ("reports:com.example", "7"), 1.0) == 1
        assert await counts.get_cursor("reports:com.example") == "7"
        assert [m for _, m, _ in await counts.cells("com.example", 0, 3_600_000_000)] == [
            "installs"
        ]
        assert (await queue.get("pending-1")) is not None
    finally:
        await queue.close()


async def test_migration_4_puts_old_jobs_in_a_lane_of_their_own(tmp_path: Path) -> None:
    """Jobs queued before lanes keep the lane '' and are claimed as one
    lane; new ones go to their partner's and host's."""
    path = tmp_path / "old.sqlite3"
    old_queue_file(path)
    queue = SqliteQueue(path)
    await queue.open()
    try:
        new = postback_pb2.PostbackJob(job_id="new-1", url="http://127.0.0.1:9/p", partner="p")
        assert await queue.enqueue([new], now=150.0) == 1
        assert await queue.lane_depths() == {"": 1, "p@127.0.0.1": 1}
        seen: list[list[str]] = []

        def plan(lanes: object) -> dict[str, int]:
            seen.append(list(lanes))  # type: ignore[call-overload]
            return {"": 5}

        (claimed,) = await queue.claim(10, now=200.0, lease=30.0, plan=plan)
        assert seen == [["", "p@127.0.0.1"]]
        assert (claimed.job.job_id, claimed.lane) == ("pending-1", "")
        (other,) = await queue.claim(
            10, now=200.0, lease=30.0, plan=lambda lanes: {"p@127.0.0.1": 5}
        )
        assert (other.job.job_id, other.lane) == ("new-1", "p@127.0.0.1")
    finally:
        await queue.close()
