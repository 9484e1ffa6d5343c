"""Settings of the HTTP gateway."""

from __future__ import annotations

from dataclasses import dataclass

from lookback.core.server import ServerConfig


@dataclass(frozen=True)
class GatewayConfig(ServerConfig):
    """Settings of the HTTP gateway (its gRPC port serves health only)."""

    http_host: str = "127.0.0.1"
    """Address the HTTP server listens on."""
    http_port: int = 8080
    """HTTP port; 0 picks a free one."""
    http_reuse_port: bool = False
    """Let several gateway processes share one HTTP port (``SO_REUSEPORT``;
    the kernel spreads connections among them): ``lookback up --gateway-processes``."""
    store_address: str = "127.0.0.1:7401"
    """The touchpoint store (clicks and touches are written to it directly)."""
    decider_address: str = "127.0.0.1:7402"
    """The decider (installs, opens, events and the app settings API)."""
    decider_timeout: float = 5.0
    """Deadline of a decision call, in seconds."""
