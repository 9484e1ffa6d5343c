"""The decider's gRPC services: DeciderService and AppSettingsService.

For an install the decider, in order:

1. reads the app's settings (LRU cache, else the store);
2. gathers the facts in one store round trip (the install id's existing
   record, candidate touches, prior installs of the device) while it asks
   the app's SRNs under a deadline;
3. applies the pure rules (:mod:`lookback.domain.rules`);
4. records the decision with create-if-absent, so concurrent reports of the
   same install id, through any replica, keep exactly one decision; every
   caller but the first gets it back with kind DUPLICATE;
5. hands a counted decision's postbacks to the dispatcher (job ids derived
   from the decision, so handing them over twice sends once).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import grpc
from google.protobuf import timestamp_pb2

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as pb_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, postback_pb2
from lookback.core import clients, convert
from lookback.core.clock import now_micros
from lookback.core.errors import Aborted, NotFound, Violations
from lookback.core.server import ServerConfig
from lookback.core.validation import check_app
from lookback.decider import metrics
from lookback.decider.cache import LruCache
from lookback.decider.coherence import RedisInvalidation
from lookback.domain import devices, rules, useragent
from lookback.domain.durations import DAY
from lookback.domain.model import ORGANIC, Kind, Method, Settings, TouchType
from lookback.domain.postbacks import render

log = logging.getLogger("lookback.decider")

T = TypeVar("T")

# The longest a touch can count (the widest click lookback allowed).
MAX_TOUCH_LOOKBACK = 30 * DAY


@dataclass(frozen=True)
class DeciderConfig(ServerConfig):
    """Settings of the decider."""

    store_address: str = "127.0.0.1:7401"
    """The touchpoint store."""
    srn_address: str = "127.0.0.1:7404"
    """The SRN adapter."""
    postback_address: str = "127.0.0.1:7405"
    """The postback dispatcher."""
    srn_budget_ms: int = 100
    """Longest wait for SRN answers; late networks are reported as unanswered."""
    settings_cache_size: int = 10_000
    """Apps whose settings are cached."""
    settings_cache_ttl: float = 5.0
    """Seconds a cached app's settings may be used; bounds how long another
    decider replica may use settings changed elsewhere."""
    install_cache_size: int = 100_000
    """Recent install decisions cached for duplicate reports."""
    install_cache_ttl: float = 600.0
    """Seconds a cached install decision is kept."""
    store_timeout: float = 2.0
    """Deadline of each store call, in seconds."""
    redis_url: str = ""
    """Redis for settings cache coherence across replicas (pub/sub); empty for
    none (then ``settings_cache_ttl`` bounds staleness)."""


@dataclass(frozen=True)
class CachedApp:
    app: app_pb2.App
    settings: Settings


class _SingleFlight(Generic[T]):
    """Concurrent calls with the same key share one execution."""

    def __init__(self) -> None:
        self._running: dict[object, asyncio.Future[T]] = {}

    async def run(self, key: object, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Returns the result and whether this caller was the one that ran it."""
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running), False
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await fn()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._running[key]
        future.set_result(result)
        return result, True


def as_duplicate(decision: decision_pb2.Decision) -> decision_pb2.Decision:
    dup = decision_pb2.Decision()
    dup.CopyFrom(decision)
    dup.kind = decision_pb2.DECISION_KIND_DUPLICATE
    dup.counted = False
    return dup


_TRIGGERS = {
    Kind.INSTALL: ("install", postback_pb2.POSTBACK_TRIGGER_INSTALL),
    Kind.REATTRIBUTION: ("reattribution", postback_pb2.POSTBACK_TRIGGER_REATTRIBUTION),
    Kind.REENGAGEMENT: ("reengagement", postback_pb2.POSTBACK_TRIGGER_REENGAGEMENT),
}


def _iso(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToJsonString() if ts.seconds or ts.nanos else ""


def postback_jobs(
    app: app_pb2.App,
    partner: str,
    trigger: str,
    trigger_enum: postback_pb2.PostbackTrigger.ValueType,
    source_id: str,
    macros: dict[str, str],
    created: timestamp_pb2.Timestamp,
) -> list[postback_pb2.PostbackJob]:
    """The rendered postback for ``partner`` and ``trigger``, if the app has one."""
    templates = app.settings.postbacks.get(partner)
    if templates is None or not templates.HasField(trigger):  # type: ignore[arg-type]
        return []
    template: postback_pb2.PostbackTemplate = getattr(templates, trigger)
    if not template.url:
        return []
    return [
        postback_pb2.PostbackJob(
            job_id=f"{source_id}:{partner}:{trigger}",
            app_id=app.app_id,
            partner=partner,
            trigger=trigger_enum,
            url=render(template.url, macros),
            method=template.method or postback_pb2.HTTP_METHOD_GET,
            body=render(template.body, macros),
            signing_secret=templates.signing_secret,
            create_time=created,
            source_id=source_id,
        )
    ]


def decision_macros(d: decision_pb2.Decision) -> dict[str, str]:
    return {
        "app_id": d.app_id,
        "install_id": d.install_id,
        "decision_id": d.decision_id,
        "kind": convert.KIND.domain(d.kind, Kind.INSTALL).value,
        "media_source": d.media_source,
        "campaign": d.campaign,
        "adset": d.adset,
        "ad": d.ad,
        "site_id": d.site_id,
        "click_id": d.click_id,
        "method": convert.METHOD.domain(d.method, Method.NONE).value,
        "touch_type": convert.TOUCH_TYPE.domain(d.touch_type, TouchType.NONE).value,
        "install_time": _iso(d.event_time),
        "event_time": _iso(d.event_time),
    }


class Decider:
    """The decision logic around the pure rules: gathering, recording, postbacks."""

    def __init__(self, config: DeciderConfig) -> None:
        self.config = config
        self.settings_cache: LruCache[str, CachedApp] = LruCache(
            config.settings_cache_size, config.settings_cache_ttl
        )
        self.install_cache: LruCache[tuple[str, str], decision_pb2.Decision] = LruCache(
            config.install_cache_size, config.install_cache_ttl
        )
        self._flights: _SingleFlight[decision_pb2.Decision] = _SingleFlight()
        metrics.watch(self)
        self._channels: list[grpc.aio.Channel] = []
        self.invalidation: RedisInvalidation | None = None

    async def connect(self) -> None:
        store_ch = clients.channel(self.config.store_address)
        srn_ch = clients.channel(self.config.srn_address)
        postback_ch = clients.channel(self.config.postback_address)
        self._channels = [store_ch, srn_ch, postback_ch]
        self.store = clients.stub(
            store_grpc.TouchpointStoreServiceStub, store_ch, self.config.store_timeout
        )
        self.srn = clients.stub(srn_grpc.SrnAdapterServiceStub, srn_ch)
        self.postbacks = clients.stub(postback_grpc.PostbackDispatcherServiceStub, postback_ch)
        for ch in self._channels:
            await asyncio.wait_for(ch.channel_ready(), timeout=30)
        if self.config.redis_url:
            self.invalidation = RedisInvalidation(
                self.config.redis_url, self.settings_cache.drop, self.settings_cache.clear
            )
            await self.invalidation.start()

    async def close(self) -> None:
        if self.invalidation is not None:
            await self.invalidation.stop()
        for ch in self._channels:
            await ch.close()

    async def settings_changed(self, app: app_pb2.App) -> None:
        """This replica uses the new settings at once; the others drop theirs."""
        self.remember_app(app)
        if self.invalidation is not None:
            await self.invalidation.publish(app.app_id)

    # --- apps ------------------------------------------------------------

    async def app(self, app_id: str) -> CachedApp:
        cached = self.settings_cache.get(app_id)
        if cached is None:
            response = await self.store.GetApp(store_pb.GetAppRequest(app_id=app_id))
            cached = self.remember_app(response.app)
        return cached

    def remember_app(self, app: app_pb2.App) -> CachedApp:
        cached = CachedApp(app, convert.settings(app))
        self.settings_cache.put(app.app_id, cached)
        return cached

    # --- installs --------------------------------------------------------

    async def decide_install(self, install: install_pb2.Install) -> decision_pb2.Decision:
        key = (install.app_id, install.install_id)
        cached = self.install_cache.get(key)
        if cached is not None:
            return as_duplicate(cached)
        decision, ran = await self._flights.run(key, lambda: self._decide_install(install))
        return decision if ran else as_duplicate(decision)

    async def _decide_install(self, install: install_pb2.Install) -> decision_pb2.Decision:
        started = time.perf_counter_ns()
        app = await self.app(install.app_id)
        facts_install = convert.install(install)
        matching = rules.matching_for_install(facts_install, app.settings)
        touch_keys = sorted(matching.device_keys)
        device_keys = devices.install_keys(touch_keys)
        if matching.agent is not None and (ip := useragent.ip_key(install.ip)):
            touch_keys.append(ip)
        at = facts_install.installed_at
        gather = self.store.GatherInstallFacts(
            store_pb.GatherInstallFactsRequest(
                app_id=install.app_id,
                install_id=install.install_id,
                touch_keys=touch_keys,
                click_ids=[matching.referrer_click_id] if matching.referrer_click_id else [],
                engaged_after=convert.micros_to_ts(at - MAX_TOUCH_LOOKBACK),
                engaged_before=convert.micros_to_ts(at),
                device_keys=device_keys,
            )
        )
        srn_query = self._ask_srns(install, app) if app.settings.srn_networks else None
        if srn_query is not None:
            facts, srn_answer = await asyncio.gather(gather, srn_query)
        else:
            facts, srn_answer = await gather, srn_pb.QueryClaimsResponse()
        if facts.HasField("existing"):
            return await self._known(facts.existing.decision, app)

        prior = [convert.prior_install(r) for r in facts.prior]
        outcome = rules.decide_install(
            facts_install,
            app.settings,
            [convert.touch(t) for t in facts.touches],
            [convert.claim(c) for c in srn_answer.claims],
            prior,
        )
        decided_at = now_micros()
        decision = convert.decision(
            outcome,
            decision_id=uuid.uuid4().hex,
            app_id=install.app_id,
            install_id=install.install_id,
            event_time=at,
            decided_at=decided_at,
            latency=(time.perf_counter_ns() - started) // 1000,
            unanswered_srns=tuple(srn_answer.unanswered),
        )
        record = store_pb.InstallRecord(install=install, match_keys=device_keys, decision=decision)
        if outcome.kind is Kind.REINSTALL:
            holder = next(
                r
                for r in facts.prior
                if r.attributed_decision.decision_id == outcome.original_decision_id
            )
            record.attributed_decision.CopyFrom(holder.attributed_decision)
        else:
            record.attributed_decision.CopyFrom(decision)
        created = await self.store.CreateInstallRecord(
            store_pb.CreateInstallRecordRequest(record=record)
        )
        if not created.created:
            return await self._known(created.record.decision, app)
        self.install_cache.put((install.app_id, install.install_id), decision)
        await self._send_postbacks(decision, app)
        return decision

    async def _known(
        self, decision: decision_pb2.Decision, app: CachedApp
    ) -> decision_pb2.Decision:
        """An install id decided before: hand its postbacks over again (idempotent,
        in case the first caller failed in between) and answer as a duplicate."""
        self.install_cache.put((decision.app_id, decision.install_id), decision)
        await self._send_postbacks(decision, app)
        return as_duplicate(decision)

    async def _ask_srns(
        self, install: install_pb2.Install, app: CachedApp
    ) -> srn_pb.QueryClaimsResponse:
        budget = self.config.srn_budget_ms / 1000
        request = srn_pb.QueryClaimsRequest(
            app_id=install.app_id,
            networks=list(app.settings.srn_networks),
            device=install.device,
            installed_at=install.installed_at,
            budget=convert.micros_to_dur(self.config.srn_budget_ms * 1000),
        )
        try:
            return await self.srn.QueryClaims(request, timeout=budget + 0.05)
        except grpc.aio.AioRpcError as exc:
            log.warning("SRN adapter failed: %s", exc.code().name)
            return srn_pb.QueryClaimsResponse(unanswered=list(app.settings.srn_networks))

    async def _send_postbacks(self, decision: decision_pb2.Decision, app: CachedApp) -> None:
        if not decision.counted:
            return
        kind = convert.KIND.domain(decision.kind, Kind.INSTALL)
        trigger, trigger_enum = _TRIGGERS[kind]
        jobs = postback_jobs(
            app.app,
            decision.media_source,
            trigger,
            trigger_enum,
            decision.decision_id,
            decision_macros(decision),
            decision.decided_at,
        )
        if jobs:
            await self.postbacks.EnqueuePostbacks(postback_pb.EnqueuePostbacksRequest(jobs=jobs))

    # --- opens -----------------------------------------------------------

    async def _record(self, app_id: str, install_id: str) -> store_pb.InstallRecord:
        try:
            response = await self.store.GetInstallRecord(
                store_pb.GetInstallRecordRequest(app_id=app_id, install_id=install_id)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"install {install_id!r} of app {app_id!r} is not known") from exc
            raise
        return response.record

    async def decide_open(self, open_: install_pb2.Open) -> decision_pb2.Decision:
        started = time.perf_counter_ns()
        app = await self.app(open_.app_id)
        record = await self._record(open_.app_id, open_.install_id)
        facts_open = convert.open_(open_)
        keys = sorted(devices.install_device_keys(facts_open.device))
        found = await self.store.FindTouches(
            store_pb.FindTouchesRequest(
                app_id=open_.app_id,
                match_keys=keys,
                click_ids=[open_.deep_link_click_id] if open_.deep_link_click_id else [],
                engaged_after=convert.micros_to_ts(facts_open.opened_at - MAX_TOUCH_LOOKBACK),
                engaged_before=open_.opened_at,
            )
        )
        outcome = rules.decide_open(
            facts_open,
            app.settings,
            [convert.touch(t) for t in found.touches],
            convert.prior_install(record),
        )
        decision = convert.decision(
            outcome,
            decision_id=uuid.uuid4().hex,
            app_id=open_.app_id,
            install_id=open_.install_id,
            event_time=facts_open.opened_at,
            decided_at=now_micros(),
            latency=(time.perf_counter_ns() - started) // 1000,
        )
        if outcome.kind is Kind.REENGAGEMENT:
            await self.store.RecordOpenDecision(
                store_pb.RecordOpenDecisionRequest(open=open_, decision=decision)
            )
            await self._send_postbacks(decision, app)
        return decision

    # --- events ----------------------------------------------------------

    async def attribute_event(self, event: install_pb2.InAppEvent) -> decision_pb2.EventAttribution:
        app = await self.app(event.app_id)
        record = await self._record(event.app_id, event.install_id)
        result = rules.attribute_event(
            convert.ts_to_micros(event.occurred_at), app.settings, convert.prior_install(record)
        )
        attribution = decision_pb2.EventAttribution(
            event_id=event.event_id,
            media_source=result.media_source,
            campaign=result.campaign,
            reengagement_media_source=result.reengagement_media_source,
            decision_id=result.decision_id,
        )
        stored = await self.store.PutEvent(
            store_pb.PutEventRequest(event=event, attribution=attribution)
        )
        if not stored.created:
            attribution = stored.attribution
            attribution.duplicate = True
        await self._send_event_postbacks(event, attribution, record, app)
        return attribution

    async def _send_event_postbacks(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        record: store_pb.InstallRecord,
        app: CachedApp,
    ) -> None:
        partners = [
            p
            for p in dict.fromkeys(
                [attribution.media_source, attribution.reengagement_media_source]
            )
            if p and p != ORGANIC
        ]
        if not partners:
            return
        macros = decision_macros(record.attributed_decision)
        macros.update(
            {
                "install_id": event.install_id,
                "event_id": event.event_id,
                "event_name": event.name,
                "event_revenue": event.revenue,
                "event_currency": event.currency,
                "event_time": _iso(event.occurred_at),
                "reengagement_media_source": attribution.reengagement_media_source,
            }
        )
        jobs: list[postback_pb2.PostbackJob] = []
        for partner in partners:
            macros["media_source"] = partner
            jobs += postback_jobs(
                app.app,
                partner,
                "event",
                postback_pb2.POSTBACK_TRIGGER_EVENT,
                f"event:{event.app_id}:{event.event_id}",
                macros,
                event.occurred_at,
            )
        if jobs:
            await self.postbacks.EnqueuePostbacks(postback_pb.EnqueuePostbacksRequest(jobs=jobs))


class DeciderServicer(pb_grpc.DeciderServiceServicer):
    def __init__(self, decider: Decider) -> None:
        self.decider = decider

    async def DecideInstall(
        self, request: pb.DecideInstallRequest, context: object
    ) -> pb.DecideInstallResponse:
        started = time.perf_counter()
        decision = await self.decider.decide_install(request.install)
        metrics.decided("install", decision, time.perf_counter() - started)
        return pb.DecideInstallResponse(decision=decision)

    async def DecideOpen(
        self, request: pb.DecideOpenRequest, context: object
    ) -> pb.DecideOpenResponse:
        started = time.perf_counter()
        decision = await self.decider.decide_open(request.open)
        metrics.decided("open", decision, time.perf_counter() - started)
        return pb.DecideOpenResponse(decision=decision)

    async def AttributeEvent(
        self, request: pb.AttributeEventRequest, context: object
    ) -> pb.AttributeEventResponse:
        return pb.AttributeEventResponse(
            attribution=await self.decider.attribute_event(request.event)
        )


class AppSettingsServicer(apps_grpc.AppSettingsServiceServicer):
    """Apps are validated here and stored by the store; the decider serving a
    change drops its cached copy at once."""

    def __init__(self, decider: Decider) -> None:
        self.decider = decider

    @staticmethod
    def _validate(app: app_pb2.App) -> None:
        v = Violations(prefix="app.")
        check_app(v, app)
        v.raise_if_any()

    async def CreateApp(
        self, request: apps_pb.CreateAppRequest, context: object
    ) -> apps_pb.CreateAppResponse:
        self._validate(request.app)
        app = app_pb2.App()
        app.CopyFrom(request.app)
        app.version = 1
        app.create_time.GetCurrentTime()
        app.update_time.CopyFrom(app.create_time)
        stored = await self.decider.store.CreateApp(store_pb.CreateAppRequest(app=app))
        self.decider.remember_app(stored.app)
        return apps_pb.CreateAppResponse(app=stored.app)

    async def GetApp(
        self, request: apps_pb.GetAppRequest, context: object
    ) -> apps_pb.GetAppResponse:
        v = Violations()
        v.require(request.app_id, "app_id")
        v.raise_if_any()
        cached = await self.decider.app(request.app_id)
        return apps_pb.GetAppResponse(app=cached.app)

    async def UpdateApp(
        self, request: apps_pb.UpdateAppRequest, context: object
    ) -> apps_pb.UpdateAppResponse:
        app_id = request.app.app_id
        current = (await self.decider.store.GetApp(store_pb.GetAppRequest(app_id=app_id))).app
        if request.expected_version and request.expected_version != current.version:
            raise Aborted(
                f"app {app_id!r} is at version {current.version}, not {request.expected_version}"
            )
        updated = app_pb2.App()
        updated.CopyFrom(current)
        mask = request.update_mask
        if mask.paths:
            for path in mask.paths:
                if path.split(".")[0] not in ("platform", "settings"):
                    v = Violations()
                    v.add("update_mask", f"cannot update {path!r}; only platform and settings")
                    v.raise_if_any()
            # Replace (not merge) the named fields, so repeated and map fields
            # are set to exactly what the caller sent.
            mask.MergeMessage(
                request.app, updated, replace_message_field=True, replace_repeated_field=True
            )
        else:
            updated.platform = request.app.platform
            updated.settings.CopyFrom(request.app.settings)
        self._validate(updated)
        updated.version = current.version + 1
        updated.update_time.GetCurrentTime()
        stored = await self.decider.store.ReplaceApp(
            store_pb.ReplaceAppRequest(app=updated, expected_version=current.version)
        )
        await self.decider.settings_changed(stored.app)
        return apps_pb.UpdateAppResponse(app=stored.app)


class DeciderComponent:
    name = "decider"

    def __init__(self, config: DeciderConfig) -> None:
        self.config = config
        self.decider = Decider(config)

    def register(self, server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_DeciderServiceServicer_to_server(DeciderServicer(self.decider), server)
        apps_grpc.add_AppSettingsServiceServicer_to_server(
            AppSettingsServicer(self.decider), server
        )
        return [
            pb.DESCRIPTOR.services_by_name["DeciderService"].full_name,
            apps_pb.DESCRIPTOR.services_by_name["AppSettingsService"].full_name,
        ]

    async def start(self) -> None:
        await self.decider.connect()

    async def stop(self) -> None:
        await self.decider.close()
        for name, cache in (
            ("settings", self.decider.settings_cache),
            ("install", self.decider.install_cache),
        ):
            log.info(
                "%s cache: %d hits, %d misses, hit ratio %.3f",
                name,
                cache.hits,
                cache.misses,
                cache.hit_ratio,
            )
