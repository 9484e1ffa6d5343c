"""The postback queue on Redis Streams (``redis.asyncio`` from redis-py).

Keys (prefix ``lookback:pb:``):

- ``job:<id>``: a hash with the job (``body``), ``state``, ``attempts``,
  ``last_error``, ``created_at`` and ``delivered_at``; created once per job
  id, so enqueuing the same id twice queues it once; it expires
  ``retention`` seconds after delivery (dead and pending jobs do not expire);
- ``stream``: the jobs due now, read by the consumer group ``dispatchers``;
  a worker that dies leaves its entries pending, and ``XAUTOCLAIM`` hands
  them to another worker once their lease (idle time) runs out; an entry is
  deleted once acknowledged, so the stream holds only unfinished work;
- ``delayed``: a sorted set of jobs waiting for a retry, scored by due time;
  due ones move back into the stream;
- ``dead``: the dead-letter stream (job id and reason), besides the job's
  own state ``DEAD``; capped at about a million records.

A delivered job's state is set before its stream entry is acknowledged; a
reclaimed entry whose job is already delivered is acknowledged and skipped,
so a job recorded as delivered is never sent again.
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
from lookback.postback.queue import DEAD, DELIVERED, PENDING, JobState

PREFIX = "lookback:pb:"
GROUP = "dispatchers"
DEAD_STREAM_MAXLEN = 1_000_000
"""About this many dead-letter records are kept (the jobs' own state stays)."""
HOUSEKEEPING_INTERVAL = 0.1
"""Seconds between moving due retries back and reclaiming dead workers' jobs."""

# Create the job once and queue it, atomically.
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'body', ARGV[1], 'state', ARGV[2], 'attempts', 0,
           'last_error', '', 'created_at', ARGV[3])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[4])
return 1
"""

# Move jobs whose retry is due back into the stream.
_PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('XADD', KEYS[2], '*', 'id', id)
end
return #due
"""


def _state(job_id: str, fields: dict[bytes, bytes]) -> JobState | None:
    if not fields:
        return None
    delivered = fields.get(b"delivered_at")
    return JobState(
        job=postback_pb2.PostbackJob.FromString(fields[b"body"]),
        state=int(fields[b"state"]),
        attempts=int(fields.get(b"attempts", b"0")),
        last_error=fields.get(b"last_error", b"").decode(),
        delivered_at=float(delivered) if delivered else None,
        created_at=float(fields.get(b"created_at", b"0")),
    )


@dataclass(frozen=True)
class _Outcome:
    job_id: str
    fields: dict[str, Any]
    retry_at: float | None = None


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
        self._entries: dict[str, bytes] = {}  # job id -> stream entry id, for claimed jobs
        self._last_housekeeping = 0.0
        self._outcomes: list[tuple[_Outcome, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def _job_key(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

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
                keys=[self._job_key(job.job_id), self.stream],
                args=[job.SerializeToString(), PENDING, now, job.job_id],
                client=pipe,
            )
        return sum(int(n) for n in await pipe.execute())

    async def claim(self, limit: int, now: float, lease: float) -> list[JobState]:
        entries: list[tuple[bytes, dict[bytes, bytes]]] = []
        # Housekeeping at most a few times a second, not on every claim:
        # retries that are due go back into the stream, and entries a dead
        # worker left behind are taken over once their lease has run out.
        if now - self._last_housekeeping >= HOUSEKEEPING_INTERVAL:
            self._last_housekeeping = now
            await self._promote(keys=[self.delayed, self.stream], args=[now, 1000])
            claimed = await self.r.xautoclaim(
                self.stream,
                GROUP,
                self.consumer,
                min_idle_time=int(lease * 1000),
                start_id="0-0",
                count=limit,
            )
            entries += [e for e in claimed[1] if e[1]]
        if len(entries) < limit:
            fresh = await self.r.xreadgroup(
                GROUP, self.consumer, {self.stream: ">"}, count=limit - len(entries)
            )
            for _, items in fresh or []:
                entries += items
        if not entries:
            return []
        # One round trip for all: count the attempt and read each job.
        ids = [fields[b"id"].decode() for _, fields in entries]
        pipe = self.r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hincrby(self._job_key(job_id), "attempts", 1)
            pipe.hgetall(self._job_key(job_id))
        replies = await pipe.execute()
        states, finished = [], []
        for (entry_id, _), job_id, raw in zip(entries, ids, replies[1::2], strict=True):
            state = _state(job_id, raw)
            if state is None or state.state != PENDING:
                finished.append(entry_id)  # delivered or dead already: never again
                continue
            self._entries[job_id] = entry_id
            states.append(state)
        if finished:
            pipe = self.r.pipeline(transaction=True)
            pipe.xack(self.stream, GROUP, *finished)
            pipe.xdel(self.stream, *finished)
            await pipe.execute()
        return states

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
            acks = []
            for outcome, _ in batch:
                if outcome.retry_at is not None:
                    pipe.zadd(self.delayed, {outcome.job_id: outcome.retry_at})
                if outcome.fields.get("state") == DEAD:
                    pipe.xadd(
                        self.dead_stream,
                        {"id": outcome.job_id, "reason": outcome.fields["last_error"]},
                        maxlen=DEAD_STREAM_MAXLEN,
                        approximate=True,
                    )
                key = self._job_key(outcome.job_id)
                pipe.hset(key, mapping=outcome.fields)
                if outcome.fields.get("state") == DELIVERED:
                    pipe.pexpire(key, max(1, int(self.retention * 1000)))
                entry = self._entries.pop(outcome.job_id, None)
                if entry is not None:
                    acks.append(entry)
            if acks:  # done with these entries: acknowledged, and out of the stream
                pipe.xack(self.stream, GROUP, *acks)
                pipe.xdel(self.stream, *acks)
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
        fields = {"state": DELIVERED, "delivered_at": now, "last_error": ""}
        await self._finish(_Outcome(job_id, fields))

    async def retry(self, job_id: str, at: float, error: str) -> None:
        await self._finish(_Outcome(job_id, {"last_error": error}, retry_at=at))

    async def dead(self, job_id: str, error: str) -> None:
        await self._finish(_Outcome(job_id, {"state": DEAD, "last_error": error}))

    async def depth(self) -> int:
        pipe = self.r.pipeline(transaction=False)
        pipe.xlen(self.stream)  # due or in flight (entries are deleted when done)
        pipe.zcard(self.delayed)  # waiting to retry
        return sum(int(n) for n in await pipe.execute())

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
        pipe.xadd(self.stream, {"id": job_id})
        await pipe.execute()
        return await self.get(job_id)
