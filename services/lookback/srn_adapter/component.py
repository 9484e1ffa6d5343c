"""The SRN adapter as a servable component."""

from __future__ import annotations

import aiohttp
import grpc

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as pb_grpc
from lookback.core import auth
from lookback.srn_adapter.adapters import (
    HttpSrnAdapter,
    SrnAdapter,
)
from lookback.srn_adapter.config import SrnConfig
from lookback.srn_adapter.servicer import SrnAdapterServicer


class SrnComponent:
    name = "srn_adapter"
    auth_rules = auth.admin_rules(pb.DESCRIPTOR.services_by_name["SrnAdapterService"])
    """Internal: called by the other services (and operators) with admin keys."""

    def __init__(self, config: SrnConfig) -> None:
        self.config = config
        self.session: aiohttp.ClientSession | None = None
        self.adapters: dict[str, SrnAdapter] = {}

    def register(self, server: grpc.aio.Server) -> list[str]:
        self.servicer = SrnAdapterServicer(self.config, self.adapters, self._make_adapter)
        pb_grpc.add_SrnAdapterServiceServicer_to_server(self.servicer, server)
        return [pb.DESCRIPTOR.services_by_name["SrnAdapterService"].full_name]

    def _make_adapter(self, network: str, url: str) -> SrnAdapter:
        assert self.session is not None, "not started"
        return HttpSrnAdapter(network, url, self.session)

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.max_concurrency, ttl_dns_cache=300)
        self.session = aiohttp.ClientSession(connector=connector)
        for network, url in self.config.srn_endpoints.items():
            if network != "*":
                self.adapters[network] = HttpSrnAdapter(network, url, self.session)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()
