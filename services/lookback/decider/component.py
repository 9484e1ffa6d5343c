"""The decider as a servable component: the engine wired to the other services."""

from __future__ import annotations

import logging

import grpc

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as pb_grpc
from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core import clients
from lookback.core.outbound import OutboundPolicy
from lookback.decider import metrics
from lookback.decider.apps import AppSettings
from lookback.decider.backends import PostbackClient, SrnClient, StoreClient
from lookback.decider.cache import LruCache
from lookback.decider.coherence import RedisInvalidation
from lookback.decider.config import DeciderConfig
from lookback.decider.engine import DecisionEngine
from lookback.decider.explain import Explainer
from lookback.decider.explain_servicer import RULES as EXPLAIN_RULES
from lookback.decider.explain_servicer import ExplainServicer
from lookback.decider.outcomes import RULES as OUTCOMES_RULES
from lookback.decider.outcomes import OutcomesServicer
from lookback.decider.servicers import RULES, AppSettingsServicer, DeciderServicer

log = logging.getLogger("lookback.decider")


class DeciderComponent:
    name = "decider"
    auth_rules = {**RULES, **OUTCOMES_RULES, **EXPLAIN_RULES}

    def __init__(self, config: DeciderConfig) -> None:
        self.config = config
        key = config.outgoing_key()
        self.channels = clients.channels(
            config.store_address, config.srn_address, config.postback_address
        )
        store_ch, srn_ch, postback_ch = self.channels
        self.store = store = StoreClient(
            clients.stub(store_grpc.TouchpointStoreServiceStub, store_ch, config.store_timeout, key)
        )
        self.apps = AppSettings(
            store,
            LruCache(config.settings_cache_size, config.settings_cache_ttl),
            outbound=OutboundPolicy(config.outbound_allow_cidrs),
        )
        self.engine = DecisionEngine(
            apps=self.apps,
            facts=store,
            claims=SrnClient(
                clients.stub(srn_grpc.SrnAdapterServiceStub, srn_ch, key=key), config.srn_budget_ms
            ),
            records=store,
            postbacks=PostbackClient(
                clients.stub(postback_grpc.PostbackDispatcherServiceStub, postback_ch, key=key)
            ),
            install_cache=LruCache(config.install_cache_size, config.install_cache_ttl),
            explain=config.explanations,
        )
        self.explainer = Explainer(self.apps, store, config.simulate_max_installs)
        self.app_keys = self.apps
        self.invalidation: RedisInvalidation | None = None
        metrics.watch({"settings": self.apps.cache, "install": self.engine.install_cache})

    def register(self, server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_DeciderServiceServicer_to_server(DeciderServicer(self.engine), server)
        apps_grpc.add_AppSettingsServiceServicer_to_server(AppSettingsServicer(self.apps), server)
        outcomes_grpc.add_OutcomesServiceServicer_to_server(
            OutcomesServicer(self.store.stub), server
        )
        explain_grpc.add_ExplainServiceServicer_to_server(ExplainServicer(self.explainer), server)
        return [
            explain_pb.DESCRIPTOR.services_by_name["ExplainService"].full_name,
            pb.DESCRIPTOR.services_by_name["DeciderService"].full_name,
            apps_pb.DESCRIPTOR.services_by_name["AppSettingsService"].full_name,
            outcomes_pb.DESCRIPTOR.services_by_name["OutcomesService"].full_name,
        ]

    async def start(self) -> None:
        await clients.wait_ready(self.channels)
        if self.config.redis_url:
            cache = self.apps.cache
            c = self.config
            self.invalidation = RedisInvalidation(
                c.redis_url,
                cache.drop,
                cache.clear,
                username=c.redis_username,
                password=c.redis_password,
                tls_ca=c.redis_tls_ca,
            )
            await self.invalidation.start()
            self.apps.on_change = self.invalidation.publish

    async def stop(self) -> None:
        if self.invalidation is not None:
            await self.invalidation.stop()
        await clients.close(self.channels)
        log.info("store batching: %s", self.store.batching())
        for name, cache in (("settings", self.apps.cache), ("install", self.engine.install_cache)):
            log.info(
                "%s cache: %d hits, %d misses, hit ratio %.3f",
                name,
                cache.hits,
                cache.misses,
                cache.hit_ratio,
            )
