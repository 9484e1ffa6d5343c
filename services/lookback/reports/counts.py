"""Where the reports keep their counts: in the postback dispatcher's own
backend (the embedded SQLite file of its queue, or its Redis), next to the
cursors the log's readers keep.

Exactness rests on one rule: a fact is counted, and remembered as counted
(its ``source``), in one atomic step (a SQLite transaction; a Lua script in
Redis), together with the reader's cursor. So a fact read twice (a
redelivered page, a rewound read, a reader restarted from an older cursor,
two readers at once) counts once, and a crash leaves either all of a step
or none of it. Sources are remembered for :data:`SEEN_DAYS` days, longer
than the log keeps an entry (7 days), so no re-read can count twice.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from lookback.core.sqlite import SqliteDatabase
from lookback.domain.durations import DAY
from lookback.domain.reports import Cell
from lookback.reports.facts import Fact

SEEN_DAYS = 9
"""Days a counted fact's source is remembered (the log keeps 7)."""

MIGRATION = """
CREATE TABLE report_cells (
    app_id TEXT NOT NULL, hour INTEGER NOT NULL, media_source TEXT NOT NULL,
    campaign TEXT NOT NULL, kind TEXT NOT NULL, metric TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (app_id, hour, media_source, campaign, kind, metric)) WITHOUT ROWID;
CREATE TABLE report_seen (
    app_id TEXT NOT NULL, source TEXT NOT NULL, seen_at REAL NOT NULL,
    PRIMARY KEY (app_id, source)) WITHOUT ROWID;
CREATE INDEX report_seen_at ON report_seen (seen_at);
"""
"""The SQLite tables (a migration of the postback queue's file)."""

CellValue = tuple[Cell, str, int]


class ReportCounts(Protocol):
    async def add(
        self, app_id: str, facts: Sequence[Fact], cursor: tuple[str, str] | None, now: float
    ) -> int:
        """Counts each fact not counted before and, in the same atomic step,
        sets the cursor ``(name, value)`` when given; how many were new."""
        ...

    async def cells(self, app_id: str, first_hour: int, end_hour: int) -> list[CellValue]:
        """Every counted cell of the app with ``first_hour <= hour < end_hour``."""
        ...

    async def forget(self, before: float) -> int:
        """Drop remembered sources counted before ``before`` (seconds)."""
        ...

    async def get_cursor(self, name: str) -> str:
        """The cursor ``add`` last set under ``name`` ("" for none)."""
        ...


class SqliteCounts:
    """:class:`ReportCounts` in the queue's SQLite file."""

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    @staticmethod
    def _add(
        db: sqlite3.Connection,
        app_id: str,
        facts: Sequence[Fact],
        cursor: tuple[str, str] | None,
        now: float,
    ) -> int:
        new = 0
        for fact in facts:
            cur = db.execute(
                "INSERT OR IGNORE INTO report_seen VALUES (?,?,?)", (app_id, fact.source, now)
            )
            if not cur.rowcount:
                continue
            new += 1
            db.executemany(
                "INSERT INTO report_cells VALUES (?,?,?,?,?,?,?) ON CONFLICT DO UPDATE"
                " SET value = value + excluded.value",
                [
                    (
                        app_id,
                        c.cell.hour,
                        c.cell.media_source,
                        c.cell.campaign,
                        c.cell.kind,
                        c.metric,
                        c.amount,
                    )
                    for c in fact.counts
                ],
            )
        if cursor is not None:
            db.execute("INSERT OR REPLACE INTO cursors VALUES (?,?)", cursor)
        return new

    async def add(
        self, app_id: str, facts: Sequence[Fact], cursor: tuple[str, str] | None, now: float
    ) -> int:
        return await self.db.write(self._add, app_id, list(facts), cursor, now)

    @staticmethod
    def _cells(db: sqlite3.Connection, app_id: str, first: int, end: int) -> list[CellValue]:
        rows = db.execute(
            "SELECT hour, media_source, campaign, kind, metric, value FROM report_cells"
            " WHERE app_id=? AND hour>=? AND hour<?",
            (app_id, first, end),
        ).fetchall()
        return [(Cell(h, m, c, k), metric, v) for h, m, c, k, metric, v in rows]

    async def cells(self, app_id: str, first_hour: int, end_hour: int) -> list[CellValue]:
        return self.db.read(self._cells, app_id, first_hour, end_hour)

    @staticmethod
    def _forget(db: sqlite3.Connection, before: float) -> int:
        return db.execute("DELETE FROM report_seen WHERE seen_at < ?", (before,)).rowcount

    async def forget(self, before: float) -> int:
        return await self.db.write(self._forget, before)

    async def get_cursor(self, name: str) -> str:
        row = self.db.read(
            lambda db: db.execute("SELECT value FROM cursors WHERE name=?", (name,)).fetchone()
        )
        return str(row[0]) if row else ""


# KEYS: none (keys are built from the prefix; one Redis, not a cluster).
# ARGV: prefix, app id, today (days since the epoch), cursor name ('' for
# none), cursor value, facts as JSON [[source, [[day, field, amount], ...]], ...].
_ADD = """
local p, app, today = ARGV[1], ARGV[2], tonumber(ARGV[3])
local facts = cjson.decode(ARGV[6])
local seen = p .. 'seen:' .. app .. ':'
local new = 0
for _, f in ipairs(facts) do
  local counted = false
  for d = today - ARGV[7] + 1, today do
    if redis.call('SISMEMBER', seen .. d, f[1]) == 1 then counted = true break end
  end
  if not counted then
    redis.call('SADD', seen .. today, f[1])
    for _, c in ipairs(f[2]) do
      redis.call('HINCRBY', p .. 'report:' .. app .. ':' .. c[1], c[2], c[3])
    end
    new = new + 1
  end
end
if new > 0 then
  redis.call('EXPIREAT', seen .. today, string.format('%d', (today + ARGV[7] + 1) * 86400))
end
if ARGV[4] ~= '' then redis.call('HSET', p .. 'cursors', ARGV[4], ARGV[5]) end
return new
"""


def _cells_of(fact: Fact) -> list[list[Any]]:
    """A fact's counts as the script takes them: ``[day, field, amount]``
    (the amount a string: revenue in millionths can exceed a double's 53 bits)."""
    return [[c.cell.hour // DAY, _field(c.cell, c.metric), str(c.amount)] for c in fact.counts]


def _field(cell: Cell, metric: str) -> str:
    return json.dumps([cell.hour, cell.media_source, cell.campaign, cell.kind, metric])


class RedisCounts:
    """:class:`ReportCounts` in the queue's Redis: a hash per app and UTC day
    (``report:<app>:<day>``, fields ``[hour, media_source, campaign, kind,
    metric]`` as JSON), and a set of counted sources per app and day counted
    (``seen:<app>:<day>``, expiring after :data:`SEEN_DAYS`)."""

    def __init__(self, connection: Callable[[], Any], prefix: str) -> None:
        self._connection = connection
        self.prefix = prefix
        self._script: Any = None

    @property
    def redis(self) -> Any:
        """The queue's client (it connects when the queue opens)."""
        return self._connection()

    async def add(
        self, app_id: str, facts: Sequence[Fact], cursor: tuple[str, str] | None, now: float
    ) -> int:
        if self._script is None or self._script.registered_client is not self.redis:
            self._script = self.redis.register_script(_ADD)
        payload = [
            [
                f.source,
                [[c.cell.hour // DAY, _field(c.cell, c.metric), str(c.amount)] for c in f.counts],
            ]
            for f in facts
        ]
        name, value = cursor or ("", "")
        args = [self.prefix, app_id, int(now // 86400), name, value, json.dumps(payload), SEEN_DAYS]
        return int(await self._script(args=args))

    async def cells(self, app_id: str, first_hour: int, end_hour: int) -> list[CellValue]:
        pipe = self.redis.pipeline(transaction=False)
        for day in range(first_hour // DAY, (end_hour - 1) // DAY + 1):
            pipe.hgetall(f"{self.prefix}report:{app_id}:{day}")
        out: list[CellValue] = []
        for fields in await pipe.execute():
            for raw, value in fields.items():
                hour, media_source, campaign, kind, metric = json.loads(raw)
                if first_hour <= hour < end_hour:
                    out.append((Cell(hour, media_source, campaign, kind), metric, int(value)))
        return out

    async def forget(self, before: float) -> int:
        return 0  # the sets expire by themselves

    async def get_cursor(self, name: str) -> str:
        value = await self.redis.hget(self.prefix + "cursors", name)
        return value.decode() if isinstance(value, bytes) else str(value or "")
