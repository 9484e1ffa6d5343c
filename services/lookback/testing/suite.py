"""The whole suite inside this event loop: every service a real gRPC server
on a free loopback port (embedded SQLite store and queue in ``data_dir``),
talking to the others only through the generated stubs, and the HTTP
gateway in front. For tests and the scenario runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lookback.core.server import GrpcServer
from lookback.decider.service import DeciderComponent, DeciderConfig
from lookback.gateway.service import GatewayConfig, GatewayServer
from lookback.ingestion.service import IngestionComponent, IngestionConfig
from lookback.postback.service import PostbackComponent, PostbackConfig
from lookback.srn_adapter.service import SrnComponent, SrnConfig
from lookback.touchpoint_store.service import StoreComponent, StoreConfig


@dataclass
class SuiteAddresses:
    store: str = ""
    decider: str = ""
    ingestion: str = ""
    srn: str = ""
    postback: str = ""
    gateway_url: str = ""


@dataclass
class EphemeralSuite:
    """Every service as a real server on a free loopback port, in this loop."""

    data_dir: Path
    srn_endpoints: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    decider_overrides: dict[str, object] = field(default_factory=dict)
    postback_overrides: dict[str, object] = field(default_factory=dict)
    servers: dict[str, GrpcServer] = field(default_factory=dict)
    gateway: GatewayServer | None = None
    addresses: SuiteAddresses = field(default_factory=SuiteAddresses)

    async def _start(self, name: str, server: GrpcServer) -> str:
        await server.start()
        self.servers[name] = server
        return server.address

    async def start(self) -> SuiteAddresses:
        a = self.addresses
        base: dict[str, Any] = {"host": self.host, "port": 0, "grace_period": 1.0}
        store = StoreConfig(**base, sqlite_path=str(self.data_dir / "store.sqlite3"))
        a.store = await self._start("touchpoint_store", GrpcServer(StoreComponent(store), store))
        srn = SrnConfig(**base, srn_endpoints=self.srn_endpoints)
        a.srn = await self._start("srn_adapter", GrpcServer(SrnComponent(srn), srn))
        postback = PostbackConfig(
            **{
                **base,
                "queue_path": str(self.data_dir / "postbacks.sqlite3"),
                **self.postback_overrides,
            }
        )
        a.postback = await self._start(
            "postback", GrpcServer(PostbackComponent(postback), postback)
        )
        decider = DeciderConfig(
            **{
                **base,
                "store_address": a.store,
                "srn_address": a.srn,
                "postback_address": a.postback,
                **self.decider_overrides,
            }
        )
        a.decider = await self._start("decider", GrpcServer(DeciderComponent(decider), decider))
        ingestion = IngestionConfig(**base, store_address=a.store, decider_address=a.decider)
        a.ingestion = await self._start(
            "ingestion", GrpcServer(IngestionComponent(ingestion), ingestion)
        )
        self.gateway = GatewayServer(
            GatewayConfig(
                http_host=self.host,
                http_port=0,
                ingestion_address=a.ingestion,
                decider_address=a.decider,
            )
        )
        port = await self.gateway.start()
        a.gateway_url = f"http://{self.host}:{port}"
        return a

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        for name in ("ingestion", "decider", "postback", "srn_adapter", "touchpoint_store"):
            server = self.servers.pop(name, None)
            if server is not None:
                await server.stop(grace=1.0)
