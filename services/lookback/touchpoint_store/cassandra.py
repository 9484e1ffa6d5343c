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
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, touch_pb2
from lookback.core.batching import Batcher
from lookback.core.clock import Clock, now_micros
from lookback.core.convert import ts_to_micros
from lookback.core.errors import Unavailable
from lookback.touchpoint_store import schema
from lookback.touchpoint_store.backend import (
    EVENT_RETENTION,
    INSTALL_RETENTION,
    InstallFacts,
    InstallQuery,
    touch_retention,
)
from lookback.touchpoint_store.cql import LoopConnection, rows_of

log = logging.getLogger("lookback.store.cassandra")

PRIOR_INSTALLS_LIMIT = 20
"""Newest prior installs read per device key."""
INDEX_ROWS_PER_REQUEST = 10
"""Device index rows written together at most (Cassandra warns about unlogged
batches over more partitions than 10 by default)."""
BATCH_BYTES = 40_000
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


def _ttl(expires_at_us: int, now_us: int) -> int:
    """Seconds to keep a record that expires at ``expires_at_us``; 0 if already expired."""
    return max(0, (expires_at_us - now_us) // 1_000_000)


class CassandraBackend:
    """:class:`~lookback.touchpoint_store.backend.StoreBackend` on Cassandra."""

    def __init__(self, settings: CassandraSettings, clock: Clock = now_micros) -> None:
        self.settings = settings
        self.clock = clock
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
        for item in touches:
            t = item.touch
            engaged = ts_to_micros(t.engaged_at)
            ttl = _ttl(engaged + touch_retention(t), now)
            if ttl == 0:
                continue  # past its retention already: it can never count
            stored += 1
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
        await asyncio.gather(*(self._execute(b) for b in batches))
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

    async def create_install_record(
        self, record: store_pb.InstallRecord
    ) -> tuple[bool, store_pb.InstallRecord]:
        """The lightweight transaction decides who created the install. The
        device index is written at the same time, not after (one round trip
        less); a racer that lost then rewrites its index rows with the
        winner's record, so the index ends up naming the winner's decision
        whatever the order (its own two writes are ordered by its clock)."""
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
        rows, _ = await asyncio.gather(
            self._run("create_install", (i.app_id, i.install_id, at, body, ttl)), index(body)
        )
        if rows and not rows[0].get("[applied]", True):
            existing = self._record(rows[0])
            if existing is None:  # the row was there but had no body yet
                existing = await self.get_install_record(i.app_id, i.install_id)
            assert existing is not None
            await index(existing.SerializeToString())
            return False, existing
        return True, record

    async def record_open_decision(
        self, open_: install_pb2.Open, decision: decision_pb2.Decision
    ) -> store_pb.InstallRecord | None:
        record = await self.get_install_record(open_.app_id, open_.install_id)
        if record is None:
            return None
        if decision.kind == decision_pb2.DECISION_KIND_REENGAGEMENT:
            installed = ts_to_micros(record.install.installed_at)
            ttl = max(1, _ttl(installed + INSTALL_RETENTION, self.clock()))
            await self._run(
                "set_reengagement",
                (ttl, decision.SerializeToString(), open_.app_id, open_.install_id),
            )
            record.latest_reengagement.CopyFrom(decision)
        return record

    # --- events ----------------------------------------------------------

    async def put_event(
        self, event: install_pb2.InAppEvent, attribution: decision_pb2.EventAttribution
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        ttl = max(1, _ttl(ts_to_micros(event.occurred_at) + EVENT_RETENTION, self.clock()))
        rows = await self._run(
            "create_event",
            (
                event.app_id,
                event.event_id,
                event.SerializeToString(),
                attribution.SerializeToString(),
                ttl,
            ),
        )
        if rows and not rows[0].get("[applied]", True):
            return False, decision_pb2.EventAttribution.FromString(rows[0]["attribution"])
        return True, attribution

    # --- apps ------------------------------------------------------------

    async def create_app(self, app: app_pb2.App) -> bool:
        rows = await self._run("create_app", (app.app_id, app.version, app.SerializeToString()))
        return not rows or bool(rows[0].get("[applied]", True))

    async def get_app(self, app_id: str) -> app_pb2.App | None:
        rows = await self._run("app_by_id", (app_id,))
        return app_pb2.App.FromString(rows[0]["body"]) if rows else None

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> bool:
        rows = await self._run(
            "replace_app", (app.version, app.SerializeToString(), app.app_id, expected_version)
        )
        return not rows or bool(rows[0].get("[applied]", True))
