"""Calling the decider, for the services that take reports (the gateway and
ingestion): each report validated in process first, then decided."""

from __future__ import annotations

from lookback.api.decider.v1 import decider_service_pb2 as pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import decision_pb2, install_pb2
from lookback.core import intake


class DeciderClient:
    def __init__(self, stub: pb_grpc.DeciderServiceStub) -> None:
        self.stub = stub

    async def install(self, install: install_pb2.Install) -> decision_pb2.Decision:
        intake.prepare_install(install)
        return (await self.stub.DecideInstall(pb.DecideInstallRequest(install=install))).decision

    async def open(self, open_: install_pb2.Open) -> decision_pb2.Decision:
        intake.prepare_open(open_)
        return (await self.stub.DecideOpen(pb.DecideOpenRequest(open=open_))).decision

    async def event(self, event: install_pb2.InAppEvent) -> decision_pb2.EventAttribution:
        intake.prepare_event(event)
        return (await self.stub.AttributeEvent(pb.AttributeEventRequest(event=event))).attribution
