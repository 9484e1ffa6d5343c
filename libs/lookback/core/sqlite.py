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
- **The write-ahead log stays bounded.** A checkpointer thread copies the
  log into the database every second, and at once when the log passes half
  of ``wal_limit`` (PASSIVE: it never blocks the writer or a reader). Under
  sustained writes that alone never empties the log (new frames arrive
  while it copies), so once the log file passes ``wal_limit`` the writer
  itself, between two commits, runs a TRUNCATE checkpoint: it holds the
  write lock already (no busy wait on other writers), has little left to
  copy, waits only for the short reads in progress, and leaves an empty
  log. ``journal_size_limit`` trims the file whenever the log restarts.
- **Migrations** are numbered scripts; each is applied once, whole, and
  recorded in ``schema_version``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

MAX_BATCH = 256
CHECKPOINT_INTERVAL = 1.0
WAL_LIMIT = 64 * 1024 * 1024
"""Bytes of write-ahead log past which the writer empties it (TRUNCATE)."""
BUSY_TIMEOUT_MS = 5000
TRUNCATE_WAIT_MS = 200

log = logging.getLogger("lookback.sqlite")

_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _resolve(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _resolve_all(done: list[tuple[Any, Any, BaseException | None]]) -> None:
    for future, result, error in done:
        _resolve(future, result, error)


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
        self,
        path: str | Path,
        migrations: Mapping[int, str],
        name: str = "sqlite",
        wal_limit: int = WAL_LIMIT,
    ) -> None:
        self.path = Path(path)
        self.migrations = migrations
        self.name = name
        self.wal_limit = wal_limit
        self.wal_path = Path(f"{self.path}-wal")
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._reader: sqlite3.Connection | None = None
        self._checkpointer: threading.Thread | None = None
        self._stopping = False
        self._checkpoint_now = threading.Event()
        self._wal_size = 0  # the log file's size after the last commit (writer thread)
        # One checkpoint at a time: SQLite refuses a second one outright
        # (SQLITE_BUSY, no busy handler), so the writer would miss its turn.
        self._checkpoint_lock = threading.Lock()

    def _checkpoints(self) -> None:
        """Copy the write-ahead log into the database every second, or when
        the writer asks, on a connection of its own; PASSIVE never blocks
        the writer or a reader."""
        db = self._connection()
        try:
            while True:
                self._checkpoint_now.wait(CHECKPOINT_INTERVAL)
                self._checkpoint_now.clear()
                if self._stopping:
                    break
                try:
                    with self._checkpoint_lock:
                        db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    log.warning("%s: checkpoint failed: %s", self.name, exc)
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
        self._stopping = False
        self._checkpointer = threading.Thread(
            target=self._checkpoints, name=f"{self.name}-checkpoints", daemon=True
        )
        self._checkpointer.start()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._stopping = True
            self._checkpoint_now.set()
            await asyncio.to_thread(self._checkpointer.join)
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

    def _connection(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA journal_size_limit={int(self.wal_limit)}")
        return db

    def _connect(self) -> sqlite3.Connection:
        db = self._connection()
        db.execute("PRAGMA journal_mode=WAL")
        # No checkpoint on commit: the checkpointer copies the log off the
        # write path, and the writer empties it only past wal_limit.
        db.execute("PRAGMA wal_autocheckpoint=0")
        migrate(db, self.migrations)
        return db

    def _bound_wal(self, db: sqlite3.Connection, truncate_at: int) -> int:
        """Between two commits: empty the log if it is past ``truncate_at``
        bytes. Returns the size at which to try next: ``wal_limit``, or, if a
        read held on to the log, ``wal_limit`` more than now (a read that
        stays open cannot stall every commit)."""
        try:
            size = self.wal_path.stat().st_size
        except FileNotFoundError:
            return truncate_at
        grew, self._wal_size = size > self._wal_size, size
        if size <= truncate_at:
            # A log growing past half its limit is copied over at once, so the
            # truncation has little to do. (A log that restarted is rewritten
            # from its start: the file does not grow, and its size says nothing.)
            if grew and size > truncate_at // 2:
                self._checkpoint_now.set()
            return truncate_at
        busy = 1
        try:
            # Reads in progress are short: wait for them briefly, not for the
            # busy_timeout a write lock would get.
            db.execute(f"PRAGMA busy_timeout={TRUNCATE_WAIT_MS}")
            with self._checkpoint_lock:
                busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            log.warning("%s: checkpoint failed: %s", self.name, exc)
        finally:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not busy:
            self._wal_size = 0
            return self.wal_limit
        log.warning(
            "%s: write-ahead log at %d MiB not emptied: a read kept it", self.name, size >> 20
        )
        return size + self.wal_limit

    def _writer(self, ready: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        try:
            db = self._connect()
        except BaseException as exc:
            loop.call_soon_threadsafe(_resolve, ready, None, exc)
            return
        loop.call_soon_threadsafe(_resolve, ready, None, None)
        truncate_at = self.wal_limit
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
            truncate_at = self._bound_wal(db, truncate_at)
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
        # One wake-up per event loop for the whole batch, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
        for (_, _, future, loop), (result, error) in zip(batch, outcomes, strict=True):
            by_loop.setdefault(loop, []).append((future, result, error))
        for loop, done in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_resolve_all, done)
