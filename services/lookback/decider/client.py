"""Calling the decider, for the services that take reports (the gateway and
ingestion): each report validated in process first, then decided."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2
from lookback.core import intake
from lookback.core.errors import InvalidArgument, NotFound
from lookback.decider.cache import LruCache, SingleFlight


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


FRESH_INTERVAL = 1.0
"""Seconds between reads of one app that bypass the cache (a key not found
in the cached copy may have just been issued; a flood of wrong keys for one
app must not become a flood of reads)."""


class AppDirectory:
    """Apps read from the decider's settings service, cached for ``ttl``
    seconds (misses too): the app keys the gateway and ingestion check, and
    the link settings (redirect allowlist, signing) the gateway applies."""

    def __init__(
        self,
        stub: apps_grpc.AppSettingsServiceStub | store_grpc.TouchpointStoreServiceStub,
        ttl: float = 5.0,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``stub``: the decider's settings service, or (for a service that
        talks to the store and not to the decider) the store, whose
        ``GetApp`` answers the same."""
        self.stub = stub
        self._request: Any = (
            store_pb.GetAppRequest
            if isinstance(stub, store_grpc.TouchpointStoreServiceStub)
            else apps_pb.GetAppRequest
        )
        # A one-tuple, so that "no such app" is cached too.
        self.cache: LruCache[str, tuple[app_pb2.App | None]] = LruCache(size, ttl, clock)
        self.clock = clock
        self._fresh: LruCache[str, bool] = LruCache(size, FRESH_INTERVAL, clock)
        self._flight: SingleFlight[app_pb2.App | None] = SingleFlight()

    async def get(self, app_id: str, fresh: bool = False) -> app_pb2.App | None:
        """The app, or None when there is no such app."""
        if fresh:
            if self._fresh.get(app_id) is None:
                self._fresh.put(app_id, True)
                self.cache.drop(app_id)
        else:
            cached = self.cache.get(app_id)
            if cached is not None:
                return cached[0]
        app, _ = await self._flight.run(app_id, lambda: self._read(app_id))
        return app

    async def _read(self, app_id: str) -> app_pb2.App | None:
        try:
            app: app_pb2.App | None = (await self.stub.GetApp(self._request(app_id=app_id))).app
        except (NotFound, InvalidArgument):
            app = None
        self.cache.put(app_id, (app,))
        return app

    def forget(self, app_id: str) -> None:
        """Drop the cached copy (this process just changed the app)."""
        self.cache.drop(app_id)

    async def app_keys(self, app_id: str, fresh: bool = False) -> Sequence[app_pb2.AppKey] | None:
        app = await self.get(app_id, fresh)
        return None if app is None else app.keys
