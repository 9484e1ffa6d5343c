"""Postback job queues. The embedded default keeps jobs in SQLite.

A worker *claims* due jobs with a lease; a job whose worker died is claimed
again once its lease runs out, so nothing is lost. A delivered job is marked
so and never claimed again.

An erasure *cancels* jobs (:meth:`PostbackQueue.cancel`): a pending or dead
one becomes ``CANCELLED`` and is never claimed again, and every named job,
delivered ones included, has its URL, body and trace context forgotten. The
cancelled job stays as a tombstone, so enqueuing its id again queues
nothing, and is purged after the retention like a delivered one. A job in
flight when it is cancelled may still reach the partner, but its outcome
never turns it back into a delivered or dead job.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.types.v1 import postback_pb2
from lookback.core.sqlite import SqliteDatabase
from lookback.postback.lanes import lane_of
from lookback.reports.counts import MIGRATION as REPORT_TABLES

PURGE_INTERVAL = 60.0
"""Seconds between purges of delivered and cancelled jobs past their retention (SQLite)."""
CANCEL_BATCH = 1000
"""Job (or source) ids cancelled per write: a big erasure does not hold the
writer (SQLite) or Redis for long at a time."""

PENDING = pb.DELIVERY_STATE_PENDING
DELIVERED = pb.DELIVERY_STATE_DELIVERED
DEAD = pb.DELIVERY_STATE_DEAD
CANCELLED = pb.DELIVERY_STATE_CANCELLED

_REJECTION = re.compile(r"(.+)/r[0-9]+")


def sources_of(job_id: str) -> tuple[str, ...]:
    """The sources (decision or event ids) a job id names as its cause.

    A job id reads ``<source>:<partner>:<trigger>`` (partner and trigger
    never hold a ``:``), or ``<source>/r<n>:<partner>:rejected`` for a
    decision's n-th rejected touch, whose cause is both ``<source>/r<n>``
    (the job's ``source_id``) and the decision ``<source>``. Ids of any
    other shape name no source."""
    parts = job_id.rsplit(":", 2)
    if len(parts) != 3 or not all(parts):
        return ()
    head = parts[0]
    rejection = _REJECTION.fullmatch(head)
    return (head, rejection.group(1)) if rejection else (head,)


def forget(job: postback_pb2.PostbackJob) -> postback_pb2.PostbackJob:
    """A copy of ``job`` without its URL, body and trace context (what an
    erasure leaves): its id, app, partner, trigger, source and times stay."""
    out = postback_pb2.PostbackJob()
    out.CopyFrom(job)
    for name in ("url", "body", "traceparent"):
        out.ClearField(name)
    return out


def batches(items: Sequence[str], size: int = CANCEL_BATCH) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class JobState:
    job: postback_pb2.PostbackJob
    state: int
    attempts: int
    last_error: str
    delivered_at: float | None
    created_at: float
    lane: str = ""
    """The job's lane (:func:`~lookback.postback.lanes.lane_of`, set when
    it was queued; empty for a job queued before lanes existed)."""


Plan = Callable[[Sequence[str]], Mapping[str, int]]
"""Given the lanes that have due jobs not in flight, how many to claim from
each (:func:`~lookback.postback.lanes.share_out`); lanes left out get none."""


class PostbackQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
        """Store new jobs durably; returns how many were new."""
        ...

    async def claim(
        self, limit: int, now: float, lease: float, plan: Plan | None = None
    ) -> list[JobState]:
        """Lease up to ``limit`` due jobs, oldest due first within a lane;
        each claim counts as an attempt. With a ``plan``, as many from each
        lane as it says; without, due jobs from every lane (the dispatcher
        always plans; which lanes go first is then up to the queue)."""
        ...

    async def delivered(self, job_id: str, now: float) -> None: ...

    async def retry(self, job_id: str, at: float, error: str) -> None: ...

    async def dead(self, job_id: str, error: str) -> None: ...

    async def get(self, job_id: str) -> JobState | None: ...

    async def healthy(self) -> bool: ...

    async def depth(self) -> int:
        """Jobs not yet delivered, dead or cancelled (due now, in flight or
        waiting to retry)."""
        ...

    async def lane_depths(self) -> dict[str, int]:
        """:meth:`depth` by lane (lanes with none left out)."""
        ...

    async def list_dead(self, limit: int) -> list[JobState]:
        """Dead letters, oldest first."""
        ...

    async def replay(self, job_id: str, now: float) -> JobState | None:
        """Queue a dead job again with a fresh attempt count; None if unknown."""
        ...

    async def cancel(
        self, job_ids: Sequence[str], source_ids: Sequence[str], now: float
    ) -> tuple[int, int]:
        """Cancel the named jobs that are pending or dead, and forget the URL
        and body of every named job (an erasure). Jobs are named by id, or
        by the source (decision or event id) their id starts with, see
        :func:`sources_of`. Returns (how many were cancelled now, how many
        named jobs exist and are forgotten, the cancelled ones included)."""
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
    # Partner lanes (lookback.postback.lanes): jobs queued before keep the
    # lane '' and are delivered as one lane of their own.
    4: """
    ALTER TABLE jobs ADD COLUMN lane TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_lane_due ON jobs (state, lane, next_at);
    """,
}

Db = sqlite3.Connection


def _get(db: Db, job_id: str) -> JobState | None:
    row = db.execute(
        "SELECT body, state, attempts, last_error, delivered_at, created_at, lane FROM jobs"
        " WHERE job_id=?",
        (job_id,),
    ).fetchone()
    if row is None:
        return None
    return JobState(postback_pb2.PostbackJob.FromString(row[0]), *row[1:])


def _enqueue(db: Db, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
    return sum(
        db.execute(
            "INSERT OR IGNORE INTO jobs (job_id, body, state, next_at, created_at, lane)"
            " VALUES (?,?,?,?,?,?)",
            (job.job_id, job.SerializeToString(), PENDING, now, now, lane_of(job.partner, job.url)),
        ).rowcount
        for job in jobs
    )


def _due_lanes(db: Db, now: float) -> list[str]:
    """The lanes with due jobs not in flight: index seeks, two per lane
    with pending jobs, whatever the backlog."""
    out: list[str] = []
    row = db.execute(
        "SELECT lane FROM jobs WHERE state=? ORDER BY state, lane LIMIT 1", (PENDING,)
    ).fetchone()
    while row is not None:
        lane = row[0]
        if db.execute(
            "SELECT 1 FROM jobs WHERE state=? AND lane=? AND next_at<=? AND lease_until<=? LIMIT 1",
            (PENDING, lane, now, now),
        ).fetchone():
            out.append(lane)
        row = db.execute(
            "SELECT lane FROM jobs WHERE state=? AND lane>? ORDER BY state, lane LIMIT 1",
            (PENDING, lane),
        ).fetchone()
    return out


def _claim(
    db: Db, limit: int, now: float, lease: float, purge_before: float | None, plan: Plan | None
) -> list[JobState]:
    if purge_before is not None:  # forget delivered and cancelled jobs past their retention
        db.execute("DELETE FROM jobs WHERE state=? AND delivered_at<?", (DELIVERED, purge_before))
        # A cancelled job's next_at is when it was cancelled (see _cancel).
        db.execute("DELETE FROM jobs WHERE state=? AND next_at<?", (CANCELLED, purge_before))
    if plan is None:
        ids = [
            r[0]
            for r in db.execute(
                "SELECT job_id FROM jobs WHERE state=? AND next_at<=? AND lease_until<=?"
                " ORDER BY next_at LIMIT ?",
                (PENDING, now, now, limit),
            ).fetchall()
        ]
    else:
        ids = []
        for lane, n in plan(_due_lanes(db, now)).items():
            n = min(n, limit - len(ids))
            if n <= 0:
                continue
            ids += [
                r[0]
                for r in db.execute(
                    "SELECT job_id FROM jobs WHERE state=? AND lane=? AND next_at<=?"
                    " AND lease_until<=? ORDER BY next_at LIMIT ?",
                    (PENDING, lane, now, now, n),
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


def _by_source(db: Db, source_ids: Sequence[str]) -> list[str]:
    """The ids of the jobs whose id names one of ``source_ids`` as its
    cause: a range of the primary key per source (ids starting with
    ``<source>:`` or ``<source>/``), each id then checked whole."""
    out: list[str] = []
    for source in source_ids:
        # ';' and '0' follow ':' and '/' in ASCII: the ranges are those prefixes.
        for low, high in ((source + ":", source + ";"), (source + "/", source + "0")):
            out += [
                job_id
                for (job_id,) in db.execute(
                    "SELECT job_id FROM jobs WHERE job_id>=? AND job_id<?", (low, high)
                )
                if source in sources_of(job_id)
            ]
    return out


def _cancel(
    db: Db, job_ids: Sequence[str], source_ids: Sequence[str], now: float
) -> tuple[int, list[str]]:
    """Cancel and forget the named jobs; (how many were cancelled, the ids of
    those forgotten). A cancelled job's ``next_at`` records when, for the purge."""
    cancelled, forgotten = 0, []
    for job_id in dict.fromkeys([*job_ids, *_by_source(db, source_ids)]):
        row = db.execute("SELECT body, state FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None:
            continue
        body = forget(postback_pb2.PostbackJob.FromString(row[0])).SerializeToString()
        if row[1] in (PENDING, DEAD):
            db.execute(
                "UPDATE jobs SET body=?, state=?, next_at=?, last_error='' WHERE job_id=?",
                (body, CANCELLED, now, job_id),
            )
            cancelled += 1
        else:
            # The partner's reply excerpt may echo what the job carried.
            db.execute("UPDATE jobs SET body=?, last_error='' WHERE job_id=?", (body, job_id))
        forgotten.append(job_id)
    return cancelled, forgotten


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

    async def claim(
        self, limit: int, now: float, lease: float, plan: Plan | None = None
    ) -> list[JobState]:
        # The plan runs on the writer's thread: it must be a pure function
        # of what it is given (share_out over a snapshot of the lanes).
        purge_before = None
        if now >= self._next_purge:
            self._next_purge = now + min(PURGE_INTERVAL, self.retention)
            purge_before = now - self.retention
        return await self.db.write(_claim, limit, now, lease, purge_before, plan)

    async def delivered(self, job_id: str, now: float) -> None:
        # A job cancelled while in flight stays cancelled (and forgotten).
        await self.db.write(
            _update,
            "UPDATE jobs SET state=?, delivered_at=?, lease_until=0, last_error=''"
            " WHERE job_id=? AND state!=?",
            (DELIVERED, now, job_id, CANCELLED),
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

    async def lane_depths(self) -> dict[str, int]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT lane, COUNT(*) FROM jobs WHERE state=? GROUP BY lane", (PENDING,)
            ).fetchall()
        )
        return {str(lane): int(n) for lane, n in rows}

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

    async def cancel(
        self, job_ids: Sequence[str], source_ids: Sequence[str], now: float
    ) -> tuple[int, int]:
        cancelled = 0
        seen: set[str] = set()  # forgotten already (a job may be named twice)
        for sources in batches(list(dict.fromkeys(source_ids))):
            n, forgotten = await self.db.write(_cancel, [], sources, now)
            cancelled += n
            seen.update(forgotten)
        for ids in batches([i for i in dict.fromkeys(job_ids) if i not in seen]):
            n, forgotten = await self.db.write(_cancel, ids, [], now)
            cancelled += n
            seen.update(forgotten)
        return cancelled, len(seen)
