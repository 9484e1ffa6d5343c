"""Settings of the ingestion service."""

from __future__ import annotations

from dataclasses import dataclass

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class IngestionConfig(ServerConfig):
    """Settings of the ingestion service."""

    store_address: str = "127.0.0.1:7401"
    """The touchpoint store."""
    decider_address: str = "127.0.0.1:7402"
    """The decider."""
    decider_timeout: float = 5.0
    """Deadline of a decision call, in seconds."""
