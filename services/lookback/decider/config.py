"""Settings of the decider."""

from __future__ import annotations

from dataclasses import dataclass, field

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class DeciderConfig(ServerConfig):
    """Settings of the decider."""

    store_address: str = "127.0.0.1:7401"
    """The touchpoint store."""
    srn_address: str = "127.0.0.1:7404"
    """The SRN adapter."""
    postback_address: str = "127.0.0.1:7405"
    """The postback dispatcher."""
    srn_budget_ms: int = 100
    """Longest wait for SRN answers; late networks are reported as unanswered."""
    settings_cache_size: int = 10_000
    """Apps whose settings are cached."""
    settings_cache_ttl: float = 5.0
    """Seconds a cached app's settings may be used; bounds how long another
    decider replica may use settings changed elsewhere."""
    install_cache_size: int = 100_000
    """Recent install decisions cached for duplicate reports."""
    install_cache_ttl: float = 600.0
    """Seconds a cached install decision is kept."""
    explanations: bool = True
    """Record with each decision why it came out as it did (every candidate
    and its verdict, for ExplainDecision and Simulate). Off only to measure
    what it costs (``bench/explain.py``)."""
    simulate_max_installs: int = 1_000_000
    """Most installs one Simulate call examines (it stops there, saying so)."""
    erasure_settle: float = 10.0
    """Seconds between an erasure's two passes: longer than any decision
    takes from reading its facts to writing its record (the store timeouts
    and the SRN budget), so that one in flight during the first pass is
    erased by the second."""
    erasure_devices_per_call: int = 100
    """Devices erased by one store call (a large request runs in many)."""
    store_timeout: float = 2.0
    """Deadline of each store call, in seconds."""
    redis_url: str = ""
    """Redis for settings cache coherence across replicas (pub/sub); empty for
    none (then ``settings_cache_ttl`` bounds staleness)."""
    redis_username: str = ""
    """Redis ACL user; empty: the default user."""
    redis_password: str = field(default="", repr=False)
    """Redis password (from a Secret, so that ``redis_url`` need not carry
    one); never logged."""
    redis_tls_ca: str = ""
    """PEM CA bundle a ``rediss://`` (TLS) Redis is verified against; empty:
    the system's CAs."""
