"""The SRN adapter's gRPC service: every network at once, under one budget."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as pb_grpc
from lookback.core import telemetry
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.convert import dur_to_micros, ts_to_micros
from lookback.core.errors import Violations
from lookback.core.validation import MAX_SRN_NETWORKS
from lookback.srn_adapter import metrics
from lookback.srn_adapter.adapters import (
    CircuitBreaker,
    SrnAdapter,
    SrnError,
    SrnQuery,
)
from lookback.srn_adapter.config import SrnConfig

log = logging.getLogger("lookback.srn")


class SrnAdapterServicer(pb_grpc.SrnAdapterServiceServicer):
    def __init__(
        self,
        config: SrnConfig,
        adapters: dict[str, SrnAdapter],
        make_adapter: Callable[[str, str], SrnAdapter] | None = None,
    ) -> None:
        self.config = config
        self.adapters = adapters
        self.make_adapter = make_adapter
        self.breakers: dict[str, CircuitBreaker] = {}
        self.limit = asyncio.Semaphore(config.max_concurrency)

    def adapter_for(self, network: str) -> SrnAdapter | None:
        """The network's adapter; one is made for the ``*`` endpoint if needed."""
        adapter = self.adapters.get(network)
        fallback = self.config.srn_endpoints.get("*")
        if adapter is None and fallback and self.make_adapter is not None:
            adapter = self.adapters[network] = self.make_adapter(network, fallback)
        return adapter

    async def _ask(
        self, adapter: SrnAdapter, request: pb.QueryClaimsRequest, deadline: float
    ) -> list[pb.SrnClaim]:
        breaker = self.breakers.setdefault(
            adapter.network,
            CircuitBreaker(self.config.breaker_threshold, self.config.breaker_cooldown),
        )
        network = {"network": adapter.network}
        if not breaker.allow():
            metrics.queries.add(1, {**network, "outcome": "circuit_open"})
            raise SrnError(f"{adapter.network}: circuit open")
        installed = datetime.fromtimestamp(ts_to_micros(request.installed_at) / 1e6, UTC)
        async with self.limit:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                metrics.timeouts.add(1, network)
                metrics.queries.add(1, {**network, "outcome": "timeout"})
                raise SrnError(f"{adapter.network}: no time left")
            query = adapter.query(SrnQuery(request.app_id, request.device, installed), remaining)
            try:
                if telemetry.enabled():
                    with telemetry.http_client_span(
                        f"SRN {adapter.network}",
                        {"lookback.srn.network": adapter.network},
                    ):
                        claims = await asyncio.wait_for(query, remaining)
                else:
                    claims = await asyncio.wait_for(query, remaining)
            except (SrnError, TimeoutError) as exc:
                breaker.record(False)
                timed_out = isinstance(exc, TimeoutError)
                if timed_out:
                    metrics.timeouts.add(1, network)
                metrics.queries.add(1, {**network, "outcome": "timeout" if timed_out else "error"})
                raise SrnError(str(exc) or f"{adapter.network}: timed out") from exc
        breaker.record(True)
        metrics.queries.add(1, {**network, "outcome": "claimed" if claims else "no_claim"})
        return claims

    async def QueryClaims(
        self, request: pb.QueryClaimsRequest, context: object
    ) -> pb.QueryClaimsResponse:
        check.ensure(check.check_srn_query, request, now_micros())
        networks = list(dict.fromkeys(request.networks))  # each asked once
        if len(networks) > MAX_SRN_NETWORKS:
            v = Violations()
            v.add("networks", f"must name at most {MAX_SRN_NETWORKS} different networks")
            v.raise_if_any()
        budget_us = dur_to_micros(request.budget) if request.HasField("budget") else 0
        budget = budget_us / 1e6 if budget_us > 0 else self.config.default_budget_ms / 1000
        deadline = time.monotonic() + budget
        response = pb.QueryClaimsResponse()
        adapters = {n: self.adapter_for(n) for n in networks}
        known = [n for n, a in adapters.items() if a is not None]
        response.unanswered.extend(n for n, a in adapters.items() if a is None)
        results = await asyncio.gather(
            *(self._ask(adapters[n], request, deadline) for n in known),  # type: ignore[arg-type]
            return_exceptions=True,
        )
        for network, result in zip(known, results, strict=True):
            if isinstance(result, BaseException):
                log.info("SRN %s unanswered: %s", network, result)
                response.unanswered.append(network)
            else:
                response.claims.extend(result)
        return response
