"""The ingestion service: the gRPC front door for internal backends.

Touches are validated whole (nothing of a batch is stored unless all of it
is good) and stored before the call answers OK (nothing accepted is lost);
single touches that arrive together are written together. Installs, opens
and events are validated and handed to the decider, which records them.
(SDK traffic takes the gateway, which does the same in process and calls
the decider and the store directly.)
"""

from __future__ import annotations

from dataclasses import dataclass

from lookback.api.ingestion.v1 import ingestion_service_pb2 as pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as pb_grpc
from lookback.core import auth, intake
from lookback.decider.client import DeciderClient
from lookback.touchpoint_store.client import TouchWriter

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["IngestionService"],
    RecordTouch=auth.app_rule(auth.S2S, lambda r: (r.touch.app_id,)),
    RecordTouches=auth.app_rule(auth.S2S, lambda r: (t.app_id for t in r.touches)),
    ReportInstall=auth.app_rule(auth.SDK, lambda r: (r.install.app_id,)),
    ReportOpen=auth.app_rule(auth.SDK, lambda r: (r.open.app_id,)),
    RecordEvent=auth.app_rule(auth.SDK, lambda r: (r.event.app_id,)),
)
"""Touches come from the app's backend (``s2s``); reports from either key."""


@dataclass
class IngestionServicer(pb_grpc.IngestionServiceServicer):
    """Validated in process, then stored (touches) or decided."""

    touches: TouchWriter
    decider: DeciderClient

    async def RecordTouch(
        self, request: pb.RecordTouchRequest, context: object
    ) -> pb.RecordTouchResponse:
        intake.prepare_touch(request.touch)
        await self.touches.put(request.touch)
        return pb.RecordTouchResponse(click_id=request.touch.click_id)

    async def RecordTouches(
        self, request: pb.RecordTouchesRequest, context: object
    ) -> pb.RecordTouchesResponse:
        intake.prepare_touches(request.touches)
        await self.touches.put_many(request.touches)
        return pb.RecordTouchesResponse(click_ids=[t.click_id for t in request.touches])

    async def ReportInstall(
        self, request: pb.ReportInstallRequest, context: object
    ) -> pb.ReportInstallResponse:
        return pb.ReportInstallResponse(decision=await self.decider.install(request.install))

    async def ReportOpen(
        self, request: pb.ReportOpenRequest, context: object
    ) -> pb.ReportOpenResponse:
        return pb.ReportOpenResponse(decision=await self.decider.open(request.open))

    async def RecordEvent(
        self, request: pb.RecordEventRequest, context: object
    ) -> pb.RecordEventResponse:
        return pb.RecordEventResponse(attribution=await self.decider.event(request.event))
