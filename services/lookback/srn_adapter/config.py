"""Settings of the SRN adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class SrnConfig(ServerConfig):
    """Settings of the SRN adapter."""

    srn_endpoints: dict[str, str] = field(default_factory=dict)
    """Base URL per network, e.g. ``srn_social=http://127.0.0.1:9000``; the
    network ``*`` gives the URL of every network not named."""
    srn_identifiers: dict[str, str] = field(default_factory=dict)
    """The device identifiers each network is sent, ``+``-separated, e.g.
    ``srn_social=gaid+idfa``; the network ``*`` sets the default for every
    network not named. Without either, a network gets the advertising ids
    only (``gaid+idfa+oaid+fire_id``): never an IMEI, Android id or IDFV
    unless named here (docs/privacy.md)."""
    default_budget_ms: int = 100
    """Budget of a query that names none."""
    max_concurrency: int = 256
    """Network calls in flight at once, across all queries."""
    breaker_threshold: int = 5
    """Consecutive failures that open a network's circuit breaker."""
    breaker_cooldown: float = 5.0
    """Seconds an open breaker waits before letting a call through again."""
