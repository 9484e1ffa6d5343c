"""The whole suite inside this event loop: every service a real gRPC server
on a free loopback port (embedded SQLite store and queue in ``data_dir``),
talking to the others only through the generated stubs, and the HTTP
gateway in front. For tests and the scenario runner. With ``tls`` settings
every service serves (mutual) TLS and calls the others over it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lookback.core import clients
from lookback.core.server import Component, GrpcServer, ServerConfig
from lookback.core.tls import ClientTls
from lookback.decider.component import DeciderComponent
from lookback.decider.config import DeciderConfig
from lookback.gateway.component import GatewayComponent
from lookback.gateway.config import GatewayConfig
from lookback.ingestion.component import IngestionComponent
from lookback.ingestion.config import IngestionConfig
from lookback.postback.component import PostbackComponent
from lookback.postback.config import PostbackConfig
from lookback.srn_adapter.component import SrnComponent
from lookback.srn_adapter.config import SrnConfig
from lookback.testing.keys import ADMIN_KEY
from lookback.touchpoint_store.component import StoreComponent
from lookback.touchpoint_store.config import StoreConfig

C = TypeVar("C", bound=ServerConfig)


@dataclass
class SuiteAddresses:
    store: str = ""
    decider: str = ""
    ingestion: str = ""
    srn: str = ""
    postback: str = ""
    gateway_url: str = ""
    admin_key: str = ""


@dataclass
class EphemeralSuite:
    """Every service as a real server on a free loopback port, in this loop."""

    data_dir: Path
    srn_endpoints: dict[str, str] = field(default_factory=dict)
    outbound_allow_cidrs: str = ""
    """Ranges postbacks and SRN queries may reach besides public addresses,
    for every service (:data:`lookback.testing.http.LOCAL_CIDRS` for local
    receivers and fake SRNs); empty: public only, as in production."""
    host: str = "127.0.0.1"
    admin_key: str = ADMIN_KEY
    """The admin key every service is given (and presents to the others)."""
    require_keys: bool = True
    """False only to measure what the key checks cost."""
    decider_overrides: dict[str, object] = field(default_factory=dict)
    postback_overrides: dict[str, object] = field(default_factory=dict)
    gateway_overrides: dict[str, object] = field(default_factory=dict)
    """Gateway settings; its rate limits are off unless set here (tests and
    the scenario runner call it from one address, quickly)."""
    tls: dict[str, str] = field(default_factory=dict)
    """TLS settings every service gets: ``tls_cert`` and ``tls_key`` (TLS),
    plus ``tls_ca`` (mutual TLS); see :mod:`lookback.testing.tls`. The
    certificate must name ``host``."""
    servers: dict[str, GrpcServer] = field(default_factory=dict)
    addresses: SuiteAddresses = field(default_factory=SuiteAddresses)

    @property
    def client_tls(self) -> ClientTls | None:
        """How a test's client reaches the services (their own certificate)."""
        get = self.tls.get
        return (
            ClientTls(get("tls_ca", ""), get("tls_cert", ""), get("tls_key", ""))
            if self.tls
            else None
        )

    def _server(self, make: Callable[[C], Component], config: C) -> GrpcServer:
        # The component makes its channels now: over TLS if it has TLS settings.
        with clients.using_tls(ClientTls.from_config(config)):
            return GrpcServer(make(config), config)

    async def _start(self, name: str, server: GrpcServer) -> str:
        await server.start()
        self.servers[name] = server
        return server.address

    async def start(self) -> SuiteAddresses:
        a = self.addresses
        a.admin_key = self.admin_key
        base: dict[str, Any] = {
            "host": self.host,
            "port": 0,
            "grace_period": 1.0,
            "admin_keys": self.admin_key,
            "require_keys": self.require_keys,
            "outbound_allow_cidrs": self.outbound_allow_cidrs,
            **self.tls,
        }
        store = StoreConfig(**base, sqlite_path=str(self.data_dir / "store.sqlite3"))
        a.store = await self._start("touchpoint_store", self._server(StoreComponent, store))
        srn = SrnConfig(**base, srn_endpoints=self.srn_endpoints)
        a.srn = await self._start("srn_adapter", self._server(SrnComponent, srn))
        postback = PostbackConfig(
            **{
                **base,
                "queue_path": str(self.data_dir / "postbacks.sqlite3"),
                "store_address": a.store,  # the relay tails the outcomes log
                **self.postback_overrides,
            }
        )
        a.postback = await self._start("postback", self._server(PostbackComponent, postback))
        decider = DeciderConfig(
            **{
                **base,
                "store_address": a.store,
                "srn_address": a.srn,
                "postback_address": a.postback,
                **self.decider_overrides,
            }
        )
        a.decider = await self._start("decider", self._server(DeciderComponent, decider))
        ingestion = IngestionConfig(**base, store_address=a.store, decider_address=a.decider)
        a.ingestion = await self._start("ingestion", self._server(IngestionComponent, ingestion))
        with clients.using_tls(self.client_tls):
            server, a.gateway_url = await start_gateway(
                a, **{**base, "http_host": self.host, **self.gateway_overrides}
            )
        self.servers["gateway"] = server
        return a

    async def stop(self) -> None:
        for name in reversed(list(self.servers)):
            server = self.servers.pop(name, None)
            if server is not None:
                await server.stop(grace=1.0)


NO_RATE_LIMITS: dict[str, object] = {"link_rate_limit": 0.0, "sdk_rate_limit": 0.0}
"""Gateway settings turning its rate limits off."""


async def start_gateway(addresses: SuiteAddresses, **settings: object) -> tuple[GrpcServer, str]:
    """One more gateway (free ports, loopback) in front of a running suite,
    with these settings over the defaults (rate limits off unless set; the
    suite's admin key unless given); the server (stop it) and its URL."""
    config = GatewayConfig(
        **{
            "host": "127.0.0.1",
            "port": 0,
            "grace_period": 1.0,
            "admin_keys": addresses.admin_key,
            "http_host": "127.0.0.1",
            "http_port": 0,
            "store_address": addresses.store,
            "decider_address": addresses.decider,
            "reports_address": addresses.postback,
            **NO_RATE_LIMITS,
            **settings,
        }  # type: ignore[arg-type]
    )
    component = GatewayComponent(config)
    server = GrpcServer(component, config)
    await server.start()
    return server, component.listening()
