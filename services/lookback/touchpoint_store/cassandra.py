"""The production backend: Apache Cassandra 5.0, through cassandra-driver.

Schema by query (``schema.py``). A decision costs two reads, run at once
(touches by every key in one ``IN``, prior installs by every device key in
one ``IN``), and two writes, run at once (the install, the device index).
Installs, events and apps are created with lightweight transactions (``IF
NOT EXISTS``, serial consistency LOCAL_SERIAL), so an install id is recorded
exactly once however many replicas race; the install's own row is not read
first, the transaction reads it. Retention is a TTL on every write, computed
from the record's own time.

The driver's sockets are served by the event loop (:mod:`.cql`); nothing
blocking ever runs on it (connecting and preparing run in a thread at
start-up). Driver failures become :class:`Unavailable`, so the store answers
``UNAVAILABLE`` and never ``OK`` for a write it could not make.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from cassandra import (
    ConsistencyLevel,
    CoordinationFailure,
    DriverException,
    OperationTimedOut,
    RequestExecutionException,
)
from cassandra import Unavailable as CassandraUnavailable
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.policies import (
    ConstantReconnectionPolicy,
    DCAwareRoundRobinPolicy,
    TokenAwarePolicy,
)
from cassandra.query import BatchStatement, BatchType, PreparedStatement, dict_factory

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
from lookback.core.batching import Batcher
from lookback.core.clock import Clock, now_micros
from lookback.core.convert import ts_to_micros
from lookback.core.errors import Unavailable
from lookback.domain.durations import DAY, HOUR
from lookback.touchpoint_store import schema
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
    decision_outcome,
    decision_time,
    event_outcome,
    page_token,
    parse_page_token,
    touch_retention,
    touches_outcome,
)
from lookback.touchpoint_store.cql import LoopConnection, rows_of
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

log = logging.getLogger("lookback.store.cassandra")

PRIOR_INSTALLS_LIMIT = 20
"""Newest prior installs read per device key."""
INDEX_ROWS_PER_REQUEST = 10
"""Device index rows written together at most (Cassandra warns about unlogged
batches over more partitions than 10 by default)."""
BATCH_BYTES = 40_000
ERASE_IN = 50
"""Partitions named by one ``IN`` read of an erasure at most."""
ERASE_BATCH = 20
"""Deletes sent in one unlogged batch by an erasure."""
ERASE_IN_FLIGHT = 32
"""Requests an erasure has in flight at once."""
"""Unlogged batches stay under Cassandra's default 50 KiB batch failure size."""


@dataclass(frozen=True)
class CassandraSettings:
    hosts: tuple[str, ...]
    port: int = 9042
    keyspace: str = "lookback"
    replication: str = "SimpleStrategy:1"
    local_dc: str = "datacenter1"
    consistency: str = "ONE"
    request_timeout: float = 2.0
    connect_timeout: float = 5.0
    migrate: bool = True
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    tls_ca: str = ""
    tls_check_hostname: bool = True


def auth_provider(s: CassandraSettings) -> PlainTextAuthProvider | None:
    """User name and password for PasswordAuthenticator; None without a user."""
    if not s.username:
        return None
    return PlainTextAuthProvider(username=s.username, password=s.password)


def ssl_context(s: CassandraSettings) -> ssl.SSLContext | None:
    """TLS to the nodes, verified against ``tls_ca`` (else the system's CAs);
    None for plain text."""
    if not (s.tls or s.tls_ca):
        return None
    context = ssl.create_default_context(cafile=s.tls_ca or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = s.tls_check_hostname
    return context


_UUID_EPOCH = 0x01B21DD213814000
"""100-ns intervals from the UUID epoch (1582-10-15) to the Unix epoch."""
BUCKET_SKEW = HOUR
"""Outcomes are read from day buckets up to this far past the store's clock
(entries are placed by their decision's time, which another clock set)."""
DECISION_BUCKETS_AT_ONCE = 8
"""Day buckets of the decision index read at once by ListDecisions."""
DECISION_ROWS_PER_READ = 200


def bucket(at_us: int) -> int:
    """The day bucket (UTC days since the epoch) of a time in microseconds."""
    return at_us // DAY


def outcome_position(at_us: int, source: str) -> uuid.UUID:
    """The outcome's position: a version-1 UUID (timeuuid) of time ``at_us``
    whose clock sequence and node are a hash of ``source`` (the decision or
    event id), so writing the same outcome again lands on the same row."""
    h = int.from_bytes(hashlib.sha256(source.encode()).digest()[:8], "big")
    t = at_us * 10 + _UUID_EPOCH
    clock_seq = (h >> 48) & 0x3FFF
    return uuid.UUID(
        fields=(
            t & 0xFFFFFFFF,
            (t >> 32) & 0xFFFF,
            ((t >> 48) & 0x0FFF) | 0x1000,
            0x80 | (clock_seq >> 8),
            clock_seq & 0xFF,
            h & 0xFFFFFFFFFFFF,
        )
    )


def position_time(position: uuid.UUID) -> int:
    """The time (microseconds) of an outcome's position."""
    return (position.time - _UUID_EPOCH) // 10


def _parse_cursor(cursor: str) -> uuid.UUID:
    try:
        position = uuid.UUID(cursor)
    except ValueError:
        position = None
    if position is None or position.version != 1 or str(position) != cursor:
        bad_cursor()
    assert position is not None
    return position


def page_token_of(entry: tuple[int, str, decision_pb2.Decision]) -> str:
    return page_token(entry[0], entry[1])


def _ttl(expires_at_us: int, now_us: int) -> int:
    """Seconds to keep a record that expires at ``expires_at_us``; 0 if already expired."""
    return max(0, (expires_at_us - now_us) // 1_000_000)


class CassandraBackend:
    """:class:`~lookback.touchpoint_store.backend.StoreBackend` on Cassandra."""

    def __init__(
        self,
        settings: CassandraSettings,
        clock: Clock = now_micros,
        outcome_retention: int = OUTCOME_RETENTION,
        log_outcomes: bool = True,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.outcome_retention = outcome_retention
        self.log_outcomes = log_outcomes
        """False: no outcomes log, no decision index (benchmarks only)."""
        self.cluster: Cluster | None = None
        self.session: Session | None = None
        self.q: dict[str, PreparedStatement] = {}
        self.connection_class: type[LoopConnection] = LoopConnection
        # Device index rows of concurrent decisions share requests.
        # Index rows of concurrent decisions share requests (alone a row goes at once).
        self._index: Batcher[tuple[Any, ...], None] = Batcher(
            self._put_index_rows, max_batch=INDEX_ROWS_PER_REQUEST, max_in_flight=4
        )

    # --- connection --------------------------------------------------------

    def _connect(self) -> None:
        s = self.settings
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=s.local_dc)),
            consistency_level=ConsistencyLevel.name_to_value[s.consistency.upper()],
            serial_consistency_level=ConsistencyLevel.LOCAL_SERIAL,
            request_timeout=s.request_timeout,
            row_factory=dict_factory,
        )
        cluster = Cluster(
            contact_points=list(s.hosts),
            port=s.port,
            # v4, not v5: v5 frames every message in checksummed segments,
            # which this driver computes in Python (a CRC24 loop per segment).
            protocol_version=4,
            connection_class=self.connection_class,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            reconnection_policy=ConstantReconnectionPolicy(delay=1.0, max_attempts=None),
            connect_timeout=s.connect_timeout,
            idle_heartbeat_interval=5,
            auth_provider=auth_provider(s),
            ssl_context=ssl_context(s),
        )
        try:
            session = cluster.connect()
            if s.migrate:
                schema.migrate(session, s.keyspace, s.replication)
            else:
                schema.require_current(session, s.keyspace)
            self.q = {
                name: session.prepare(schema.qualified(cql, s.keyspace))
                for name, cql in schema.STATEMENTS.items()
            }
        except BaseException:
            cluster.shutdown()
            raise
        self.cluster, self.session = cluster, session

    async def open(self) -> None:
        """Connect, migrate and prepare; retries until Cassandra answers."""
        # The driver's sockets are served by this event loop (see cql.py).
        self.connection_class = LoopConnection.bound_to(asyncio.get_running_loop())
        delay = 0.5
        while True:
            try:
                await asyncio.to_thread(self._connect)
                return
            except (
                NoHostAvailable,
                OperationTimedOut,
                CoordinationFailure,
                CassandraUnavailable,
                OSError,
            ) as exc:
                # Unreachable or overloaded: wait for it. Anything else (a bad
                # schema, bad credentials) fails start-up loudly.
                log.warning("Cassandra not reachable yet (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        if self.cluster is not None:
            await asyncio.to_thread(self.cluster.shutdown)
            self.cluster = self.session = None

    async def healthy(self) -> bool:
        try:
            await self._run("ping", ())
        except Unavailable:
            return False
        return True

    async def _run(self, name: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        return await self._execute(self.q[name], params)

    async def _execute(
        self, statement: Any, params: Sequence[Any] | None = None
    ) -> list[dict[str, Any]]:
        if self.session is None:
            raise Unavailable("Cassandra session is not open")
        try:
            future = self.session.execute_async(statement, params)
            return await rows_of(future, self.connection_class)
        except (RequestExecutionException, NoHostAvailable, DriverException, OSError) as exc:
            raise Unavailable(f"Cassandra: {type(exc).__name__}: {exc}") from exc

    # --- touches ---------------------------------------------------------

    async def put_touches(self, touches: Sequence[store_pb.IndexedTouch]) -> int:
        """Every row of every touch, in unlogged batches of at most
        :data:`BATCH_BYTES`, all sent at once; OK only when all are written."""
        now = self.clock()
        write_time = schema.FIRST_WRITE_WINS - now
        batches: list[BatchStatement] = []
        size = BATCH_BYTES
        stored = 0
        by_app: dict[str, list[touch_pb2.Touch]] = {}
        for item in touches:
            t = item.touch
            engaged = ts_to_micros(t.engaged_at)
            ttl = _ttl(engaged + touch_retention(t), now)
            if ttl == 0:
                continue  # past its retention already: it can never count
            stored += 1
            by_app.setdefault(t.app_id, []).append(t)
            body = t.SerializeToString()
            at = engaged // 1000
            rows: list[tuple[str, tuple[Any, ...]]] = [
                ("put_touch", (t.app_id, t.click_id, at, body, ttl, write_time))
            ]
            rows += [
                ("put_touch_key", (t.app_id, key, at, t.click_id, body, ttl, write_time))
                for key in sorted(set(item.match_keys))
            ]
            weight = len(rows) * (len(body) + 100)
            if size + weight > BATCH_BYTES:
                batches.append(BatchStatement(batch_type=BatchType.UNLOGGED))
                size = 0
            size += weight
            for name, params in rows:
                batches[-1].add(self.q[name], params)
        # The reports' entries, one per app: every touch written (Cassandra
        # cannot tell a repeated click id cheaply; the reports count a click
        # id once). Written with the touches: OK only when both are.
        logged = [
            self._run(name, params)
            for app_id, written in by_app.items()
            for name, params in self._outcome_rows(
                app_id,
                "t:" + ",".join(t.click_id for t in written),
                now,
                touches_outcome(written, now),
            )
        ]
        await asyncio.gather(*(self._execute(b) for b in batches), *logged)
        return stored

    async def find_touches(
        self, app_id: str, keys: Sequence[str], click_ids: Sequence[str], after: int, before: int
    ) -> list[touch_pb2.Touch]:
        """One read for every key and one for every click id, at once."""
        reads = []
        if keys:
            reads.append(
                self._run("touches_by_keys", (app_id, list(keys), after // 1000, before // 1000))
            )
        if click_ids:
            reads.append(self._run("touches_by_ids", (app_id, list(click_ids))))
        seen: dict[str, touch_pb2.Touch] = {}
        for rows in await asyncio.gather(*reads):
            for row in rows:
                touch = touch_pb2.Touch.FromString(row["body"])
                known = seen.get(touch.click_id)
                # A click id written twice with different times has a key row
                # for each: the first received is the one that stands.
                if known is None or ts_to_micros(touch.received_at) < ts_to_micros(
                    known.received_at
                ):
                    seen[touch.click_id] = touch
        return list(seen.values())

    # --- installs --------------------------------------------------------

    @staticmethod
    def _record(row: dict[str, Any] | None) -> store_pb.InstallRecord | None:
        if row is None or row.get("body") is None:
            return None
        record = store_pb.InstallRecord.FromString(row["body"])
        if row.get("reengagement") is not None:
            record.latest_reengagement.ParseFromString(row["reengagement"])
        return record

    async def get_install_record(
        self, app_id: str, install_id: str
    ) -> store_pb.InstallRecord | None:
        rows = await self._run("install_by_id", (app_id, install_id))
        return self._record(rows[0] if rows else None)

    async def _prior_installs(
        self, app_id: str, keys: Sequence[str]
    ) -> list[store_pb.InstallRecord]:
        """Prior installs, newest first, in one read of the device index (it
        carries each record as created; re-engagements are read with the
        install by id)."""
        if not keys:
            return []
        rows = await self._run("installs_by_keys", (app_id, list(keys), PRIOR_INSTALLS_LIMIT))
        found: dict[str, store_pb.InstallRecord] = {}
        for row in rows:
            if row["install_id"] not in found and row.get("body") is not None:
                found[row["install_id"]] = store_pb.InstallRecord.FromString(row["body"])
        return sorted(
            found.values(),
            key=lambda r: (-ts_to_micros(r.install.installed_at), r.install.install_id),
        )

    async def gather_install_facts(self, q: InstallQuery) -> InstallFacts:
        """The touches and the prior installs, read at once. The install's own
        record is not read: ``existing`` stays None, and a duplicate comes back
        from :meth:`create_install_record`, whose lightweight transaction reads
        the install row anyway (one partition read less per decision)."""
        touches, prior = await asyncio.gather(
            self.find_touches(q.app_id, q.touch_keys, q.click_ids, q.after, q.before),
            self._prior_installs(q.app_id, q.device_keys),
        )
        return InstallFacts(
            None, touches, [p for p in prior if p.install.install_id != q.install_id]
        )

    async def _put_index_rows(self, rows: list[tuple[Any, ...]]) -> list[None]:
        if len(rows) == 1:
            await self._run("put_install_key", rows[0])
        else:
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for params in rows:
                batch.add(self.q["put_install_key"], params)
            await self._execute(batch)
        return [None] * len(rows)

    # --- the outcomes log and the decision index ----------------------------

    def _outcome_rows(
        self,
        app_id: str,
        source: str,
        at: int,
        outcome: store_pb.Outcome | bytes,
        decision: decision_pb2.Decision | None = None,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements of one outcome (and of its decision's index rows),
        all placed by ``at``, so the same outcome always lands on the same rows."""
        if not self.log_outcomes:
            return []
        now = self.clock()
        rows: list[tuple[str, tuple[Any, ...]]] = [
            (
                "put_outcome",
                (
                    app_id,
                    bucket(at),
                    outcome_position(at, source),
                    outcome if isinstance(outcome, bytes) else outcome.SerializeToString(),
                    max(1, _ttl(at + self.outcome_retention, now)),
                ),
            )
        ]
        if decision is not None:
            body = decision.SerializeToString()
            ttl = max(1, _ttl(at + DECISION_RETENTION, now))
            rows.append(
                (
                    "put_decision_by_day",
                    (app_id, bucket(at), at, decision.decision_id, body, ttl),
                )
            )
            rows.append(("put_decision_by_id", (app_id, decision.decision_id, body, ttl)))
        return rows

    def _decision_rows(
        self,
        app_id: str,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob],
        fallback_time: int,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        at = decision_time(decision, fallback_time)
        outcome = decision_outcome(decision, postbacks, self.clock())
        return self._outcome_rows(app_id, f"d:{decision.decision_id}", at, outcome, decision)

    async def _logged(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """The statements in one LOGGED batch: all of them are applied or none."""
        if not rows:
            return
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        for name, params in rows:
            batch.add(self.q[name], params)
        await self._execute(batch)

    async def read_outcomes(
        self, app_id: str, after_cursor: str, limit: int, rewind: int = 0
    ) -> tuple[list[store_pb.Outcome], str]:
        """Day buckets forward from the cursor's (from the oldest kept without
        one) up to today's; one read per bucket until ``limit`` entries.
        ``rewind`` (microseconds) starts that long before the cursor's time."""
        limit = limit or DEFAULT_LIMIT
        now = self.clock()
        oldest = bucket(now - self.outcome_retention)
        after = _parse_cursor(after_cursor) if after_cursor else None
        if after is not None and rewind:
            after = outcome_position(position_time(after) - rewind, "")
        first = oldest if after is None else max(oldest, bucket(position_time(after)))
        out: list[store_pb.Outcome] = []
        for b in range(first, bucket(now + BUCKET_SKEW) + 1):
            if after is None:
                rows = await self._run("outcomes_from", (app_id, b, limit - len(out)))
            else:
                rows = await self._run("outcomes_after", (app_id, b, after, limit - len(out)))
            for row in rows:
                outcome = store_pb.Outcome.FromString(row["body"])
                outcome.cursor = str(row["position"])
                out.append(outcome)
            if len(out) >= limit:
                break
        return out, out[-1].cursor if out else after_cursor

    async def get_decision(self, app_id: str, decision_id: str) -> decision_pb2.Decision | None:
        rows = await self._run("decision_by_id", (app_id, decision_id))
        return decision_pb2.Decision.FromString(rows[0]["body"]) if rows else None

    async def _decisions_in(
        self, app_id: str, b: int, upper: tuple[int, str], lowest: int
    ) -> list[dict[str, Any]]:
        """The bucket's index rows below ``upper`` (newest first), down to ``lowest``."""
        out: list[dict[str, Any]] = []
        while True:
            rows = await self._run(
                "decisions_before", (app_id, b, upper[0], upper[1], DECISION_ROWS_PER_READ)
            )
            out += rows
            if len(rows) < DECISION_ROWS_PER_READ or rows[-1]["decided_at"] < lowest:
                return out
            upper = (rows[-1]["decided_at"], rows[-1]["decision_id"])

    async def list_decisions(
        self, app_id: str, which: DecisionFilter, page_size: int, page_token: str
    ) -> tuple[list[decision_pb2.Decision], str]:
        """Day buckets backward from the range's end (or the token's), several
        at once; the filters are applied to the rows read."""
        size = page_size or DEFAULT_LIMIT
        now = self.clock()
        lowest = max(which.start, now - DECISION_RETENTION)
        upper = parse_page_token(page_token) or (which.end, "")
        top = bucket(min(upper[0], now + BUCKET_SKEW))
        out: list[tuple[int, str, decision_pb2.Decision]] = []
        b = top
        while b >= bucket(lowest) and len(out) <= size:
            group = range(b, max(bucket(lowest), b - DECISION_BUCKETS_AT_ONCE + 1) - 1, -1)
            results = await asyncio.gather(
                *(self._decisions_in(app_id, g, upper, lowest) for g in group)
            )
            for rows in results:
                for row in rows:
                    at = row["decided_at"]
                    decision = decision_pb2.Decision.FromString(row["body"])
                    if which.matches(decision, at) and (at, row["decision_id"]) < upper:
                        out.append((at, row["decision_id"], decision))
                    if len(out) > size:
                        break
                if len(out) > size:
                    break
            b = group[-1] - 1
        token = page_token_of(out[size - 1]) if len(out) > size else ""
        return [d for _, _, d in out[:size]], token

    # --- installs, continued ----------------------------------------------

    async def create_install_record(
        self, record: store_pb.InstallRecord, postbacks: Sequence[postback_pb2.PostbackJob] = ()
    ) -> tuple[bool, store_pb.InstallRecord]:
        """The lightweight transaction decides who created the install. The
        device index is written at the same time, not after (one round trip
        less); a racer that lost then rewrites its index rows with the
        winner's record, so the index ends up naming the winner's decision
        whatever the order (its own two writes are ordered by its clock).

        The outcome (and the decision index) is written right after the
        transaction applied, in one logged batch at a position derived from
        the decision, shielded from the caller's cancellation (a decider that
        dies mid-call does not cut it short). The transaction also stores the
        outcome entry with the record, so any later create of the same
        install (a retry, a duplicate report) writes it again onto the same
        rows: an entry that a store killed in between never wrote is written
        by the next report of the install."""
        i = record.install
        installed = ts_to_micros(i.installed_at)
        ttl = max(1, _ttl(installed + INSTALL_RETENTION, self.clock()))
        at = installed // 1000
        keys = sorted(set(record.match_keys))

        async def index(body: bytes) -> None:
            if keys:
                await asyncio.gather(
                    *(self._index.submit((i.app_id, k, at, i.install_id, body, ttl)) for k in keys)
                )

        body = record.SerializeToString()
        # The device index carries the record for prior-install reads, which
        # need no explanation (it stays in the install's own row).
        indexed = body
        if record.HasField("explanation"):
            slim = store_pb.InstallRecord()
            slim.CopyFrom(record)
            slim.ClearField("explanation")
            indexed = slim.SerializeToString()
        outcome = decision_outcome(record.decision, postbacks, self.clock()).SerializeToString()
        rows, _ = await asyncio.gather(
            self._run(
                "create_install",
                (
                    i.app_id,
                    i.install_id,
                    at,
                    body,
                    outcome if self.log_outcomes else None,
                    ttl,
                ),
            ),
            index(indexed),
        )
        if rows and not rows[0].get("[applied]", True):
            existing = self._record(rows[0])
            if existing is None:  # the row was there but had no body yet
                existing = await self.get_install_record(i.app_id, i.install_id)
            assert existing is not None
            winner = store_pb.InstallRecord()
            winner.CopyFrom(existing)
            winner.ClearField("explanation")
            await index(winner.SerializeToString())
            logged = rows[0].get("outcome")
            if logged is not None:
                # The entry as the first create stored it (jobs included).
                entry = self._log_outcome(i.app_id, existing.decision, installed, logged)
                await asyncio.shield(entry)
            elif existing.decision.decision_id == record.decision.decision_id:
                await asyncio.shield(
                    self._logged(
                        self._decision_rows(i.app_id, existing.decision, postbacks, installed)
                    )
                )
            return False, existing
        await asyncio.shield(self._log_outcome(i.app_id, record.decision, installed, outcome))
        return True, record

    async def _log_outcome(
        self, app_id: str, decision: decision_pb2.Decision, fallback: int, outcome: bytes
    ) -> None:
        """A decision's stored outcome entry and index rows, in one logged batch."""
        at = decision_time(decision, fallback)
        await self._logged(
            self._outcome_rows(app_id, f"d:{decision.decision_id}", at, outcome, decision)
        )

    async def record_open_decision(
        self,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
        explanation: bytes | None = None,
    ) -> store_pb.InstallRecord | None:
        """The re-engagement (if it is one), the outcome, the decision
        index and the explanation in one logged batch."""
        record = await self.get_install_record(open_.app_id, open_.install_id)
        if record is None:
            return None
        rows: list[tuple[str, tuple[Any, ...]]] = []
        if decision.kind == decision_pb2.DECISION_KIND_REENGAGEMENT:
            installed = ts_to_micros(record.install.installed_at)
            ttl = max(1, _ttl(installed + INSTALL_RETENTION, self.clock()))
            rows.append(
                (
                    "set_reengagement",
                    (ttl, decision.SerializeToString(), open_.app_id, open_.install_id),
                )
            )
            record.latest_reengagement.CopyFrom(decision)
        decision_rows = self._decision_rows(open_.app_id, decision, postbacks, self.clock())
        rows += decision_rows
        if explanation is not None and decision_rows:
            ttl = decision_rows[-1][1][-1]  # the decision index row's
            rows.append(("set_explanation", (ttl, explanation, open_.app_id, decision.decision_id)))
        if decision_rows:
            at = decision_time(decision, self.clock())
            rows.append(
                self._item_row(open_.app_id, open_.install_id, OPEN_ITEM + decision.decision_id, at)
            )
        await asyncio.shield(self._logged(rows))
        return record

    def _item_row(
        self, app_id: str, install_id: str, item: str, at: int
    ) -> tuple[str, tuple[Any, ...]]:
        ttl = max(1, _ttl(at + INSTALL_RETENTION, self.clock()))
        return ("put_install_item", (app_id, install_id, item, at, ttl))

    async def get_open_explanation(self, app_id: str, decision_id: str) -> bytes | None:
        rows = await self._run("explanation_by_id", (app_id, decision_id))
        return rows[0]["explanation"] if rows else None

    # --- events ----------------------------------------------------------

    async def put_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        """The lightweight transaction, then (when it applied) the outcome,
        placed by the store's clock: a failure in between loses the entry (a
        retried put finds the event and appends nothing)."""
        now = self.clock()
        ttl = max(1, _ttl(ts_to_micros(event.occurred_at) + EVENT_RETENTION, now))
        # The install item goes with the transaction (a repeat rewrites it
        # harmlessly), so that no stored event is missing from it.
        rows: list[dict[str, Any]]
        rows, _ = await asyncio.gather(
            self._run(
                "create_event",
                (
                    event.app_id,
                    event.event_id,
                    event.SerializeToString(),
                    attribution.SerializeToString(),
                    now,
                    ttl,
                ),
            ),
            self._run(
                *self._item_row(event.app_id, event.install_id, EVENT_ITEM + event.event_id, now)
            ),
        )
        if rows and not rows[0].get("[applied]", True):
            stored = decision_pb2.EventAttribution.FromString(rows[0]["attribution"])
            logged_at = rows[0].get("logged_at")
            if logged_at is not None and stored == attribution:
                # The same call again (its answer was lost, or the store
                # failed before the entry): the entry again, at its place.
                await asyncio.shield(self._log_event(event, stored, postbacks, logged_at))
            return False, stored
        await asyncio.shield(self._log_event(event, attribution, postbacks, now))
        return True, attribution

    async def _log_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob],
        at: int,
    ) -> None:
        outcome = event_outcome(event, attribution, postbacks, at)
        for name, params in self._outcome_rows(event.app_id, f"e:{event.event_id}", at, outcome):
            await self._run(name, params)

    # --- apps ------------------------------------------------------------

    async def create_app(self, app: app_pb2.App) -> bool:
        rows = await self._run("create_app", (app.app_id, app.version, app.SerializeToString()))
        return not rows or bool(rows[0].get("[applied]", True))

    async def get_app(self, app_id: str) -> app_pb2.App | None:
        rows = await self._run("app_by_id", (app_id,))
        return app_pb2.App.FromString(rows[0]["body"]) if rows else None

    async def list_apps(self, after_app_id: str, limit: int) -> list[str]:
        # Token order: the partitioner's, stable; a page goes on after the
        # last id's token.
        if after_app_id:
            rows = await self._run("apps_after", (after_app_id, limit))
        else:
            rows = await self._run("apps_first", (limit,))
        return [r["app_id"] for r in rows]

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> bool:
        rows = await self._run(
            "replace_app", (app.version, app.SerializeToString(), app.app_id, expected_version)
        )
        return not rows or bool(rows[0].get("[applied]", True))

    # --- data subjects: erasure and access (docs/privacy.md) ---------------

    async def _in_reads(
        self, name: str, app_id: str, values: set[str] | Sequence[str]
    ) -> list[dict[str, Any]]:
        """``name`` for every value, :data:`ERASE_IN` partitions per read, at once."""
        ordered = sorted(set(values))
        chunks = [ordered[i : i + ERASE_IN] for i in range(0, len(ordered), ERASE_IN)]
        out: list[dict[str, Any]] = []
        limit = asyncio.Semaphore(ERASE_IN_FLIGHT)

        async def read(chunk: list[str]) -> list[dict[str, Any]]:
            async with limit:
                return await self._run(name, (app_id, chunk))

        for rows in await asyncio.gather(*(read(c) for c in chunks)):
            out += rows
        return out

    async def _discover(
        self,
        app_id: str,
        keys: Sequence[str],
        install_ids: Sequence[str] = (),
        click_ids: Sequence[str] = (),
    ) -> tuple[
        set[str],
        list[dict[str, Any]],
        dict[str, store_pb.InstallRecord],
        list[dict[str, Any]],
        dict[str, touch_pb2.Touch],
        list[dict[str, Any]],
    ]:
        """The devices' keys (the named ones and those of the install records
        they find), the device index rows under them, the install records,
        the touch index rows under them, the touches, and the install items."""
        named = set(keys)
        index = await self._in_reads("device_index_rows", app_id, named)
        ids = set(install_ids) | {r["install_id"] for r in index}
        records = {
            r["install_id"]: rec
            for r in await self._in_reads("installs_by_ids", app_id, ids)
            if (rec := self._record(r)) is not None
        }
        wanted = set(named)
        for record in records.values():
            wanted |= record_keys(record)
        more = await self._in_reads("device_index_rows", app_id, wanted - named)
        index += more
        extra = {r["install_id"] for r in more} - set(records)
        for r in await self._in_reads("installs_by_ids", app_id, extra):
            if (rec := self._record(r)) is not None:
                records[r["install_id"]] = rec
        touch_index = await self._in_reads("touch_index_rows", app_id, wanted)
        touch_ids = set(click_ids) | {r["click_id"] for r in touch_index}
        touches: dict[str, touch_pb2.Touch] = {}
        for r in await self._in_reads("touches_by_ids", app_id, touch_ids):
            t = touch_pb2.Touch.FromString(r["body"])
            touches[t.click_id] = t
        items = await self._in_reads("install_items", app_id, set(records) | set(install_ids))
        return wanted, index, records, touch_index, touches, items

    async def _send(self, rows: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """Statements in unlogged batches of :data:`ERASE_BATCH`, a bounded
        number at once."""
        limit = asyncio.Semaphore(ERASE_IN_FLIGHT)

        async def send(chunk: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for name, params in chunk:
                batch.add(self.q[name], params)
            async with limit:
                await self._execute(batch)

        await asyncio.gather(
            *(send(rows[i : i + ERASE_BATCH]) for i in range(0, len(rows), ERASE_BATCH))
        )

    async def erase_devices(
        self, app_id: str, keys: Sequence[str], install_ids: Sequence[str], click_ids: Sequence[str]
    ) -> Erased:
        """Reads by every key at once, then the deletes in unlogged batches.
        Not atomic (nothing is, across partitions): a decision of the device
        landing meanwhile is erased by the erasure's second pass."""
        _, index, records, touch_index, touches, items = await self._discover(
            app_id, keys, install_ids, click_ids
        )
        out = Erased(install_ids=set(records), click_ids=set(touches))
        after = schema.FIRST_WRITE_WINS
        rows: list[tuple[str, tuple[Any, ...]]] = []
        # Touch index rows: those under the devices' keys, and each touch's own.
        touch_rows = {(r["key"], _as_ms(r["engaged_at"]), r["click_id"]) for r in touch_index}
        for t in touches.values():
            at = ts_to_micros(t.engaged_at) // 1000
            touch_rows |= {(k, at, t.click_id) for k in touch_keys(t)}
        rows += [("delete_touch_key", (after, app_id, k, at, c)) for k, at, c in sorted(touch_rows)]
        rows += [
            ("delete_touch", (after, app_id, c)) for c in sorted(set(touches) | set(click_ids))
        ]
        device_rows = {(r["key"], _as_ms(r["installed_at"]), r["install_id"]) for r in index}
        for i, record in records.items():
            at = ts_to_micros(record.install.installed_at) // 1000
            device_rows |= {(k, at, i) for k in record.match_keys}
        rows += [("delete_install_key", (app_id, k, at, i)) for k, at, i in sorted(device_rows)]
        gone = set(records) | set(install_ids)
        rows += [("delete_install", (app_id, i)) for i in sorted(gone)]
        rows += [("delete_install_items", (app_id, i)) for i in sorted(gone)]
        # Decisions (each with the time its index rows and log entry are at)
        # and events.
        placed: dict[str, int] = {}
        for record in records.values():
            installed = ts_to_micros(record.install.installed_at)
            for d in (record.decision, record.latest_reengagement):
                if d.decision_id:
                    placed["d:" + d.decision_id] = decision_time(d, installed)
        for item in items:
            placed.setdefault(item["item"], item["at"])
        for source, at in sorted(placed.items()):
            kind, _, ident = source.partition(":")
            if kind == "d":
                out.decision_ids.add(ident)
                rows.append(("delete_decision_by_id", (app_id, ident)))
                rows.append(("delete_decision_by_day", (app_id, bucket(at), at, ident)))
            else:
                out.event_ids.add(ident)
                rows.append(("delete_event", (app_id, ident)))
        await self._redact_log(app_id, placed, out)
        await self._send(rows)
        return out

    async def _redact_log(self, app_id: str, placed: dict[str, int], out: Erased) -> None:
        """Each erased decision's and event's log entry, read at its position
        and rewritten with its counts only, for the time it has left. An
        app's entries of a day share a partition: read by ``IN`` and written
        in single-partition batches."""
        if not self.log_outcomes:
            return
        by_bucket: dict[int, list[uuid.UUID]] = {}
        for source, at in placed.items():
            by_bucket.setdefault(bucket(at), []).append(outcome_position(at, source))
        reads = [
            (b, positions[i : i + ERASE_IN * 2])
            for b, positions in by_bucket.items()
            for i in range(0, len(positions), ERASE_IN * 2)
        ]
        limit = asyncio.Semaphore(ERASE_IN_FLIGHT)

        async def read(b: int, positions: list[uuid.UUID]) -> list[dict[str, Any]]:
            async with limit:
                rows = await self._run("outcomes_at", (app_id, b, positions))
            return [dict(r, bucket=b) for r in rows]

        writes: list[tuple[str, tuple[Any, ...]]] = []
        for rows in await asyncio.gather(*(read(b, ps) for b, ps in reads)):
            for row in rows:
                if row["body"] is None:
                    continue
                entry = store_pb.Outcome.FromString(row["body"])
                out.jobs_of([entry])
                if (row.get("ttl") or 0) > 0:
                    body = redacted_outcome(entry).SerializeToString()
                    writes.append(
                        ("put_outcome", (app_id, row["bucket"], row["position"], body, row["ttl"]))
                    )
        await self._send(writes)

    async def device_records(self, app_id: str, keys: Sequence[str]) -> store_pb.DeviceRecords:
        _, _, records, _, touches, items = await self._discover(app_id, keys)
        out = records_of(touches.values(), records.values())
        opens = {
            i["item"][len(OPEN_ITEM) :]: i["at"] for i in items if i["item"].startswith(OPEN_ITEM)
        }
        events = [i["item"][len(EVENT_ITEM) :] for i in items if i["item"].startswith(EVENT_ITEM)]
        decisions = await self._in_reads("decisions_by_ids", app_id, set(opens))
        for r in sorted(
            decisions, key=lambda r: (opens.get(r["decision_id"], 0), r["decision_id"])
        ):
            item = out.decisions.add(decision=decision_pb2.Decision.FromString(r["body"]))
            if r.get("explanation"):
                item.explanation.ParseFromString(r["explanation"])
        for r in sorted(
            await self._in_reads("events_by_ids", app_id, events), key=lambda r: r["event_id"]
        ):
            out.events.add(
                event=install_pb2.InAppEvent.FromString(r["body"]),
                attribution=decision_pb2.EventAttribution.FromString(r["attribution"]),
            )
        return out

    async def put_erasure(self, erasure: erasure_pb2.StoredErasure) -> None:
        e = erasure.erasure
        mark = "mark_erasure_pending"
        if e.state != erasure_pb2.ERASURE_STATE_PENDING:
            mark = "unmark_erasure_pending"
        await self._run("put_erasure", (e.erasure_id, erasure.SerializeToString()))
        await self._run(mark, (e.erasure_id,))

    async def get_erasure(self, erasure_id: str) -> erasure_pb2.StoredErasure | None:
        rows = await self._run("erasure_by_id", (erasure_id,))
        return erasure_pb2.StoredErasure.FromString(rows[0]["body"]) if rows else None

    async def pending_erasures(self, limit: int) -> list[erasure_pb2.Erasure]:
        rows = await self._run("pending_erasures", (limit,))
        found = await asyncio.gather(*(self.get_erasure(r["erasure_id"]) for r in rows))
        return [f.erasure for f in found if f is not None]

    # --- links -------------------------------------------------------------

    async def put_link(self, link: link_pb2.Link, create: bool) -> bool:
        """By code first (the transaction decides a create), then the app's
        listing (rewritten by a retry: idempotent)."""
        params = (link.code, link.app_id, link.SerializeToString())
        rows = await self._run("create_link" if create else "replace_link", params)
        if create and rows and not rows[0].get("[applied]", True):
            return False
        await self._run("put_link_by_app", (link.app_id, link.code, params[2]))
        return True

    async def get_link(self, code: str) -> link_pb2.Link | None:
        rows = await self._run("link_by_code", (code,))
        return link_pb2.Link.FromString(rows[0]["body"]) if rows else None

    async def list_links(self, app_id: str, after_code: str, limit: int) -> list[link_pb2.Link]:
        rows = await self._run("links_of_app", (app_id, after_code, limit))
        return [link_pb2.Link.FromString(r["body"]) for r in rows]


def _as_ms(at: Any) -> int:
    """A clustering timestamp as read (a datetime) or as computed (ms)."""
    if isinstance(at, int):
        return at
    return int(at.replace(tzinfo=at.tzinfo or UTC).timestamp() * 1000)


BACKFILL_PAGE = 1000


async def backfill_install_items(backend: CassandraBackend) -> tuple[int, int]:
    """Fill ``install_items`` (schema 7) from the events and the opens'
    decisions recorded before it, so that an erasure finds them: every
    ``events`` and ``decisions_by_id`` row, a page at a time in token order
    (idempotent: run it again and it writes the same rows). Returns how many
    events and open decisions it indexed."""
    ks = backend.settings.keyspace
    counted = [0, 0]

    async def scan(table: str, id_column: str, extra: str, item_of: Any, n: int) -> None:
        columns = f"app_id, {id_column}, token(app_id, {id_column}) AS t, body{extra}"
        last: int | None = None
        while True:
            if last is None:
                rows = await backend._execute(
                    f"SELECT {columns} FROM {ks}.{table} LIMIT {BACKFILL_PAGE}"
                )
            else:
                rows = await backend._execute(
                    f"SELECT {columns} FROM {ks}.{table}"
                    f" WHERE token(app_id, {id_column}) > %s LIMIT {BACKFILL_PAGE}",
                    (last,),
                )
            writes = [w for row in rows if (w := item_of(row)) is not None]
            counted[n] += len(writes)
            await backend._send(writes)
            if len(rows) < BACKFILL_PAGE:
                return
            last = rows[-1]["t"]

    def event_item(row: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        event = install_pb2.InAppEvent.FromString(row["body"])
        at = row.get("logged_at") or ts_to_micros(event.occurred_at)
        return backend._item_row(row["app_id"], event.install_id, EVENT_ITEM + event.event_id, at)

    def open_item(row: dict[str, Any]) -> tuple[str, tuple[Any, ...]] | None:
        d = decision_pb2.Decision.FromString(row["body"])
        if d.kind not in OPEN_KINDS or not d.install_id:
            return None
        at = decision_time(d, backend.clock())
        return backend._item_row(row["app_id"], d.install_id, OPEN_ITEM + d.decision_id, at)

    await scan("events", "event_id", ", logged_at", event_item, 0)
    await scan("decisions_by_id", "decision_id", "", open_item, 1)
    return counted[0], counted[1]
