"""Postback job queues. The embedded default keeps jobs in SQLite.

A worker *claims* due jobs with a lease; a job whose worker died is claimed
again once its lease runs out, so nothing is lost. A delivered job is marked
so and never claimed again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.types.v1 import postback_pb2

T = TypeVar("T")

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


class SqliteQueue:
    """:class:`PostbackQueue` on SQLite (WAL, ``synchronous=FULL``), one thread."""

    def __init__(self, path: str | Path, retention: float = 7 * 86400.0) -> None:
        self.path = Path(path)
        self.retention = retention
        self._next_purge = 0.0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-queue")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @property
    def db(self) -> sqlite3.Connection:
        assert self._db is not None, "queue not open"
        return self._db

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS jobs (
                job_id TEXT PRIMARY KEY, body BLOB NOT NULL, state INTEGER NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL,
                lease_until REAL NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
                delivered_at REAL, created_at REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_at);
            """
        )
        self._db = db

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self.db.close)
            self._db = None
        self._executor.shutdown(wait=True)

    def _enqueue(self, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            new = 0
            for job in jobs:
                new += self.db.execute(
                    "INSERT OR IGNORE INTO jobs (job_id, body, state, next_at, created_at)"
                    " VALUES (?,?,?,?,?)",
                    (job.job_id, job.SerializeToString(), PENDING, now, now),
                ).rowcount
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return new

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
        return await self._run(self._enqueue, list(jobs), now)

    def _claim(self, limit: int, now: float, lease: float) -> list[JobState]:
        if now >= self._next_purge:  # forget delivered jobs past their retention
            self._next_purge = now + min(PURGE_INTERVAL, self.retention)
            self.db.execute(
                "DELETE FROM jobs WHERE state=? AND delivered_at<?",
                (DELIVERED, now - self.retention),
            )
        self.db.execute("BEGIN IMMEDIATE")
        try:
            rows = self.db.execute(
                "SELECT job_id FROM jobs WHERE state=? AND next_at<=? AND lease_until<=?"
                " ORDER BY next_at LIMIT ?",
                (PENDING, now, now, limit),
            ).fetchall()
            ids = [r[0] for r in rows]
            self.db.executemany(
                "UPDATE jobs SET lease_until=?, attempts=attempts+1 WHERE job_id=?",
                [(now + lease, i) for i in ids],
            )
            states = [self._get(i) for i in ids]
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        return [s for s in states if s is not None]

    async def claim(self, limit: int, now: float, lease: float) -> list[JobState]:
        return await self._run(self._claim, limit, now, lease)

    def _update(self, sql: str, args: tuple[Any, ...]) -> None:
        self.db.execute(sql, args)

    async def delivered(self, job_id: str, now: float) -> None:
        await self._run(
            self._update,
            "UPDATE jobs SET state=?, delivered_at=?, lease_until=0, last_error='' WHERE job_id=?",
            (DELIVERED, now, job_id),
        )

    async def retry(self, job_id: str, at: float, error: str) -> None:
        await self._run(
            self._update,
            "UPDATE jobs SET next_at=?, lease_until=0, last_error=? WHERE job_id=? AND state=?",
            (at, error, job_id, PENDING),
        )

    async def dead(self, job_id: str, error: str) -> None:
        await self._run(
            self._update,
            "UPDATE jobs SET state=?, lease_until=0, last_error=? WHERE job_id=? AND state=?",
            (DEAD, error, job_id, PENDING),
        )

    def _get(self, job_id: str) -> JobState | None:
        row = self.db.execute(
            "SELECT body, state, attempts, last_error, delivered_at, created_at FROM jobs"
            " WHERE job_id=?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        return JobState(postback_pb2.PostbackJob.FromString(row[0]), *row[1:])

    async def get(self, job_id: str) -> JobState | None:
        return await self._run(self._get, job_id)

    async def healthy(self) -> bool:
        return self._db is not None

    def _depth(self) -> int:
        row = self.db.execute("SELECT COUNT(*) FROM jobs WHERE state=?", (PENDING,)).fetchone()
        return int(row[0])

    async def depth(self) -> int:
        return await self._run(self._depth)

    def _list_dead(self, limit: int) -> list[JobState]:
        rows = self.db.execute(
            "SELECT job_id FROM jobs WHERE state=? ORDER BY created_at, job_id LIMIT ?",
            (DEAD, limit),
        ).fetchall()
        return [s for s in (self._get(r[0]) for r in rows) if s is not None]

    async def list_dead(self, limit: int) -> list[JobState]:
        return await self._run(self._list_dead, limit)

    def _replay(self, job_id: str, now: float) -> JobState | None:
        self.db.execute(
            "UPDATE jobs SET state=?, attempts=0, last_error='', next_at=?, lease_until=0"
            " WHERE job_id=? AND state=?",
            (PENDING, now, job_id, DEAD),
        )
        return self._get(job_id)

    async def replay(self, job_id: str, now: float) -> JobState | None:
        return await self._run(self._replay, job_id, now)
