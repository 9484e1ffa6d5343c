"""SQLite for the embedded backends: one writer thread with group commit,
reads served from a second connection.

- **Writes** go to a dedicated thread that owns the write connection. It
  takes every write waiting in its queue, runs each in a savepoint of one
  transaction and commits once (``synchronous=FULL``: on disk when the call
  returns). One failing write is rolled back alone; the others commit. The
  event loop never waits on a commit or an fsync.
- **Reads** run on a read-only connection of their own. In WAL mode a read
  never waits for the writer, and sees every write whose call has returned.
  Reads are short, indexed look-ups served from SQLite's page cache, so they
  run inline on the caller's thread rather than paying a thread hand-off each.
- **Migrations** are numbered scripts; each is applied once, whole, and
  recorded in ``schema_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from lookback.core.tasks import cancel_and_wait

T = TypeVar("T")

MAX_BATCH = 256
CHECKPOINT_INTERVAL = 1.0

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def migrate(db: sqlite3.Connection, migrations: Mapping[int, str]) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    current = db.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0
    for version in sorted(v for v in migrations if v > current):
        # One script, one transaction: a migration applies whole or not at all.
        try:
            db.executescript(
                f"BEGIN IMMEDIATE; {migrations[version]}"
                f" INSERT INTO schema_version VALUES ({version}); COMMIT;"
            )
        except Exception:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


class SqliteDatabase:
    """A SQLite file with a group-committing writer thread and a read connection."""

    def __init__(
        self, path: str | Path, migrations: Mapping[int, str], name: str = "sqlite"
    ) -> None:
        self.path = Path(path)
        self.migrations = migrations
        self.name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None

    async def _checkpoints(self) -> None:
        """Copy the write-ahead log into the database every second, on a
        connection and thread of its own; PASSIVE never blocks the writer."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=5000")
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_INTERVAL)
                await asyncio.to_thread(db.execute, "PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._thread = threading.Thread(
            target=self._writer,
            args=(ready, asyncio.get_running_loop()),
            name=f"{self.name}-writer",
            daemon=True,
        )
        self._thread.start()
        await ready
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        reader.execute("PRAGMA query_only=1")
        self._reader = reader
        self._checkpointer = asyncio.create_task(self._checkpoints())

    async def close(self) -> None:
        if self._checkpointer is not None:
            await cancel_and_wait(self._checkpointer)
            self._checkpointer = None
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` on the read connection."""
        assert self._reader is not None, f"{self.name} is not open"
        return fn(self._reader, *args)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in the writer's next transaction; its
        result once committed."""
        if self._thread is None:
            raise RuntimeError(f"{self.name} is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((fn, args, future, loop))
        return await future

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        # Checkpoints run off the write path (see _checkpoints), so a commit
        # never stalls behind copying the log into the database.
        db.execute("PRAGMA wal_autocheckpoint=0")
        migrate(db, self.migrations)
        return db

    def _writer(self, ready: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            db = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_resolve, ready, None, exc)
            return
        loop.call_soon_threadsafe(_resolve, ready, None, None)
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            batch: list[_Job] = [first]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._commit(db, batch)
        db.close()

    @staticmethod
    def _commit(db: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, args, _, _ in batch:
                db.execute("SAVEPOINT op")
                try:
                    outcomes.append((fn(db, *args), None))
                    db.execute("RELEASE op")
                except Exception as exc:
                    db.execute("ROLLBACK TO op")
                    db.execute("RELEASE op")
                    outcomes.append((None, exc))
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            outcomes = [(None, exc)] * len(batch)
        for (_, _, future, loop), (result, error) in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_resolve, future, result, error)
