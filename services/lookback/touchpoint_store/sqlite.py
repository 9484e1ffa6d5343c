"""The embedded default backend: SQLite on disk, nothing to install.

Writes are group-committed by one writer thread and are on disk when they
return; reads use their own connection (see :mod:`lookback.core.sqlite`).
Expired records (retention) are purged at start and then hourly; reads never
return them either way.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    erasure_pb2,
    install_pb2,
    link_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core.clock import Clock, now_micros
from lookback.core.convert import ts_to_micros
from lookback.core.sqlite import SqliteDatabase
from lookback.core.tasks import cancel_and_wait
from lookback.touchpoint_store.backend import (
    DECISION_RETENTION,
    DEFAULT_LIMIT,
    EVENT_RETENTION,
    INSTALL_RETENTION,
    OUTCOME_RETENTION,
    DecisionFilter,
    InstallFacts,
    InstallQuery,
    bad_cursor,
    decision_outcome_bytes,
    decision_time,
    event_outcome,
    page_token,
    parse_page_token,
    touch_retention,
    touches_outcome,
)
from lookback.touchpoint_store.erasure import (
    EVENT_ITEM,
    OPEN_ITEM,
    OPEN_KINDS,
    Erased,
    record_keys,
    records_of,
    redacted_outcome,
    touch_keys,
)


def _indexed(table: str, keys: str, id_column: str, time_column: str) -> str:
    """A table of records stored whole, and the table of the match keys they
    are found by (touches and installs are both stored this way)."""
    return f"""
    CREATE TABLE {table} (
        app_id TEXT NOT NULL, {id_column} TEXT NOT NULL, {time_column} INTEGER NOT NULL,
        expires_at INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (app_id, {id_column}));
    CREATE TABLE {keys} (
        app_id TEXT NOT NULL, key TEXT NOT NULL, {time_column} INTEGER NOT NULL,
        {id_column} TEXT NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (app_id, key, {time_column}, {id_column}));"""


_MIGRATIONS = {
    1: f"""
    {_indexed("touches", "touch_keys", "click_id", "engaged_at")}
    {_indexed("installs", "install_keys", "install_id", "installed_at")}
    CREATE TABLE events (
        app_id TEXT NOT NULL, event_id TEXT NOT NULL, expires_at INTEGER NOT NULL,
        body BLOB NOT NULL, attribution BLOB NOT NULL, PRIMARY KEY (app_id, event_id));
    CREATE TABLE apps (app_id TEXT PRIMARY KEY, version INTEGER NOT NULL, body BLOB NOT NULL);
    CREATE INDEX touches_expiry ON touches (expires_at);
    CREATE INDEX touch_keys_expiry ON touch_keys (expires_at);
    CREATE INDEX installs_expiry ON installs (expires_at);
    CREATE INDEX install_keys_expiry ON install_keys (expires_at);
    CREATE INDEX events_expiry ON events (expires_at);
    """,
    # The outcomes log (the outbox) and the decision index: written in the
    # transaction of the decision (or event) itself. ``seq`` never repeats
    # (AUTOINCREMENT), so the log's order is the order of the commits;
    # ``source`` (a decision or event id) keeps one entry per decision.
    2: """
    CREATE TABLE outcomes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, app_id TEXT NOT NULL, source TEXT NOT NULL,
        expires_at INTEGER NOT NULL, body BLOB NOT NULL);
    CREATE UNIQUE INDEX outcomes_by_source ON outcomes (app_id, source);
    CREATE INDEX outcomes_by_app ON outcomes (app_id, seq);
    CREATE INDEX outcomes_expiry ON outcomes (expires_at);
    CREATE TABLE decisions (
        app_id TEXT NOT NULL, decision_id TEXT NOT NULL, decided_at INTEGER NOT NULL,
        kind INTEGER NOT NULL, media_source TEXT NOT NULL, expires_at INTEGER NOT NULL,
        body BLOB NOT NULL, PRIMARY KEY (app_id, decision_id));
    CREATE INDEX decisions_by_time ON decisions (app_id, decided_at DESC, decision_id DESC);
    CREATE INDEX decisions_expiry ON decisions (expires_at);
    """,
    # Fewer indexes on the decision's path (each is one more B-tree written in
    # its transaction): a decision is logged once because its decision-index
    # row is created once (the primary key), not by a unique source index;
    # the log is purged in ``seq`` order (its expiry follows its order) and
    # the decision index by app and time.
    3: """
    DROP INDEX outcomes_by_source;
    DROP INDEX outcomes_expiry;
    DROP INDEX decisions_expiry;
    """,
    # An open's explanation, with its decision (an install's is in its record).
    4: """
    ALTER TABLE decisions ADD COLUMN explanation BLOB;
    """,
    # What an erasure finds by install id besides the record: its opens'
    # decisions (``d:<id>``) and its events (``e:<id>``), with the time their
    # log entries were placed at; written with them. Filled for records from
    # before this version when the store opens (``_backfill``). And the
    # erasure requests.
    5: """
    CREATE TABLE install_items (
        app_id TEXT NOT NULL, install_id TEXT NOT NULL, item TEXT NOT NULL,
        at INTEGER NOT NULL, expires_at INTEGER NOT NULL,
        PRIMARY KEY (app_id, install_id, item)) WITHOUT ROWID;
    CREATE INDEX install_items_expiry ON install_items (expires_at);
    CREATE TABLE erasures (
        erasure_id TEXT PRIMARY KEY, pending INTEGER NOT NULL, body BLOB NOT NULL);
    CREATE TABLE backfills (name TEXT PRIMARY KEY);
    """,
    # An app's links, by their (public, unique) code.
    6: """
    CREATE TABLE links (code TEXT PRIMARY KEY, app_id TEXT NOT NULL, body BLOB NOT NULL);
    CREATE INDEX links_by_app ON links (app_id, code);
    """,
}

CURSOR_DIGITS = 20
"""Cursors are ``seq`` zero-padded to this many digits: string order is log order."""

PURGE_INTERVAL = 3600.0


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


IN_CHUNK = 500
"""Values bound in one ``IN (...)`` at most."""


def _chunks(values: Sequence[str] | set[str]) -> list[list[str]]:
    ordered = sorted(values)
    return [ordered[i : i + IN_CHUNK] for i in range(0, len(ordered), IN_CHUNK)]


# Reads by many values (an erasure's, an access request's): each ends in
# ``IN`` and is completed by :func:`_rows`.
_INSTALLS_BY_KEY = "SELECT DISTINCT install_id FROM install_keys WHERE app_id=? AND key IN"
_INSTALLS_BY_ID = "SELECT install_id, body FROM installs WHERE app_id=? AND install_id IN"
_TOUCHES_BY_KEY = "SELECT DISTINCT click_id FROM touch_keys WHERE app_id=? AND key IN"
_TOUCHES_BY_ID = "SELECT click_id, body FROM touches WHERE app_id=? AND click_id IN"
_ITEMS = "SELECT item FROM install_items WHERE app_id=? AND install_id IN"


def _rows(db: Db, select: str, app_id: str, values: set[str]) -> list[tuple[Any, ...]]:
    """``select ... IN (values)`` for the app, :data:`IN_CHUNK` values at a time."""
    out: list[tuple[Any, ...]] = []
    for chunk in _chunks(values):
        out += db.execute(f"{select} ({_placeholders(len(chunk))})", (app_id, *chunk)).fetchall()
    return out


Db = sqlite3.Connection


class SqliteBackend:
    """:class:`~lookback.touchpoint_store.backend.StoreBackend` on SQLite."""

    def __init__(
        self,
        path: str | Path,
        clock: Clock = now_micros,
        outcome_retention: int = OUTCOME_RETENTION,
        log_outcomes: bool = True,
    ) -> None:
        self.clock = clock
        self.outcome_retention = outcome_retention
        self.log_outcomes = log_outcomes
        """False: no outcomes log, no decision index (benchmarks only)."""
        self.db = SqliteDatabase(path, _MIGRATIONS, name="store")
        self._purger: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.db.open()
        await self.db.write(self._backfill)
        await self.purge_expired()
        self._purger = asyncio.create_task(self._purge_loop())

    async def close(self) -> None:
        if self._purger is not None:
            await cancel_and_wait(self._purger)
        await self.db.close()

    async def healthy(self) -> bool:
        try:
            self.db.read(lambda db: db.execute("SELECT 1").fetchone())
        except Exception:
            return False
        return True

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            await self.purge_expired()

    @staticmethod
    def _purge(db: Db, now: int) -> int:
        removed = 0
        for table in (
            "touches",
            "touch_keys",
            "installs",
            "install_keys",
            "events",
            "install_items",
        ):
            removed += db.execute(f"DELETE FROM {table} WHERE expires_at < ?", (now,)).rowcount
        # The log expires in its own order (a fixed retention from the record
        # time): everything before its first live entry goes.
        removed += db.execute(
            "DELETE FROM outcomes WHERE seq < COALESCE("
            "(SELECT seq FROM outcomes WHERE expires_at >= ? ORDER BY seq LIMIT 1),"
            " (SELECT MAX(seq) + 1 FROM outcomes), 0)",
            (now,),
        ).rowcount
        # The decision index by app and time (its by-time index).
        for (app_id,) in db.execute("SELECT app_id FROM apps").fetchall():
            removed += db.execute(
                "DELETE FROM decisions WHERE app_id = ? AND decided_at < ?",
                (app_id, now - DECISION_RETENTION),
            ).rowcount
        return removed

    async def purge_expired(self) -> int:
        """Delete every record past its retention; returns how many rows went."""
        return await self.db.write(self._purge, self.clock())

    # --- touches ---------------------------------------------------------

    def _put_touches(self, db: Db, touches: Sequence[store_pb.IndexedTouch]) -> int:
        stored = 0
        new: dict[str, list[touch_pb2.Touch]] = {}
        for item in touches:
            t = item.touch
            engaged = ts_to_micros(t.engaged_at)
            expires = engaged + touch_retention(t)
            cur = db.execute(
                "INSERT OR IGNORE INTO touches VALUES (?,?,?,?,?)",
                (t.app_id, t.click_id, engaged, expires, t.SerializeToString()),
            )
            if cur.rowcount == 0:
                continue
            stored += 1
            new.setdefault(t.app_id, []).append(t)
            db.executemany(
                "INSERT OR IGNORE INTO touch_keys VALUES (?,?,?,?,?)",
                [(t.app_id, k, engaged, t.click_id, expires) for k in set(item.match_keys)],
            )
        # The reports' entry: only touches this write created (a repeated
        # click id creates nothing), named after the first (unique per app).
        for app_id, created in new.items():
            self._append(
                db, app_id, f"t:{created[0].click_id}", touches_outcome(created, self.clock())
            )
        return stored

    async def put_touches(self, touches: Sequence[store_pb.IndexedTouch]) -> int:
        return await self.db.write(self._put_touches, list(touches))

    def _find_touches(
        self,
        db: Db,
        app_id: str,
        keys: Sequence[str],
        click_ids: Sequence[str],
        after: int,
        before: int,
    ) -> list[touch_pb2.Touch]:
        now = self.clock()
        ids: set[str] = set(click_ids)
        if keys:
            rows = db.execute(
                "SELECT click_id FROM touch_keys WHERE app_id=?"
                f" AND key IN ({_placeholders(len(keys))})"
                " AND engaged_at BETWEEN ? AND ? AND expires_at >= ?",
                (app_id, *keys, after, before, now),
            ).fetchall()
            ids.update(r[0] for r in rows)
        if not ids:
            return []
        found = db.execute(
            f"SELECT body FROM touches WHERE app_id=? AND click_id IN ({_placeholders(len(ids))})"
            " AND expires_at >= ?",
            (app_id, *sorted(ids), now),
        ).fetchall()
        out = []
        for (body,) in found:
            touch = touch_pb2.Touch.FromString(body)
            # Click ids asked for by name come back whatever their time: the
            # rules must see that the click exists (and judge its window).
            if touch.click_id in click_ids or after <= ts_to_micros(touch.engaged_at) <= before:
                out.append(touch)
        return out

    async def find_touches(
        self, app_id: str, keys: Sequence[str], click_ids: Sequence[str], after: int, before: int
    ) -> list[touch_pb2.Touch]:
        return self.db.read(self._find_touches, app_id, keys, click_ids, after, before)

    # --- installs --------------------------------------------------------

    def _get_install(self, db: Db, app_id: str, install_id: str) -> store_pb.InstallRecord | None:
        row = db.execute(
            "SELECT body FROM installs WHERE app_id=? AND install_id=? AND expires_at >= ?",
            (app_id, install_id, self.clock()),
        ).fetchone()
        return store_pb.InstallRecord.FromString(row[0]) if row else None

    def _find_installs(
        self, db: Db, app_id: str, keys: Sequence[str]
    ) -> list[store_pb.InstallRecord]:
        if not keys:
            return []
        rows = db.execute(
            "SELECT i.body FROM installs i WHERE i.app_id=? AND i.expires_at >= ?"
            " AND i.install_id IN (SELECT install_id FROM install_keys"
            f" WHERE app_id=? AND key IN ({_placeholders(len(keys))}))"
            " ORDER BY i.installed_at DESC, i.install_id",
            (app_id, self.clock(), app_id, *keys),
        ).fetchall()
        return [store_pb.InstallRecord.FromString(r[0]) for r in rows]

    def _gather(self, db: Db, q: InstallQuery) -> InstallFacts:
        existing = self._get_install(db, q.app_id, q.install_id)
        if existing is not None:
            return InstallFacts(existing, [], [])
        return InstallFacts(
            None,
            self._find_touches(db, q.app_id, q.touch_keys, q.click_ids, q.after, q.before),
            self._find_installs(db, q.app_id, q.device_keys),
        )

    async def gather_install_facts(self, q: InstallQuery) -> InstallFacts:
        return self.db.read(self._gather, q)

    # --- the outcomes log and the decision index ----------------------------

    def _append(self, db: Db, app_id: str, source: str, outcome: store_pb.Outcome | bytes) -> None:
        """One entry of the log, in the caller's transaction. Callers append
        once per source: a decision when its index row is new, an event when
        it is, touches when the write created them."""
        if not self.log_outcomes:
            return
        body = outcome if isinstance(outcome, bytes) else outcome.SerializeToString()
        db.execute(
            "INSERT INTO outcomes (app_id, source, expires_at, body) VALUES (?,?,?,?)",
            (app_id, source, self.clock() + self.outcome_retention, body),
        )

    def _append_decision(
        self,
        db: Db,
        app_id: str,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob],
        explanation: bytes | None = None,
    ) -> None:
        """The decision's index row and, when that is new, its log entry (a
        retried create that finds its own decision appends nothing more)."""
        if not self.log_outcomes:
            return
        now = self.clock()
        at = decision_time(decision, now)
        body = decision.SerializeToString()
        cur = db.execute(
            "INSERT OR IGNORE INTO decisions (app_id, decision_id, decided_at, kind,"
            " media_source, expires_at, body, explanation) VALUES (?,?,?,?,?,?,?,?)",
            (
                app_id,
                decision.decision_id,
                at,
                decision.kind,
                decision.media_source,
                at + DECISION_RETENTION,
                body,
                explanation,
            ),
        )
        if cur.rowcount:
            entry = decision_outcome_bytes(body, postbacks, now)
            self._append(db, app_id, f"d:{decision.decision_id}", entry)

    def _read_outcomes(
        self, db: Db, app_id: str, after_cursor: str, limit: int
    ) -> tuple[list[store_pb.Outcome], str]:
        after = 0
        if after_cursor:
            if not (after_cursor.isdigit() and len(after_cursor) == CURSOR_DIGITS):
                bad_cursor()
            after = int(after_cursor)
        rows = db.execute(
            "SELECT seq, body FROM outcomes WHERE app_id=? AND seq > ? AND expires_at >= ?"
            " ORDER BY seq LIMIT ?",
            (app_id, after, self.clock(), limit or DEFAULT_LIMIT),
        ).fetchall()
        out = []
        for seq, body in rows:
            outcome = store_pb.Outcome.FromString(body)
            outcome.cursor = f"{seq:0{CURSOR_DIGITS}d}"
            out.append(outcome)
        return out, out[-1].cursor if out else after_cursor

    async def read_outcomes(
        self, app_id: str, after_cursor: str, limit: int, rewind: int = 0
    ) -> tuple[list[store_pb.Outcome], str]:
        """The log in commit order (one writer): no entry lands behind a cursor,
        so ``rewind`` has nothing to re-read."""
        return self.db.read(self._read_outcomes, app_id, after_cursor, limit)

    def _get_decision(self, db: Db, app_id: str, decision_id: str) -> decision_pb2.Decision | None:
        row = db.execute(
            "SELECT body FROM decisions WHERE app_id=? AND decision_id=? AND expires_at >= ?",
            (app_id, decision_id, self.clock()),
        ).fetchone()
        return decision_pb2.Decision.FromString(row[0]) if row else None

    async def get_decision(self, app_id: str, decision_id: str) -> decision_pb2.Decision | None:
        return self.db.read(self._get_decision, app_id, decision_id)

    def _get_open_explanation(self, db: Db, app_id: str, decision_id: str) -> bytes | None:
        row = db.execute(
            "SELECT explanation FROM decisions"
            " WHERE app_id=? AND decision_id=? AND expires_at >= ?",
            (app_id, decision_id, self.clock()),
        ).fetchone()
        return row[0] if row else None

    async def get_open_explanation(self, app_id: str, decision_id: str) -> bytes | None:
        return self.db.read(self._get_open_explanation, app_id, decision_id)

    def _list_decisions(
        self, db: Db, app_id: str, which: DecisionFilter, page_size: int, token: str
    ) -> tuple[list[decision_pb2.Decision], str]:
        size = page_size or DEFAULT_LIMIT
        sql = (
            "SELECT decided_at, decision_id, body FROM decisions"
            " WHERE app_id=? AND decided_at >= ? AND decided_at < ? AND expires_at >= ?"
        )
        args: list[object] = [app_id, which.start, which.end, self.clock()]
        last = parse_page_token(token)
        if last is not None:
            sql += " AND (decided_at < ? OR (decided_at = ? AND decision_id < ?))"
            args += [last[0], last[0], last[1]]
        if which.kinds:
            sql += f" AND kind IN ({_placeholders(len(which.kinds))})"
            args += sorted(which.kinds)
        else:
            sql += " AND kind != ?"
            args.append(decision_pb2.DECISION_KIND_NONE)
        if which.media_source:
            sql += " AND media_source = ?"
            args.append(which.media_source)
        sql += " ORDER BY decided_at DESC, decision_id DESC LIMIT ?"
        args.append(size + 1)
        rows = db.execute(sql, args).fetchall()
        decisions = [decision_pb2.Decision.FromString(body) for _, _, body in rows[:size]]
        more = len(rows) > size
        return decisions, page_token(rows[size - 1][0], rows[size - 1][1]) if more else ""

    async def list_decisions(
        self, app_id: str, which: DecisionFilter, page_size: int, page_token: str
    ) -> tuple[list[decision_pb2.Decision], str]:
        return self.db.read(self._list_decisions, app_id, which, page_size, page_token)

    # --- installs, continued ----------------------------------------------

    def _create_install(
        self,
        db: Db,
        record: store_pb.InstallRecord,
        postbacks: Sequence[postback_pb2.PostbackJob],
    ) -> tuple[bool, store_pb.InstallRecord]:
        i = record.install
        installed = ts_to_micros(i.installed_at)
        expires = installed + INSTALL_RETENTION
        cur = db.execute(
            "INSERT OR IGNORE INTO installs VALUES (?,?,?,?,?)",
            (i.app_id, i.install_id, installed, expires, record.SerializeToString()),
        )
        if cur.rowcount == 0:
            existing = self._get_install(db, i.app_id, i.install_id)
            assert existing is not None
            if existing.decision.decision_id == record.decision.decision_id:
                # A retry of this very create: its entry was appended with the
                # record (same transaction); this finds it and adds nothing.
                self._append_decision(db, i.app_id, existing.decision, postbacks)
            return False, existing
        db.executemany(
            "INSERT OR IGNORE INTO install_keys VALUES (?,?,?,?,?)",
            [(i.app_id, k, installed, i.install_id, expires) for k in set(record.match_keys)],
        )
        self._append_decision(db, i.app_id, record.decision, postbacks)
        return True, record

    async def create_install_record(
        self, record: store_pb.InstallRecord, postbacks: Sequence[postback_pb2.PostbackJob] = ()
    ) -> tuple[bool, store_pb.InstallRecord]:
        return await self.db.write(self._create_install, record, list(postbacks))

    async def get_install_record(
        self, app_id: str, install_id: str
    ) -> store_pb.InstallRecord | None:
        return self.db.read(self._get_install, app_id, install_id)

    def _record_open(
        self,
        db: Db,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob],
        explanation: bytes | None,
    ) -> store_pb.InstallRecord | None:
        record = self._get_install(db, open_.app_id, open_.install_id)
        if record is None:
            return None
        if decision.kind == decision_pb2.DECISION_KIND_REENGAGEMENT:
            record.latest_reengagement.CopyFrom(decision)
            db.execute(
                "UPDATE installs SET body=? WHERE app_id=? AND install_id=?",
                (record.SerializeToString(), open_.app_id, open_.install_id),
            )
        self._append_decision(db, open_.app_id, decision, postbacks, explanation)
        at = decision_time(decision, self.clock())
        self._item(db, open_.app_id, open_.install_id, OPEN_ITEM + decision.decision_id, at)
        return record

    @staticmethod
    def _item(db: Db, app_id: str, install_id: str, item: str, at: int) -> None:
        db.execute(
            "INSERT OR IGNORE INTO install_items VALUES (?,?,?,?,?)",
            (app_id, install_id, item, at, at + INSTALL_RETENTION),
        )

    async def record_open_decision(
        self,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
        explanation: bytes | None = None,
    ) -> store_pb.InstallRecord | None:
        return await self.db.write(self._record_open, open_, decision, list(postbacks), explanation)

    # --- events ----------------------------------------------------------

    def _put_event(
        self,
        db: Db,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob],
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        expires = ts_to_micros(event.occurred_at) + EVENT_RETENTION
        cur = db.execute(
            "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?)",
            (
                event.app_id,
                event.event_id,
                expires,
                event.SerializeToString(),
                attribution.SerializeToString(),
            ),
        )
        if cur.rowcount:
            now = self.clock()
            self._append(
                db,
                event.app_id,
                f"e:{event.event_id}",
                event_outcome(event, attribution, postbacks, now),
            )
            self._item(db, event.app_id, event.install_id, EVENT_ITEM + event.event_id, now)
            return True, attribution
        row = db.execute(
            "SELECT attribution FROM events WHERE app_id=? AND event_id=?",
            (event.app_id, event.event_id),
        ).fetchone()
        return False, decision_pb2.EventAttribution.FromString(row[0])

    async def put_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        return await self.db.write(self._put_event, event, attribution, list(postbacks))

    # --- apps ------------------------------------------------------------

    @staticmethod
    def _create_app(db: Db, app: app_pb2.App) -> bool:
        cur = db.execute(
            "INSERT OR IGNORE INTO apps VALUES (?,?,?)",
            (app.app_id, app.version, app.SerializeToString()),
        )
        return cur.rowcount == 1

    async def create_app(self, app: app_pb2.App) -> bool:
        return await self.db.write(self._create_app, app)

    @staticmethod
    def _get_app(db: Db, app_id: str) -> app_pb2.App | None:
        row = db.execute("SELECT body FROM apps WHERE app_id=?", (app_id,)).fetchone()
        return app_pb2.App.FromString(row[0]) if row else None

    async def get_app(self, app_id: str) -> app_pb2.App | None:
        return self.db.read(self._get_app, app_id)

    @staticmethod
    def _list_apps(db: Db, after_app_id: str, limit: int) -> list[str]:
        rows = db.execute(
            "SELECT app_id FROM apps WHERE app_id > ? ORDER BY app_id LIMIT ?",
            (after_app_id, limit),
        ).fetchall()
        return [r[0] for r in rows]

    async def list_apps(self, after_app_id: str, limit: int) -> list[str]:
        return self.db.read(self._list_apps, after_app_id, limit)

    @staticmethod
    def _replace_app(db: Db, app: app_pb2.App, expected_version: int) -> bool:
        cur = db.execute(
            "UPDATE apps SET version=?, body=? WHERE app_id=? AND version=?",
            (app.version, app.SerializeToString(), app.app_id, expected_version),
        )
        return cur.rowcount == 1

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> bool:
        return await self.db.write(self._replace_app, app, expected_version)

    # --- data subjects: erasure and access (docs/privacy.md) ---------------

    def _backfill(self, db: Db) -> None:
        """Install items of the opens and events recorded before schema 5."""
        if db.execute("SELECT 1 FROM backfills WHERE name='install_items'").fetchone():
            return
        for app_id, event_id, body in db.execute("SELECT app_id, event_id, body FROM events"):
            event = install_pb2.InAppEvent.FromString(body)
            at = ts_to_micros(event.occurred_at)
            self._item(db, app_id, event.install_id, EVENT_ITEM + event_id, at)
        rows = db.execute(
            f"SELECT app_id, decided_at, body FROM decisions WHERE kind IN ({_placeholders(2)})",
            OPEN_KINDS,
        ).fetchall()
        for app_id, at, body in rows:
            decision = decision_pb2.Decision.FromString(body)
            self._item(db, app_id, decision.install_id, OPEN_ITEM + decision.decision_id, at)
        db.execute("INSERT INTO backfills VALUES ('install_items')")

    def _discover(
        self,
        db: Db,
        app_id: str,
        keys: Sequence[str],
        install_ids: Sequence[str] = (),
        click_ids: Sequence[str] = (),
    ) -> tuple[set[str], dict[str, store_pb.InstallRecord], dict[str, touch_pb2.Touch], list[str]]:
        """The devices' keys (the named ones and those of the install records
        they find), the install records under any of them, the touches, and
        the install items (``d:``/``e:`` ids)."""
        named = set(keys)
        ids = set(install_ids) | {r[0] for r in _rows(db, _INSTALLS_BY_KEY, app_id, named)}
        records = {
            i: store_pb.InstallRecord.FromString(body)
            for i, body in _rows(db, _INSTALLS_BY_ID, app_id, ids)
        }
        wanted = set(named)
        for record in records.values():
            wanted |= record_keys(record)
        more = {r[0] for r in _rows(db, _INSTALLS_BY_KEY, app_id, wanted - named)} - set(records)
        for i, body in _rows(db, _INSTALLS_BY_ID, app_id, more):
            records[i] = store_pb.InstallRecord.FromString(body)
        touch_ids = set(click_ids) | {r[0] for r in _rows(db, _TOUCHES_BY_KEY, app_id, wanted)}
        touches = {
            c: touch_pb2.Touch.FromString(body)
            for c, body in _rows(db, _TOUCHES_BY_ID, app_id, touch_ids)
        }
        items = [r[0] for r in _rows(db, _ITEMS, app_id, ids | set(records))]
        return wanted, records, touches, items

    def _erase(
        self,
        db: Db,
        app_id: str,
        keys: Sequence[str],
        install_ids: Sequence[str],
        click_ids: Sequence[str],
    ) -> Erased:
        """One transaction (the writer's): decisions are written by the same
        writer, so none lands half-way through."""
        wanted, records, touches, items = self._discover(db, app_id, keys, install_ids, click_ids)
        out = Erased(install_ids=set(records), click_ids=set(touches))
        decision_ids = {r.decision.decision_id for r in records.values() if r.decision.decision_id}
        decision_ids |= {
            r.latest_reengagement.decision_id
            for r in records.values()
            if r.latest_reengagement.decision_id
        }
        decision_ids |= {i[len(OPEN_ITEM) :] for i in items if i.startswith(OPEN_ITEM)}
        out.event_ids = {i[len(EVENT_ITEM) :] for i in items if i.startswith(EVENT_ITEM)}
        # Every index row of the devices' keys, then each record's own rows
        # (a touch's IP key, an install's keys).
        for table in ("touch_keys", "install_keys"):
            for chunk in _chunks(wanted):
                db.execute(
                    f"DELETE FROM {table} WHERE app_id=? AND key IN ({_placeholders(len(chunk))})",
                    (app_id, *chunk),
                )
        db.executemany(
            "DELETE FROM touch_keys WHERE app_id=? AND key=? AND engaged_at=? AND click_id=?",
            [
                (app_id, k, ts_to_micros(t.engaged_at), t.click_id)
                for t in touches.values()
                for k in touch_keys(t)
            ],
        )
        db.executemany(
            "DELETE FROM install_keys WHERE app_id=? AND key=? AND installed_at=? AND install_id=?",
            [
                (app_id, k, ts_to_micros(r.install.installed_at), i)
                for i, r in records.items()
                for k in r.match_keys
            ],
        )
        for table, column, values in (
            ("touches", "click_id", out.click_ids),
            ("installs", "install_id", out.install_ids),
            ("install_items", "install_id", out.install_ids),
            ("events", "event_id", out.event_ids),
        ):
            for chunk in _chunks(values):
                db.execute(
                    f"DELETE FROM {table} WHERE app_id=?"
                    f" AND {column} IN ({_placeholders(len(chunk))})",
                    (app_id, *chunk),
                )
        found: list[str] = []
        for chunk in _chunks(decision_ids):
            found += [
                r[0]
                for r in db.execute(
                    "DELETE FROM decisions WHERE app_id=?"
                    f" AND decision_id IN ({_placeholders(len(chunk))}) RETURNING decision_id",
                    (app_id, *chunk),
                )
            ]
        out.decision_ids = set(found) | {
            r.decision.decision_id for r in records.values() if r.decision.decision_id
        }
        self._redact_log(db, app_id, out, decision_ids)
        return out

    def _redact_log(self, db: Db, app_id: str, out: Erased, decision_ids: set[str]) -> None:
        """The erased decisions' and events' log entries keep their counts only."""
        sources = {f"d:{d}" for d in decision_ids} | {f"e:{e}" for e in out.event_ids}
        if not sources:
            return
        seqs = [
            seq
            for seq, source in db.execute(
                "SELECT seq, source FROM outcomes WHERE app_id=?", (app_id,)
            ).fetchall()
            if source in sources
        ]
        for seq in seqs:
            (body,) = db.execute("SELECT body FROM outcomes WHERE seq=?", (seq,)).fetchone()
            entry = store_pb.Outcome.FromString(body)
            out.jobs_of([entry])
            db.execute(
                "UPDATE outcomes SET body=? WHERE seq=?",
                (redacted_outcome(entry).SerializeToString(), seq),
            )

    async def erase_devices(
        self, app_id: str, keys: Sequence[str], install_ids: Sequence[str], click_ids: Sequence[str]
    ) -> Erased:
        return await self.db.write(
            self._erase, app_id, list(keys), list(install_ids), list(click_ids)
        )

    def _device_records(self, db: Db, app_id: str, keys: Sequence[str]) -> store_pb.DeviceRecords:
        _, records, touches, items = self._discover(db, app_id, keys)
        out = records_of(touches.values(), records.values())
        opens = sorted(i[len(OPEN_ITEM) :] for i in items if i.startswith(OPEN_ITEM))
        for chunk in _chunks(opens):
            for body, explanation in db.execute(
                "SELECT body, explanation FROM decisions WHERE app_id=?"
                f" AND decision_id IN ({_placeholders(len(chunk))}) ORDER BY decided_at",
                (app_id, *chunk),
            ):
                item = out.decisions.add(decision=decision_pb2.Decision.FromString(body))
                if explanation:
                    item.explanation.ParseFromString(explanation)
        events = sorted(i[len(EVENT_ITEM) :] for i in items if i.startswith(EVENT_ITEM))
        for chunk in _chunks(events):
            for body, attribution in db.execute(
                "SELECT body, attribution FROM events WHERE app_id=?"
                f" AND event_id IN ({_placeholders(len(chunk))}) ORDER BY event_id",
                (app_id, *chunk),
            ):
                out.events.add(
                    event=install_pb2.InAppEvent.FromString(body),
                    attribution=decision_pb2.EventAttribution.FromString(attribution),
                )
        return out

    async def device_records(self, app_id: str, keys: Sequence[str]) -> store_pb.DeviceRecords:
        return self.db.read(self._device_records, app_id, list(keys))

    @staticmethod
    def _put_erasure(db: Db, erasure: erasure_pb2.StoredErasure) -> None:
        db.execute(
            "INSERT OR REPLACE INTO erasures VALUES (?,?,?)",
            (
                erasure.erasure.erasure_id,
                int(erasure.erasure.state == erasure_pb2.ERASURE_STATE_PENDING),
                erasure.SerializeToString(),
            ),
        )

    async def put_erasure(self, erasure: erasure_pb2.StoredErasure) -> None:
        await self.db.write(self._put_erasure, erasure)

    async def get_erasure(self, erasure_id: str) -> erasure_pb2.StoredErasure | None:
        row = self.db.read(
            lambda db: db.execute(
                "SELECT body FROM erasures WHERE erasure_id=?", (erasure_id,)
            ).fetchone()
        )
        return erasure_pb2.StoredErasure.FromString(row[0]) if row else None

    async def pending_erasures(self, limit: int) -> list[erasure_pb2.Erasure]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT body FROM erasures WHERE pending=1 ORDER BY erasure_id LIMIT ?", (limit,)
            ).fetchall()
        )
        return [erasure_pb2.StoredErasure.FromString(r[0]).erasure for r in rows]

    # --- links -------------------------------------------------------------

    @staticmethod
    def _put_link(db: Db, link: link_pb2.Link, create: bool) -> bool:
        verb = "INSERT OR IGNORE" if create else "INSERT OR REPLACE"
        cur = db.execute(
            f"{verb} INTO links VALUES (?,?,?)", (link.code, link.app_id, link.SerializeToString())
        )
        return cur.rowcount == 1

    async def put_link(self, link: link_pb2.Link, create: bool) -> bool:
        return await self.db.write(self._put_link, link, create)

    async def get_link(self, code: str) -> link_pb2.Link | None:
        row = self.db.read(
            lambda db: db.execute("SELECT body FROM links WHERE code=?", (code,)).fetchone()
        )
        return link_pb2.Link.FromString(row[0]) if row else None

    async def list_links(self, app_id: str, after_code: str, limit: int) -> list[link_pb2.Link]:
        rows = self.db.read(
            lambda db: db.execute(
                "SELECT body FROM links WHERE app_id=? AND code > ? ORDER BY code LIMIT ?",
                (app_id, after_code, limit),
            ).fetchall()
        )
        return [link_pb2.Link.FromString(r[0]) for r in rows]
