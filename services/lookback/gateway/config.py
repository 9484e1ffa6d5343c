"""Settings of the HTTP gateway."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    reports_address: str = "127.0.0.1:7405"
    """The reports (served by the postback dispatcher, which keeps them)."""
    decider_timeout: float = 5.0
    """Deadline of a decision call, in seconds."""
    signing_secrets: dict[str, str] = field(default_factory=dict)
    """Link signing keys by secret name (``name=key,...``), usually from a
    Secret: a partner whose links are signed names its secret in its
    settings (``signing_secret``, bound to the partner; docs/security.md)."""
    trusted_proxies: int = 0
    """Proxies in front of the gateway that append to ``X-Forwarded-For``:
    the client's address is the N-th from the right of that list (its
    left-most when shorter); 0 ignores the header and takes the TCP peer's."""
    link_rate_limit: float = 20.0
    """Link requests (``/v1/click``, ``/v1/impression``, ``/l/{code}``) a second per client
    IP, per gateway process; 0 turns the limit off."""
    link_rate_burst: float = 40.0
    """Link requests one client IP may make at once above ``link_rate_limit``."""
    sdk_rate_limit: float = 200.0
    """SDK and backend requests (``/v1/installs``, ``/v1/opens``,
    ``/v1/events``, ``/v1/touches``) a second per key (every device of an
    app shares its ``sdk`` key), per gateway process; 0 turns the limit off."""
    sdk_rate_burst: float = 400.0
    """SDK requests one key may make at once above ``sdk_rate_limit``."""
    link_cache_ttl: float = 5.0
    """Seconds a link (``/l/{code}``) is served from this process's cache: a
    changed or disabled link shows everywhere within this."""
    well_known_ttl: float = 60.0
    """Seconds the ``.well-known`` files are served as built (and clients
    told to cache them)."""
