"""Settings of the postback dispatcher."""

from __future__ import annotations

from dataclasses import dataclass, field

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class PostbackConfig(ServerConfig):
    """Settings of the postback dispatcher."""

    queue_path: str = ".lookback/data/postbacks.sqlite3"
    """SQLite file of the embedded queue."""
    workers: int = 32
    """Deliveries in flight at once, shared among the partner lanes (a
    partner and destination host each; docs/postbacks.md)."""
    max_in_flight_per_partner: int = 0
    """Deliveries one lane may have in flight at once; 0: no limit but its
    share of ``workers``. An app's partner setting ``max_in_flight``, then
    ``max_in_flight_by_partner``, come first."""
    max_in_flight_by_partner: dict[str, str] = field(default_factory=dict)
    """``max_in_flight_per_partner`` for some partners (``partner=N,...``)."""
    slow_attempt: float = 1.0
    """Seconds an attempt takes on average that make its lane slow: a slow
    lane gets less than a fair share and never borrows idle workers."""
    circuit_failures: int = 5
    """Failed attempts in a row (timeouts, network errors, 5xx) that open a
    lane's circuit: its jobs then wait in the queue until a probe succeeds."""
    circuit_cooldown: float = 5.0
    """Seconds an opened circuit waits before its first probe."""
    circuit_max_cooldown: float = 300.0
    """The wait doubles after each failed probe, up to this many seconds."""
    request_timeout: float = 5.0
    """Seconds one delivery attempt may take."""
    lease_seconds: float = 30.0
    """How long a claimed job is reserved before another worker may take it."""
    poll_interval: float = 0.2
    """Seconds between polls for due jobs when idle."""
    max_attempts: int = 8
    """Attempts before a job goes to the dead letters."""
    max_age: float = 86400.0
    """Seconds after which a failing job is not retried any more."""
    base_delay: float = 0.5
    """First retry backoff in seconds (doubled per attempt, with jitter)."""
    signing_secrets: dict[str, str] = field(default_factory=dict)
    """HMAC-SHA256 keys by secret name (``name=key,...``), usually from a Secret."""
    delivered_retention: float = 7 * 86400.0
    """Seconds a delivered job is kept (for status queries, and so that the same
    job id enqueued again within this time is not sent again)."""
    redis_url: str = ""
    """Redis for the queue (``redis://host:6379/0``); empty for the embedded SQLite queue."""
    redis_username: str = ""
    """Redis ACL user; empty: the default user."""
    redis_password: str = field(default="", repr=False)
    """Redis password (from a Secret, so that ``redis_url`` need not carry
    one); never logged."""
    redis_tls_ca: str = ""
    """PEM CA bundle a ``rediss://`` (TLS) Redis is verified against; empty:
    the system's CAs."""
    health_interval: float = 1.0
    """Seconds between queue health checks."""
    store_address: str = ""
    """The touchpoint store, whose outcomes log the relay tails so that every
    recorded decision's postbacks are queued even if their hand-over failed
    (docs/outcomes.md); empty: no relay."""
    relay_interval: float = 1.0
    """Seconds between the relay's passes over every app's log."""
    relay_settle: float = 5.0
    """The relay reads only log entries older than this many seconds (an entry
    may land behind a cursor for as long as a decision's store call can take)."""
    report_interval: float = 0.2
    """Seconds between the reports' passes over every app's log (a decision
    is in the reports within about this long)."""
