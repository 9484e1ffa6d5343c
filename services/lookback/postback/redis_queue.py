"""The postback queue on Redis Streams (``redis.asyncio`` from redis-py).

Keys (prefix ``lookback:pb:``):

- ``job:<id>``: a hash with the job (``body``), ``state``, ``attempts``,
  ``last_error``, ``created_at`` and ``delivered_at`` (``cancelled_at`` once
  cancelled); created once per job id, so enqueuing the same id twice queues
  it once; it expires ``retention`` seconds after delivery or cancellation
  (dead and pending jobs do not expire);
- ``stream:<lane>``: the lane's jobs due now (a lane is a partner and a
  destination host, :mod:`lookback.postback.lanes`), read by the consumer
  group ``dispatchers``; a worker that dies leaves its entries pending, and
  ``XAUTOCLAIM`` hands them to another worker once their lease (idle time)
  runs out; an entry is deleted once acknowledged, so the stream holds
  only unfinished work; ``stream`` (no lane) holds what was queued before
  lanes existed, and is read like any lane's;
- ``delayed:<lane>``: a sorted set of the lane's jobs waiting for a retry,
  scored by due time; due ones move back into the lane's stream;
- ``lanes``: the set of lanes that may have jobs (a lane with none left is
  taken out by the claim that finds it empty); a claim counts each lane's
  due entries (its stream's length less its entries in flight) and reads
  from each lane as many as the dispatcher's plan gives it;
- ``dead``: the dead-letter stream (job id and reason), besides the job's
  own state ``DEAD``; capped at about a million records.

A delivered job's state is set before its stream entry is acknowledged; a
reclaimed entry whose job is already delivered is acknowledged and skipped,
so a job recorded as delivered is never sent again.

Cancelling (an erasure, :meth:`RedisQueue.cancel`): each named job that is
pending or dead becomes ``CANCELLED`` (out of ``delayed``; a stream entry of
its is acknowledged and skipped by the worker that claims it, and counts in
:meth:`~RedisQueue.depth` until then), and every named job has its URL, body
and trace context forgotten, atomically per job. The cancelled hash stays as
a tombstone (enqueuing the id again queues nothing) and expires after
``retention``. An outcome recorded for a job cancelled while in flight
leaves it cancelled. Jobs named by source (decision or event id) are found
only among the dead letters, by one pass over the ``dead`` stream: nothing
indexes the other jobs by source, and scanning every job hash would take
too long. Pending and delivered jobs are named by id instead: the erasure
knows them from the outcomes log entries that recorded them, and a pending
job is dead within ``max_age`` (24 h) anyway, a delivered one purged after
``retention``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from lookback.api.types.v1 import postback_pb2
from lookback.core import redis_client
from lookback.postback.lanes import lane_of
from lookback.postback.queue import (
    CANCELLED,
    DEAD,
    DELIVERED,
    PENDING,
    JobState,
    Plan,
    batches,
    forget,
    sources_of,
)

PREFIX = "lookback:pb:"
GROUP = "dispatchers"
DEAD_STREAM_MAXLEN = 1_000_000
"""About this many dead-letter records are kept (the jobs' own state stays)."""
HOUSEKEEPING_INTERVAL = 0.1
"""Seconds between moving due retries back and reclaiming dead workers' jobs."""
DEAD_PAGE = 1000
"""Dead-letter records read per round trip when looking jobs up by source."""

# The keys of a lane, in the scripts that go over lanes (ARGV[1] is the
# prefix in each). Keys named in a script rather than passed: Lookback runs
# on a single Redis, not a cluster (docs/redis.md).
_LANE_KEYS = """
local prefix = ARGV[1]
local function stream_of(lane)
  if lane == '' then return prefix .. 'stream' end
  return prefix .. 'stream:' .. lane
end
local function delayed_of(lane)
  if lane == '' then return prefix .. 'delayed' end
  return prefix .. 'delayed:' .. lane
end
local function all_lanes()
  local lanes = redis.call('SMEMBERS', prefix .. 'lanes')
  table.insert(lanes, '')
  return lanes
end
"""

# Create the job once and queue it in its lane, atomically (ARGV: prefix,
# body, state, time, id, lane, group).
_ENQUEUE = (
    _LANE_KEYS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local lane = ARGV[6]
local stream = stream_of(lane)
redis.call('HSET', KEYS[1], 'body', ARGV[2], 'state', ARGV[3], 'attempts', 0,
           'last_error', '', 'created_at', ARGV[4], 'lane', lane)
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, ARGV[7], '0', 'MKSTREAM')
end
if lane ~= '' then redis.call('SADD', prefix .. 'lanes', lane) end
redis.call('HSET', KEYS[1], 'entry', redis.call('XADD', stream, '*', 'id', ARGV[5]))
return 1
"""
)

# Move jobs whose retry is due back into their lane's stream (ARGV: prefix,
# now, at most this many per lane).
_PROMOTE = (
    _LANE_KEYS
    + """
local moved = 0
for _, lane in ipairs(all_lanes()) do
  local delayed = delayed_of(lane)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local entry = redis.call('XADD', stream_of(lane), '*', 'id', id)
    redis.call('HSET', prefix .. 'job:' .. id, 'entry', entry)
  end
  moved = moved + #due
end
return moved
"""
)

# The lanes with due entries (not in flight), and those with entries in
# flight; lanes with nothing left leave the set (ARGV: prefix, group).
_LANES = (
    _LANE_KEYS
    + """
local due, busy = {}, {}
for _, lane in ipairs(all_lanes()) do
  local stream = stream_of(lane)
  local n = redis.call('XLEN', stream)
  if n > 0 then
    local pending = redis.call('XPENDING', stream, ARGV[2])[1]
    if n > pending then table.insert(due, lane) end
    if pending > 0 then table.insert(busy, lane) end
  elseif lane ~= '' and redis.call('ZCARD', delayed_of(lane)) == 0 then
    redis.call('SREM', prefix .. 'lanes', lane)
  end
end
return {due, busy}
"""
)

# Read up to n new entries from each lane's stream for this consumer, and
# count an attempt of each job (ARGV: prefix, group, consumer, then lane
# and n per lane). Returns per entry: lane, entry id, job id, the job's
# fields (none if the job is gone).
_CLAIM = (
    _LANE_KEYS
    + """
local out = {}
for i = 4, #ARGV, 2 do
  local lane = ARGV[i]
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', ARGV[i + 1],
                          'STREAMS', stream_of(lane), '>')
  if read then
    for _, entry in ipairs(read[1][2]) do
      local fields, id = entry[2], nil
      for j = 1, #fields, 2 do
        if fields[j] == 'id' then id = fields[j + 1] end
      end
      local job = {}
      if id then
        local key = prefix .. 'job:' .. id
        if redis.call('EXISTS', key) == 1 then
          redis.call('HINCRBY', key, 'attempts', 1)
          job = redis.call('HGETALL', key)
        end
      end
      table.insert(out, {lane, entry[1], id or '', job})
    end
  end
end
return out
"""
)

# Each lane's jobs not finished: due, in flight or waiting to retry
# (ARGV: prefix). Returns lane, count, lane, count...
_DEPTHS = (
    _LANE_KEYS
    + """
local out = {}
for _, lane in ipairs(all_lanes()) do
  local n = redis.call('XLEN', stream_of(lane)) + redis.call('ZCARD', delayed_of(lane))
  if n > 0 then
    table.insert(out, lane)
    table.insert(out, n)
  end
end
return out
"""
)


# Record the outcome of a delivery attempt (KEYS: the job, delayed, the dead
# stream; ARGV: delivered|retry|dead, the job id, the time (of delivery or of
# the retry), the error, the retention in ms, the dead stream's cap). Like
# the SQLite queue: only a pending job is retried or given up on, and a job
# gone or cancelled meanwhile (an erasure) is left as it is.
_OUTCOME = f"""
local state = tonumber(redis.call('HGET', KEYS[1], 'state'))
if state == nil or state == {CANCELLED} then return 0 end
if ARGV[1] == 'delivered' then
  redis.call('HSET', KEYS[1], 'state', {DELIVERED}, 'delivered_at', ARGV[3], 'last_error', '')
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
if state ~= {PENDING} then return 0 end
if ARGV[1] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[1], 'last_error', ARGV[4])
else
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'id', ARGV[2], 'reason', ARGV[4])
  redis.call('HSET', KEYS[1], 'state', {DEAD}, 'last_error', ARGV[4])
end
return 1
"""

# Cancel and forget jobs, each atomically (KEYS: the jobs; ARGV: the
# prefix, the retention in ms, the time, then per job its id and its body
# without URL, body and trace context, read just before: a job's body never
# changes but here). Returns {cancelled, forgotten}.
_CANCEL = (
    _LANE_KEYS
    + f"""
local cancelled, forgotten = 0, 0
for i = 1, #KEYS do
  local id, body = ARGV[2 * i + 2], ARGV[2 * i + 3]
  local state = tonumber(redis.call('HGET', KEYS[i], 'state'))
  if state ~= nil then
    if state == {PENDING} or state == {DEAD} then
      redis.call('HSET', KEYS[i], 'state', {CANCELLED}, 'cancelled_at', ARGV[3])
      local lane = redis.call('HGET', KEYS[i], 'lane') or ''
      local waiting = redis.call('ZREM', delayed_of(lane), id)
      local entry = redis.call('HGET', KEYS[i], 'entry')
      if state == {PENDING} and waiting == 0 and entry then
        -- Due, in its lane's stream: out of it (and of the lane's depth) now,
        -- unless a worker has it in flight (its outcome acknowledges it).
        local stream = stream_of(lane)
        if #redis.call('XPENDING', stream, '{GROUP}', entry, entry, 1) == 0 then
          redis.call('XDEL', stream, entry)
        end
      end
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
      cancelled = cancelled + 1
    end
    redis.call('HSET', KEYS[i], 'body', body, 'last_error', '')
    forgotten = forgotten + 1
  end
end
return {{cancelled, forgotten}}
"""
)


def _state(job_id: str, fields: dict[bytes, bytes]) -> JobState | None:
    if b"body" not in fields:  # none, or only the attempts a claim counted on a gone job
        return None
    delivered = fields.get(b"delivered_at")
    return JobState(
        job=postback_pb2.PostbackJob.FromString(fields[b"body"]),
        state=int(fields[b"state"]),
        attempts=int(fields.get(b"attempts", b"0")),
        last_error=fields.get(b"last_error", b"").decode(),
        delivered_at=float(delivered) if delivered else None,
        created_at=float(fields.get(b"created_at", b"0")),
        lane=fields.get(b"lane", b"").decode(),
    )


@dataclass(frozen=True)
class _Outcome:
    job_id: str
    kind: str
    """``delivered``, ``retry`` or ``dead`` (see ``_OUTCOME``)."""
    at: float = 0.0
    """When it was delivered, or when to retry."""
    error: str = ""


class RedisQueue:
    """:class:`~lookback.postback.queue.PostbackQueue` on Redis Streams."""

    def __init__(
        self,
        url: str,
        consumer: str | None = None,
        prefix: str = PREFIX,
        retention: float = 7 * 86400.0,
        *,
        username: str = "",
        password: str = "",
        tls_ca: str = "",
    ) -> None:
        self.url = url
        # Checked now (a bad combination fails at start), used by open().
        self._options = redis_client.connect_options(
            url, username=username, password=password, tls_ca=tls_ca
        )
        self.retention = retention
        self.prefix = prefix
        self.stream = prefix + "stream"
        self.delayed = prefix + "delayed"
        self.dead_stream = prefix + "dead"
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.redis: aioredis.Redis | None = None
        self.lanes_key = prefix + "lanes"
        # job id -> (its lane, its stream entry id), for claimed jobs
        self._entries: dict[str, tuple[str, bytes]] = {}
        self._busy: list[str] = []  # lanes with entries in flight, as of the last claim
        self._last_housekeeping = 0.0
        self._outcomes: list[tuple[_Outcome, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _stream_of(self, lane: str) -> str:
        return self.stream if not lane else f"{self.stream}:{lane}"

    def _delayed_of(self, lane: str) -> str:
        return self.delayed if not lane else f"{self.delayed}:{lane}"

    @property
    def _retention_ms(self) -> int:
        return max(1, int(self.retention * 1000))

    @property
    def r(self) -> Any:  # redis-py's async annotations are too loose to check against
        assert self.redis is not None, "queue not open"
        return self.redis

    async def open(self) -> None:
        self.redis = aioredis.from_url(self.url, **self._options)
        try:
            await self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._enqueue = self.r.register_script(_ENQUEUE)
        self._promote = self.r.register_script(_PROMOTE)
        self._outcome = self.r.register_script(_OUTCOME)
        self._cancel = self.r.register_script(_CANCEL)
        self._lanes = self.r.register_script(_LANES)
        self._claim = self.r.register_script(_CLAIM)
        self._depths = self.r.register_script(_DEPTHS)

    async def close(self) -> None:
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)  # store what ended
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def healthy(self) -> bool:
        try:
            return bool(await self.r.ping())
        except Exception:
            return False

    async def get_cursor(self, name: str) -> str:
        value = await self.r.hget(self.prefix + "cursors", name)
        return value.decode() if isinstance(value, bytes) else str(value or "")

    async def set_cursor(self, name: str, value: str) -> None:
        await self.r.hset(self.prefix + "cursors", name, value)

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob], now: float) -> int:
        if not jobs:
            return 0
        pipe = self.r.pipeline(transaction=False)  # one round trip for the batch
        for job in jobs:
            await self._enqueue(
                keys=[self._job_key(job.job_id)],
                args=[
                    self.prefix,
                    job.SerializeToString(),
                    PENDING,
                    now,
                    job.job_id,
                    lane_of(job.partner, job.url),
                    GROUP,
                ],
                client=pipe,
            )
        return sum(int(n) for n in await pipe.execute())

    async def claim(
        self, limit: int, now: float, lease: float, plan: Plan | None = None
    ) -> list[JobState]:
        states: list[JobState] = []
        finished: dict[str, list[bytes]] = {}  # lane -> entries done with already
        gone: list[str] = []
        # Housekeeping at most a few times a second, not on every claim:
        # retries that are due go back into their lanes' streams, and entries
        # a dead worker left behind are taken over once their lease has run out.
        if now - self._last_housekeeping >= HOUSEKEEPING_INTERVAL:
            self._last_housekeeping = now
            await self._promote(args=[self.prefix, now, 1000])
            if self._busy:
                pipe = self.r.pipeline(transaction=False)
                for lane in self._busy:
                    pipe.xautoclaim(
                        self._stream_of(lane),
                        GROUP,
                        self.consumer,
                        min_idle_time=int(lease * 1000),
                        start_id="0-0",
                        count=limit,
                    )
                reclaimed = await pipe.execute()
                taken = [
                    (lane, entry_id, fields[b"id"].decode())
                    for lane, reply in zip(self._busy, reclaimed, strict=True)
                    for entry_id, fields in reply[1]
                    if fields
                ][:limit]
                if taken:
                    pipe = self.r.pipeline(transaction=False)
                    for _, _, job_id in taken:
                        pipe.hincrby(self._job_key(job_id), "attempts", 1)
                        pipe.hgetall(self._job_key(job_id))
                    replies = await pipe.execute()
                    for (lane, entry_id, job_id), raw in zip(taken, replies[1::2], strict=True):
                        self._take(lane, entry_id, job_id, raw, states, finished, gone)
        due, busy = await self._lanes(args=[self.prefix, GROUP])
        self._busy = [b.decode() for b in busy]
        lanes = [d.decode() for d in due]
        room = limit - len(states)
        if lanes and room > 0:
            if plan is not None:
                take = plan(lanes)
            else:  # every lane alike
                take = dict.fromkeys(lanes, max(1, room // len(lanes)))
            args: list[Any] = [self.prefix, GROUP, self.consumer]
            for lane, n in take.items():
                n = min(n, room)
                if n > 0:
                    args += [lane, n]
                    room -= n
            if len(args) > 3:
                for lane, entry_id, job_id, flat in await self._claim(args=args):
                    raw = dict(zip(flat[::2], flat[1::2], strict=True))
                    self._take(
                        lane.decode(), entry_id, job_id.decode(), raw, states, finished, gone
                    )
        if finished or gone:
            pipe = self.r.pipeline(transaction=True)
            for lane, entries in finished.items():
                pipe.xack(self._stream_of(lane), GROUP, *entries)
                pipe.xdel(self._stream_of(lane), *entries)
            for key in gone:
                pipe.delete(key)
            await pipe.execute()
        return states

    def _take(
        self,
        lane: str,
        entry_id: bytes,
        job_id: str,
        raw: dict[bytes, bytes],
        states: list[JobState],
        finished: dict[str, list[bytes]],
        gone: list[str],
    ) -> None:
        """A claimed entry: a job to deliver, or one to acknowledge and skip."""
        state = _state(job_id, raw) if job_id else None
        if state is None or state.state != PENDING:
            # Delivered, dead or cancelled already: never again.
            finished.setdefault(lane, []).append(entry_id)
            if state is None and job_id:  # the job expired: drop any count just made
                gone.append(self._job_key(job_id))
            return
        self._entries[job_id] = (lane, entry_id)
        states.append(state)

    async def _finish(self, outcome: _Outcome) -> None:
        """Record an outcome; returns once it is stored (group commit: the
        outcomes of every delivery that ends meanwhile share one transaction)."""
        waiter = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, waiter))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await waiter

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let the outcomes of this loop iteration join
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            # One MULTI/EXEC: each job's state is written and its stream entry
            # acknowledged together, so a delivered job is never claimed again.
            pipe = self.r.pipeline(transaction=True)
            acks: dict[str, list[bytes]] = {}
            for outcome, _ in batch:
                lane, entry = self._entries.pop(outcome.job_id, ("", None))
                if entry is not None:
                    acks.setdefault(lane, []).append(entry)
                await self._outcome(
                    keys=[
                        self._job_key(outcome.job_id),
                        self._delayed_of(lane),
                        self.dead_stream,
                    ],
                    args=[
                        outcome.kind,
                        outcome.job_id,
                        outcome.at,
                        outcome.error,
                        self._retention_ms,
                        DEAD_STREAM_MAXLEN,
                    ],
                    client=pipe,
                )
            for lane, entries in acks.items():  # done with: acknowledged, out of the stream
                pipe.xack(self._stream_of(lane), GROUP, *entries)
                pipe.xdel(self._stream_of(lane), *entries)
            try:
                await pipe.execute()
            except Exception as exc:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(exc)
            else:
                for _, waiter in batch:
                    if not waiter.done():
                        waiter.set_result(None)

    async def delivered(self, job_id: str, now: float) -> None:
        await self._finish(_Outcome(job_id, "delivered", at=now))

    async def retry(self, job_id: str, at: float, error: str) -> None:
        await self._finish(_Outcome(job_id, "retry", at=at, error=error))

    async def dead(self, job_id: str, error: str) -> None:
        await self._finish(_Outcome(job_id, "dead", error=error))

    async def depth(self) -> int:
        return sum((await self.lane_depths()).values())

    async def lane_depths(self) -> dict[str, int]:
        # Stream entries are due or in flight (they are deleted when done),
        # the delayed set's wait to retry.
        flat = await self._depths(args=[self.prefix])
        return {lane.decode(): int(n) for lane, n in zip(flat[::2], flat[1::2], strict=True)}

    async def get(self, job_id: str) -> JobState | None:
        return _state(job_id, await self.r.hgetall(self._job_key(job_id)))

    async def list_dead(self, limit: int) -> list[JobState]:
        """Dead letters, oldest first (a replayed one is no longer listed)."""
        out: list[JobState] = []
        seen: set[str] = set()
        for _entry, fields in await self.r.xrange(self.dead_stream):
            job_id = fields[b"id"].decode()
            state = await self.get(job_id) if job_id not in seen else None
            seen.add(job_id)
            if state is not None and state.state == DEAD:
                out.append(state)
                if len(out) == limit:
                    break
        return out

    async def replay(self, job_id: str, now: float) -> JobState | None:
        """Queue a dead job again with a fresh attempt count."""
        state = await self.get(job_id)
        if state is None or state.state != DEAD:
            return state
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(
            self._job_key(job_id), mapping={"state": PENDING, "attempts": 0, "last_error": ""}
        )
        pipe.xadd(self._stream_of(state.lane), {"id": job_id})
        if state.lane:
            pipe.sadd(self.lanes_key, state.lane)
        entry = (await pipe.execute())[1]
        # Its entry, for a cancellation to take out of the stream (until it is
        # written, a cancellation leaves it there for a claim to skip).
        await self.r.hset(self._job_key(job_id), "entry", entry)
        return await self.get(job_id)

    async def cancel(
        self, job_ids: Sequence[str], source_ids: Sequence[str], now: float
    ) -> tuple[int, int]:
        """Cancel and forget the named jobs (see the module's docstring: by
        source, only dead letters are found)."""
        named = dict.fromkeys(job_ids)
        if source_ids:
            named.update(dict.fromkeys(await self._dead_by_source(set(source_ids))))
        cancelled = forgotten = 0
        for ids in batches(list(named)):
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hget(self._job_key(job_id), "body")
            bodies = await pipe.execute()
            found = [(i, b) for i, b in zip(ids, bodies, strict=True) if b is not None]
            if not found:
                continue
            args: list[Any] = [self.prefix, self._retention_ms, now]
            for job_id, body in found:
                args += [
                    job_id,
                    forget(postback_pb2.PostbackJob.FromString(body)).SerializeToString(),
                ]
            n, f = await self._cancel(keys=[self._job_key(i) for i, _ in found], args=args)
            cancelled += int(n)
            forgotten += int(f)
        return cancelled, forgotten

    async def _dead_by_source(self, source_ids: set[str]) -> list[str]:
        """The dead letters' job ids naming one of ``source_ids`` as their
        cause (:func:`~lookback.postback.queue.sources_of`): one pass over
        the dead-letter stream, a page at a time."""
        out: list[str] = []
        start = "-"
        while True:
            page = await self.r.xrange(self.dead_stream, min=start, max="+", count=DEAD_PAGE)
            for _entry, fields in page:
                job_id = fields[b"id"].decode()
                if not source_ids.isdisjoint(sources_of(job_id)):
                    out.append(job_id)
            if len(page) < DEAD_PAGE:
                return out
            start = "(" + page[-1][0].decode()
