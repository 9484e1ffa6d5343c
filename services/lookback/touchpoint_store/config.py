"""Settings of the touchpoint store."""

from __future__ import annotations

from dataclasses import dataclass

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class StoreConfig(ServerConfig):
    """Settings of the touchpoint store."""

    sqlite_path: str = ".lookback/data/store.sqlite3"
    """SQLite database file of the embedded backend (used when no Cassandra is configured)."""
    cassandra_hosts: str = ""
    """Cassandra contact points, ``host[,host...]``; empty for the embedded SQLite store."""
    cassandra_port: int = 9042
    """Cassandra's CQL port."""
    cassandra_keyspace: str = "lookback"
    """Keyspace, created on first start."""
    cassandra_replication: str = "SimpleStrategy:1"
    """Replication of a new keyspace: ``SimpleStrategy:1`` locally,
    ``NetworkTopologyStrategy:dc1=3,dc2=3`` in production."""
    cassandra_local_dc: str = "datacenter1"
    """The local data centre (token-aware, DC-aware routing; LOCAL_* consistency)."""
    cassandra_consistency: str = "ONE"
    """Read and write consistency: ``ONE`` locally, ``LOCAL_QUORUM`` in production.
    Lightweight transactions always use LOCAL_SERIAL."""
    cassandra_request_timeout: float = 2.0
    """Seconds one Cassandra request may take."""
    cassandra_migrate: bool = True
    """Apply schema migrations at start-up. Set false where ``lookback migrate``
    runs first (a Kubernetes Job before a rollout); the store then refuses to
    start on a schema older than it needs."""
    health_interval: float = 1.0
    """Seconds between backend health checks (health turns NOT_SERVING while
    the backend does not answer, and SERVING again when it does)."""
