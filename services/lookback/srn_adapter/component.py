"""The SRN adapter as a servable component."""

from __future__ import annotations

import aiohttp
import grpc

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as pb_grpc
from lookback.core import auth, outbound
from lookback.core.config import ConfigError
from lookback.srn_adapter.adapters import (
    HttpSrnAdapter,
    SrnAdapter,
    identifiers_for,
)
from lookback.srn_adapter.config import SrnConfig
from lookback.srn_adapter.servicer import SrnAdapterServicer


class SrnComponent:
    name = "srn_adapter"
    auth_rules = auth.admin_rules(pb.DESCRIPTOR.services_by_name["SrnAdapterService"])
    """Internal: called by the other services (and operators) with admin keys."""

    def __init__(self, config: SrnConfig) -> None:
        self.config = config
        self.outbound = outbound.OutboundPolicy(config.outbound_allow_cidrs)
        self.session: aiohttp.ClientSession | None = None
        self.adapters: dict[str, SrnAdapter] = {}
        for network in config.srn_identifiers:
            try:
                identifiers_for(network, config.srn_identifiers)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None

    def register(self, server: grpc.aio.Server) -> list[str]:
        self.servicer = SrnAdapterServicer(self.config, self.adapters, self._make_adapter)
        pb_grpc.add_SrnAdapterServiceServicer_to_server(self.servicer, server)
        return [pb.DESCRIPTOR.services_by_name["SrnAdapterService"].full_name]

    def _make_adapter(self, network: str, url: str) -> SrnAdapter:
        assert self.session is not None, "not started"
        return HttpSrnAdapter(
            network,
            url,
            self.session,
            self.outbound,
            identifiers_for(network, self.config.srn_identifiers),
        )

    async def start(self) -> None:
        await check_endpoints(self.config.srn_endpoints, self.outbound)
        self.session = outbound.client_session(
            self.outbound, limit=self.config.max_concurrency, ttl_dns_cache=300
        )
        for network, url in self.config.srn_endpoints.items():
            if network != "*":
                self.adapters[network] = self._make_adapter(network, url)

    async def stop(self) -> None:
        if self.session is not None:
            await self.session.close()


async def check_endpoints(endpoints: dict[str, str], policy: outbound.OutboundPolicy) -> None:
    """Refuse to start (:class:`ConfigError`) with an endpoint that is not
    http(s) or reaches addresses the policy does not allow. A host name that
    does not resolve right now is let through (the resolver checks every
    query again)."""
    problems = []
    for network, url in endpoints.items():
        problem = await policy.url_problem(url, unresolved_ok=True)
        if problem is not None:
            problems.append(f"srn_endpoints[{network}] {url!r}: {problem}")
    if problems:
        raise ConfigError("; ".join(problems) + f" ({outbound.ALLOW_HINT})")
