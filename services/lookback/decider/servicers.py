"""The decider's gRPC servicers: requests to the engine and back, nothing more."""

from __future__ import annotations

import time
from dataclasses import dataclass

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as pb_grpc
from lookback.core import auth, convert, intake
from lookback.core import validation as check
from lookback.decider import metrics
from lookback.decider.apps import AppSettings
from lookback.decider.engine import DecisionEngine

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["DeciderService"],
    DecideInstall=auth.app_rule(auth.SDK, lambda r: (r.install.app_id,)),
    DecideOpen=auth.app_rule(auth.SDK, lambda r: (r.open.app_id,)),
    AttributeEvent=auth.app_rule(auth.SDK, lambda r: (r.event.app_id,)),
) | auth.rules_for(
    apps_pb.DESCRIPTOR.services_by_name["AppSettingsService"],
    CreateApp=auth.ADMIN_ONLY,
    GetApp=auth.ADMIN_ONLY,
    UpdateApp=auth.ADMIN_ONLY,
    RotateAppKey=auth.ADMIN_ONLY,
)
"""Who may call each method: app keys decide their own app's reports; apps
and their keys are the operator's."""


@dataclass
class DeciderServicer(pb_grpc.DeciderServiceServicer):
    """Every request is validated here too (a caller may skip ingestion)."""

    engine: DecisionEngine

    async def DecideInstall(
        self, request: pb.DecideInstallRequest, context: object
    ) -> pb.DecideInstallResponse:
        started = time.perf_counter()
        intake.prepare_install(request.install)
        decision = await self.engine.decide_install(request.install)
        metrics.decided("install", decision, time.perf_counter() - started)
        return pb.DecideInstallResponse(decision=decision)

    async def DecideOpen(
        self, request: pb.DecideOpenRequest, context: object
    ) -> pb.DecideOpenResponse:
        started = time.perf_counter()
        intake.prepare_open(request.open)
        response = pb.DecideOpenResponse(decision=await self.engine.decide_open(request.open))
        metrics.decided("open", response.decision, time.perf_counter() - started)
        return response

    async def AttributeEvent(
        self, request: pb.AttributeEventRequest, context: object
    ) -> pb.AttributeEventResponse:
        intake.prepare_event(request.event)
        return pb.AttributeEventResponse(
            attribution=await self.engine.attribute_event(request.event)
        )


@dataclass
class AppSettingsServicer(apps_grpc.AppSettingsServiceServicer):
    """Apps are created, read (cached) and updated by :class:`AppSettings`."""

    apps: AppSettings

    async def CreateApp(
        self, request: apps_pb.CreateAppRequest, context: object
    ) -> apps_pb.CreateAppResponse:
        app, keys = await self.apps.create(request.app)
        return apps_pb.CreateAppResponse(
            app=app, keys=apps_pb.AppKeys(sdk=keys[auth.SDK], s2s=keys[auth.S2S])
        )

    async def GetApp(
        self, request: apps_pb.GetAppRequest, context: object
    ) -> apps_pb.GetAppResponse:
        check.ensure(check.check_id, request.app_id, "app_id")
        return apps_pb.GetAppResponse(app=(await self.apps.get(request.app_id)).app)

    async def UpdateApp(
        self, request: apps_pb.UpdateAppRequest, context: object
    ) -> apps_pb.UpdateAppResponse:
        check.ensure(check.check_id, request.app.app_id, "app_id", prefix="app.")
        app = await self.apps.update(request.app, request.update_mask, request.expected_version)
        return apps_pb.UpdateAppResponse(app=app)

    async def RotateAppKey(
        self, request: apps_pb.RotateAppKeyRequest, context: object
    ) -> apps_pb.RotateAppKeyResponse:
        grace = (
            convert.dur_to_micros(request.grace_period)
            if request.HasField("grace_period")
            else auth.DEFAULT_GRACE_SECONDS * 1_000_000
        )
        rotation = await self.apps.rotate_key(request.app_id, request.scope, grace)
        return apps_pb.RotateAppKeyResponse(
            key=rotation.key,
            app=rotation.app,
            previous_keys_expire_time=convert.micros_to_ts(rotation.previous_expire),
        )
