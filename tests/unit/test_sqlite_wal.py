"""The shared SQLite engine keeps its write-ahead log bounded under
sustained writes, and stays durable and readable while it empties it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from lookback.core.sqlite import SqliteDatabase

LIMIT = 1024 * 1024
JOB_ROWS, ROW_BYTES = 8, 8 * 1024  # a write of 64 KiB (about 20 log frames)
IN_FLIGHT = 4
MIGRATIONS = {1: "CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB NOT NULL);"}


def insert(db: sqlite3.Connection) -> list[int]:
    return [
        db.execute(
            "INSERT INTO blobs (body) VALUES (randomblob(?)) RETURNING id", (ROW_BYTES,)
        ).fetchone()[0]
        for _ in range(JOB_ROWS)
    ]


def count(db: sqlite3.Connection, ids: list[int]) -> int:
    marks = ",".join("?" * len(ids))
    return int(db.execute(f"SELECT COUNT(*) FROM blobs WHERE id IN ({marks})", ids).fetchone()[0])


@contextmanager
def largest_size(path: Path) -> Iterator[list[int]]:
    """Samples the size of ``path`` every millisecond from a thread of its
    own; yields a one-item list holding the largest size seen so far."""
    seen = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.001):
            with suppress(FileNotFoundError):
                seen[0] = max(seen[0], path.stat().st_size)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


async def write_jobs(db: SqliteDatabase, jobs: int) -> None:
    """``jobs`` inserts, IN_FLIGHT at a time; each is read back (on the read
    connection) as soon as its write has returned."""
    todo = iter(range(jobs))

    async def worker() -> None:
        for _ in todo:
            ids = await db.write(insert)
            assert db.read(count, ids) == JOB_ROWS

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))


async def test_the_log_stays_bounded_under_sustained_writes(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "db.sqlite3", MIGRATIONS, wal_limit=LIMIT)
    await db.open()
    jobs = 48 * LIMIT // (JOB_ROWS * ROW_BYTES)  # 48 times the limit
    try:
        with largest_size(db.wal_path) as seen:
            await write_jobs(db, jobs)
    finally:
        await db.close()
    # Past the limit by one group commit at most (IN_FLIGHT writes of 64 KiB).
    assert 0 < seen[0] <= 2 * LIMIT, f"the log reached {seen[0]:,} bytes"
    with sqlite3.connect(db.path) as check:  # every write is in the file
        assert check.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == jobs * JOB_ROWS


async def test_a_read_left_open_delays_the_truncation_without_stalling_writes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A read transaction held open (say an operator's sqlite3 shell) keeps
    the log from being emptied: the writer tries again only once the log has
    grown by another ``wal_limit``, not at every commit; once the read ends
    the log is emptied again."""
    db = SqliteDatabase(tmp_path / "db.sqlite3", MIGRATIONS, wal_limit=LIMIT)
    await db.open()
    per_limit = LIMIT // (JOB_ROWS * ROW_BYTES)
    holder = sqlite3.connect(db.path, isolation_level=None)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT COUNT(*) FROM blobs").fetchone()
        with caplog.at_level(logging.WARNING, logger="lookback.sqlite"):
            await write_jobs(db, 6 * per_limit)
        held = db.wal_path.stat().st_size
        assert held > 4 * LIMIT  # the read really kept the log
        attempts = [r for r in caplog.records if "not emptied" in r.getMessage()]
        assert 1 <= len(attempts) <= held // LIMIT
        holder.execute("COMMIT")
        written = 0
        while db.wal_path.stat().st_size > LIMIT:
            assert written < 2 * per_limit, "the log was not emptied after the read ended"
            await write_jobs(db, IN_FLIGHT)
            written += IN_FLIGHT
    finally:
        holder.close()
        await db.close()
