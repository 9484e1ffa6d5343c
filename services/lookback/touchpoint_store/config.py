"""Settings of the touchpoint store."""

from __future__ import annotations

from dataclasses import dataclass, field

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class StoreConfig(ServerConfig):
    """Settings of the touchpoint store."""

    sqlite_path: str = ".lookback/data/store.sqlite3"
    """SQLite database file of the embedded backend (used when no Cassandra is configured)."""
    outcomes_log: bool = True
    """Record the outcomes log and the decision index (docs/outcomes.md).
    Off only to measure what they cost (bench/outcomes.py): without them no
    decision can be read back, watched, counted in the reports or relayed to
    the dispatcher after a failed hand-over."""
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
    cassandra_username: str = ""
    """Cassandra user (PasswordAuthenticator, through the driver's
    PlainTextAuthProvider); empty: no authentication."""
    cassandra_password: str = field(default="", repr=False)
    """That user's password (from a Secret); never logged."""
    cassandra_tls: bool = False
    """Connect to Cassandra over TLS (its ``client_encryption_options``),
    verifying its certificates against ``cassandra_tls_ca``, else the
    system's CAs."""
    cassandra_tls_ca: str = ""
    """PEM CA bundle Cassandra's certificates are verified against; setting
    it turns TLS on."""
    cassandra_tls_check_hostname: bool = True
    """Check that each node's certificate names the address it is reached at
    (the contact points, then the addresses the nodes advertise); turn off
    only if the certificates do not name them (the chain is still verified)."""
    cassandra_migrate: bool = True
    """Apply schema migrations at start-up. Set false where ``lookback migrate``
    runs first (a Kubernetes Job before a rollout); the store then refuses to
    start on a schema older than it needs."""
    health_interval: float = 1.0
    """Seconds between backend health checks (health turns NOT_SERVING while
    the backend does not answer, and SERVING again when it does)."""
