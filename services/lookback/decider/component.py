"""The decider as a servable component: the engine wired to the other services."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import grpc

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as pb_grpc
from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.api.links.v1 import link_service_pb2 as links_pb
from lookback.api.links.v1 import link_service_pb2_grpc as links_grpc
from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.privacy.v1 import privacy_service_pb2 as privacy_pb
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as privacy_grpc
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
from lookback.decider.links import RULES as LINKS_RULES
from lookback.decider.links import LinkServicer
from lookback.decider.outcomes import RULES as OUTCOMES_RULES
from lookback.decider.outcomes import OutcomesServicer
from lookback.decider.privacy import RULES as PRIVACY_RULES
from lookback.decider.privacy import Eraser, PrivacyServicer
from lookback.decider.servicers import RULES, AppSettingsServicer, DeciderServicer

log = logging.getLogger("lookback.decider")


class DeciderComponent:
    name = "decider"
    auth_rules = {**RULES, **OUTCOMES_RULES, **EXPLAIN_RULES, **PRIVACY_RULES, **LINKS_RULES}

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
        self.eraser = Eraser(
            # Erasure calls do more than a decision's: a longer deadline.
            clients.stub(store_grpc.TouchpointStoreServiceStub, store_ch, 60.0, key),
            clients.stub(postback_grpc.PostbackDispatcherServiceStub, postback_ch, 60.0, key),
            self._forget_installs,
            settle=config.erasure_settle,
            devices_per_call=config.erasure_devices_per_call,
        )
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
        privacy_grpc.add_PrivacyServiceServicer_to_server(PrivacyServicer(self.eraser), server)
        links_grpc.add_LinkServiceServicer_to_server(LinkServicer(self.store.stub), server)
        return [
            links_pb.DESCRIPTOR.services_by_name["LinkService"].full_name,
            privacy_pb.DESCRIPTOR.services_by_name["PrivacyService"].full_name,
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
                self._drop_all,
                username=c.redis_username,
                password=c.redis_password,
                tls_ca=c.redis_tls_ca,
                drop_installs=self._drop_installs,
            )
            await self.invalidation.start()
            self.apps.on_change = self.invalidation.publish
        await self.eraser.start()

    def _drop_all(self) -> None:
        """Messages may have been missed: forget every cached app and install."""
        self.apps.cache.clear()
        self.engine.install_cache.clear()

    def _drop_installs(self, app_id: str, install_ids: list[str]) -> None:
        for install_id in install_ids:
            self.engine.install_cache.drop((app_id, install_id))

    async def _forget_installs(self, app_id: str, install_ids: Sequence[str]) -> None:
        """An erasure's installs, out of this decider's cache and (through the
        coherence channel) every other's."""
        self._drop_installs(app_id, list(install_ids))
        if self.invalidation is not None:
            await self.invalidation.publish_installs(app_id, list(install_ids))

    async def stop(self) -> None:
        await self.eraser.stop()
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
