"""The ingestion service as a servable component."""

from __future__ import annotations

import grpc

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core import clients
from lookback.decider.client import AppDirectory, DeciderClient
from lookback.ingestion.config import IngestionConfig
from lookback.ingestion.servicer import RULES, IngestionServicer
from lookback.touchpoint_store.client import TouchWriter


class IngestionComponent:
    name = "ingestion"
    auth_rules = RULES

    def __init__(self, config: IngestionConfig) -> None:
        self.config = config
        self.key = config.outgoing_key()
        self.channels = clients.channels(config.store_address, config.decider_address)
        self.app_keys = AppDirectory(
            clients.stub(apps_grpc.AppSettingsServiceStub, self.channels[1], key=self.key)
        )

    def register(self, server: grpc.aio.Server) -> list[str]:
        store_ch, decider_ch = self.channels
        key = self.key
        pb_grpc.add_IngestionServiceServicer_to_server(
            IngestionServicer(
                TouchWriter(clients.stub(store_grpc.TouchpointStoreServiceStub, store_ch, key=key)),
                DeciderClient(
                    clients.stub(
                        decider_grpc.DeciderServiceStub,
                        decider_ch,
                        self.config.decider_timeout,
                        key,
                    )
                ),
            ),
            server,
        )
        return [pb.DESCRIPTOR.services_by_name["IngestionService"].full_name]

    async def start(self) -> None:
        await clients.wait_ready(self.channels)

    async def stop(self) -> None:
        await clients.close(self.channels)
