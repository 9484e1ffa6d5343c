"""Postback job queues. The embedded default keeps jobs in SQLite.

A worker *claims* due jobs with a lease; a job whose worker died is claimed
again once its lease runs out, so nothing is lost. A delivered job is marked
so and never claimed again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.types.v1 import postback_pb2
from lookback.core.sqlite import SqliteDatabase
from lookback.reports.counts import MIGRATION as REPORT_TABLES

PURGE_INTERVAL = 60.0
"""Seconds between purges of delivered jobs past their retention (SQLite)."""

PENDING = pb.DELIVERY_STATE_PENDING
DELIVERED = pb.DELIVERY_STATE_DELIVERED
DEAD = pb.DELIVERY_STATE_DEAD


@dataclass(frozen=True)
class JobState:
    job: postback_pb2.PostbackJob
    state: int
    attempts: int
    last_error: str
    delivered_at: float | None
    created_at: float


class PostbackQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
        """Store new jobs durably; returns how many were new."""
        ...

    async def claim(self, limit: int, now: float, lease: float) -> list[JobState]:
        """Lease up to ``limit`` due jobs; each claim counts as an attempt."""
        ...

    async def delivered(self, job_id: str, now: float) -> None: ...

    async def retry(self, job_id: str, at: float, error: str) -> None: ...

    async def dead(self, job_id: str, error: str) -> None: ...

    async def get(self, job_id: str) -> JobState | None: ...

    async def healthy(self) -> bool: ...

    async def depth(self) -> int:
        """Jobs not yet delivered or dead (due now, in flight or waiting to retry)."""
        ...

    async def list_dead(self, limit: int) -> list[JobState]:
        """Dead letters, oldest first."""
        ...

    async def replay(self, job_id: str, now: float) -> JobState | None:
        """Queue a dead job again with a fresh attempt count; None if unknown."""
        ...

    async def get_cursor(self, name: str) -> str:
        """A consumer's position, kept with the queue ('' when none yet)."""
        ...

    async def set_cursor(self, name: str, value: str) -> None: ...


_MIGRATIONS = {
    # Exactly the schema of the queue before migrations (IF NOT EXISTS): a
    # queue file from then gets version 1 recorded and keeps its jobs.
    1: """
    CREATE TABLE IF NOT EXISTS jobs (
        job_id TEXT PRIMARY KEY, body BLOB NOT NULL, state INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
        delivered_at REAL, created_at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_at);
    """,
    # Consumers' positions (the relay's, in each app's outcomes log).
    2: "CREATE TABLE cursors (name TEXT PRIMARY KEY, value TEXT NOT NULL);",
    # 3: the reports' counts (lookback.reports.counts), kept with the cursors.
    3: REPORT_TABLES,
}

Db = sqlite3.Connection


def _get(db: Db, job_id: str) -> JobState | None:
    row = db.execute(
        "SELECT body, state, attempts, last_error, delivered_at, created_at FROM jobs"
        " WHERE job_id=?",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    return JobState(postback_pb2.PostbackJob.FromString(row[0]), *row[1:])


def _enqueue(db: Db, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
    return sum(
        db.execute(
            "INSERT OR IGNORE INTO jobs (job_id, body, state, next_at, created_at)"
            " VALUES (?,?,?,?,?)",
            (job.job_id, job.SerializeToString(), PENDING, now, now),
        ).rowcount
        for job in jobs
    )


def _claim(
    db: Db, limit: int, now: float, lease: float, purge_before: float | None
) -> list[JobState]:
    if purge_before is not None:  # forget delivered jobs past their retention
        db.execute("DELETE FROM jobs WHERE state=? AND delivered_at<?", (DELIVERED, purge_before))
    ids = [
        r[0]
        for r in db.execute(
            "SELECT job_id FROM jobs WHERE state=? AND next_at<=? AND lease_until<=?"
            " ORDER BY next_at LIMIT ?",
            (PENDING, now, now, limit),
        ).fetchall()
    ]
    db.executemany(
        "UPDATE jobs SET lease_until=?, attempts=attempts+1 WHERE job_id=?",
        [(now + lease, i) for i in ids],
    )
    return [s for s in (_get(db, i) for i in ids) if s is not None]


def _update(db: Db, sql: str, args: tuple[Any, ...]) -> None:
    db.execute(sql, args)


def _replay(db: Db, job_id: str, now: float) -> JobState | None:
    db.execute(
        "UPDATE jobs SET state=?, attempts=0, last_error='', next_at=?, lease_until=0"
        " WHERE job_id=? AND state=?",
        (PENDING, now, job_id, DEAD),
    )
    return _get(db, job_id)


def _get_cursor(db: Db, name: str) -> str:
    row = db.execute("SELECT value FROM cursors WHERE name=?", (name,)).fetchone()
    return str(row[0]) if row else ""


def _set_cursor(db: Db, name: str, value: str) -> None:
    db.execute("INSERT OR REPLACE INTO cursors (name, value) VALUES (?, ?)", (name, value))


class SqliteQueue:
    """:class:`PostbackQueue` on SQLite (see :mod:`lookback.core.sqlite`):
    writes group-committed (``synchronous=FULL``, on disk when they return),
    reads on a connection of their own."""

    def __init__(self, path: str | Path, retention: float = 7 * 86400.0) -> None:
        self.path = Path(path)
        self.retention = retention
        self._next_purge = 0.0
        self.db = SqliteDatabase(path, _MIGRATIONS, name="postback-queue")
        self._open = False

    async def open(self) -> None:
        await self.db.open()
        self._open = True

    async def close(self) -> None:
        self._open = False
        await self.db.close()

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
        return await self.db.write(_enqueue, list(jobs), now)

    async def get_cursor(self, name: str) -> str:
        return self.db.read(_get_cursor, name)

    async def set_cursor(self, name: str, value: str) -> None:
        await self.db.write(_set_cursor, name, value)

    async def claim(self, limit: int, now: float, lease: float) -> list[JobState]:
        purge_before = None
        if now >= self._next_purge:
            self._next_purge = now + min(PURGE_INTERVAL, self.retention)
            purge_before = now - self.retention
        return await self.db.write(_claim, limit, now, lease, purge_before)

    async def delivered(self, job_id: str, now: float) -> None:
        await self.db.write(
            _update,
            "UPDATE jobs SET state=?, delivered_at=?, lease_until=0, last_error='' WHERE job_id=?",
            (DELIVERED, now, job_id),
        )

    async def retry(self, job_id: str, at: float, error: str) -> None:
        await self.db.write(
            _update,
            "UPDATE jobs SET next_at=?, lease_until=0, last_error=? WHERE job_id=? AND state=?",
            (at, error, job_id, PENDING),
        )

    async def dead(self, job_id: str, error: str) -> None:
        await self.db.write(
            _update,
            "UPDATE jobs SET state=?, lease_until=0, last_error=? WHERE job_id=? AND state=?",
            (DEAD, error, job_id, PENDING),
        )

    async def get(self, job_id: str) -> JobState | None:
        return self.db.read(_get, job_id)

    async def healthy(self) -> bool:
        return self._open

    async def depth(self) -> int:
        row = self.db.read(
            lambda db: db.execute("SELECT COUNT(*) FROM jobs WHERE state=?", (PENDING,)).fetchone()
        )
        return int(row[0])

    async def list_dead(self, limit: int) -> list[JobState]:
        def dead(db: Db) -> list[JobState]:
            rows = db.execute(
                "SELECT job_id FROM jobs WHERE state=? ORDER BY created_at, job_id LIMIT ?",
                (DEAD, limit),
            ).fetchall()
            return [s for s in (_get(db, r[0]) for r in rows) if s is not None]

        return self.db.read(dead)

    async def replay(self, job_id: str, now: float) -> JobState | None:
        return await self.db.write(_replay, job_id, now)
