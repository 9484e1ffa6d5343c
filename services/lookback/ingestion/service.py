"""The ingestion service: validate, fill defaults, store or hand to the decider.

Touches are stored before the call answers OK (nothing accepted is lost) and
a batch is validated whole before any of it is stored (nothing half-written).
Installs, opens and events go to the decider, which records them.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import grpc

from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import touch_pb2
from lookback.core import clients, convert
from lookback.core.clock import now_micros
from lookback.core.errors import Violations
from lookback.core.server import ServerConfig
from lookback.core.validation import check_event, check_install, check_open, check_touch
from lookback.domain import devices, useragent

MAX_BATCH = 1000


@dataclass(frozen=True)
class IngestionConfig(ServerConfig):
    """Settings of the ingestion service."""

    store_address: str = "127.0.0.1:7401"
    """The touchpoint store."""
    decider_address: str = "127.0.0.1:7402"
    """The decider."""
    decider_timeout: float = 5.0
    """Deadline of a decision call, in seconds."""


def new_id() -> str:
    return uuid.uuid4().hex


def index_touch(touch: touch_pb2.Touch) -> store_pb.IndexedTouch:
    """The touch with the keys it can be found by."""
    keys = devices.touch_device_keys(convert.device(touch.device))
    if ip := useragent.ip_key(touch.ip):
        keys.add(ip)
    return store_pb.IndexedTouch(touch=touch, match_keys=sorted(keys))


class IngestionServicer(pb_grpc.IngestionServiceServicer):
    def __init__(
        self, store: store_grpc.TouchpointStoreServiceStub, decider: decider_grpc.DeciderServiceStub
    ) -> None:
        self.store = store
        self.decider = decider

    @staticmethod
    def _prepare_touch(touch: touch_pb2.Touch, v: Violations, now: int) -> None:
        check_touch(v, touch, now)
        if not touch.click_id:
            touch.click_id = new_id()
        if not touch.HasField("engaged_at"):
            touch.engaged_at.CopyFrom(convert.micros_to_ts(now))
        touch.received_at.CopyFrom(convert.micros_to_ts(now))

    async def RecordTouch(
        self, request: pb.RecordTouchRequest, context: object
    ) -> pb.RecordTouchResponse:
        touch = request.touch
        v = Violations(prefix="touch.")
        self._prepare_touch(touch, v, now_micros())
        v.raise_if_any()
        await self.store.PutTouches(store_pb.PutTouchesRequest(touches=[index_touch(touch)]))
        return pb.RecordTouchResponse(click_id=touch.click_id)

    async def RecordTouches(
        self, request: pb.RecordTouchesRequest, context: object
    ) -> pb.RecordTouchesResponse:
        now = now_micros()
        v = Violations()
        if len(request.touches) > MAX_BATCH:
            v.add("touches", f"at most {MAX_BATCH} per call")
        for i, touch in enumerate(request.touches):
            item = Violations(prefix=f"touches[{i}].")
            self._prepare_touch(touch, item, now)
            v.items += item.items
        v.raise_if_any()
        await self.store.PutTouches(
            store_pb.PutTouchesRequest(touches=[index_touch(t) for t in request.touches])
        )
        return pb.RecordTouchesResponse(click_ids=[t.click_id for t in request.touches])

    async def ReportInstall(
        self, request: pb.ReportInstallRequest, context: object
    ) -> pb.ReportInstallResponse:
        install = request.install
        now = now_micros()
        v = Violations(prefix="install.")
        check_install(v, install, now)
        v.raise_if_any()
        if not install.HasField("installed_at"):
            install.installed_at.CopyFrom(convert.micros_to_ts(now))
        response = await self.decider.DecideInstall(
            decider_pb.DecideInstallRequest(install=install)
        )
        return pb.ReportInstallResponse(decision=response.decision)

    async def ReportOpen(
        self, request: pb.ReportOpenRequest, context: object
    ) -> pb.ReportOpenResponse:
        open_ = request.open
        now = now_micros()
        v = Violations(prefix="open.")
        check_open(v, open_, now)
        v.raise_if_any()
        if not open_.HasField("opened_at"):
            open_.opened_at.CopyFrom(convert.micros_to_ts(now))
        response = await self.decider.DecideOpen(decider_pb.DecideOpenRequest(open=open_))
        return pb.ReportOpenResponse(decision=response.decision)

    async def RecordEvent(
        self, request: pb.RecordEventRequest, context: object
    ) -> pb.RecordEventResponse:
        event = request.event
        now = now_micros()
        v = Violations(prefix="event.")
        check_event(v, event, now)
        v.raise_if_any()
        if not event.event_id:
            event.event_id = new_id()
        if not event.HasField("occurred_at"):
            event.occurred_at.CopyFrom(convert.micros_to_ts(now))
        response = await self.decider.AttributeEvent(decider_pb.AttributeEventRequest(event=event))
        return pb.RecordEventResponse(attribution=response.attribution)


class IngestionComponent:
    name = "ingestion"

    def __init__(self, config: IngestionConfig) -> None:
        self.config = config
        self._channels: list[grpc.aio.Channel] = []

    def register(self, server: grpc.aio.Server) -> list[str]:
        store_ch = clients.channel(self.config.store_address)
        decider_ch = clients.channel(self.config.decider_address)
        self._channels = [store_ch, decider_ch]
        pb_grpc.add_IngestionServiceServicer_to_server(
            IngestionServicer(
                clients.stub(store_grpc.TouchpointStoreServiceStub, store_ch),
                clients.stub(
                    decider_grpc.DeciderServiceStub, decider_ch, self.config.decider_timeout
                ),
            ),
            server,
        )
        return [pb.DESCRIPTOR.services_by_name["IngestionService"].full_name]

    async def start(self) -> None:
        for ch in self._channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)

    async def stop(self) -> None:
        for ch in self._channels:
            await ch.close()
