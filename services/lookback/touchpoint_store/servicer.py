"""The touchpoint store's gRPC service: translates RPCs to backend calls."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from lookback.api.store.v1 import touchpoint_store_service_pb2 as pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    erasure_pb2,
    explanation_pb2,
    touch_pb2,
)
from lookback.core import convert
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.convert import ts_to_micros
from lookback.core.errors import Aborted, AlreadyExists, Code, LookbackError, NotFound, Violations
from lookback.core.outbound import OutboundPolicy
from lookback.core.validation import validate_app
from lookback.domain import devices
from lookback.touchpoint_store.backend import DecisionFilter, InstallQuery, StoreBackend
from lookback.touchpoint_store.erasure import OPEN_KINDS, touch_keys

_FOREVER = 2**62
MAX_REPLAY_DECISIONS = 1000
_REPLAY_IDS_PER_READ = 100
MAX_ERASE_KEYS = 10_000
"""Keys (and install or click ids) one EraseDevices or ReadDeviceRecords names at most."""

log = logging.getLogger("lookback.store")


def _before(request: pb.GatherInstallFactsRequest | pb.FindTouchesRequest) -> int:
    if request.HasField("engaged_before"):
        return ts_to_micros(request.engaged_before)
    return _FOREVER


def _known_install(
    record: pb.InstallRecord | None, app_id: str, install_id: str
) -> pb.InstallRecord:
    if record is None:
        raise NotFound(f"no install {install_id!r} for app {app_id!r}")
    return record


def _known_app(app: app_pb2.App | None, app_id: str) -> app_pb2.App:
    if app is None:
        raise NotFound(f"app {app_id!r} is not registered")
    return app


def _status(exc: BaseException) -> pb.ItemStatus:
    if isinstance(exc, LookbackError):
        return pb.ItemStatus(code=int(exc.code), message=exc.message)
    log.error("batch item failed: %s", exc, exc_info=exc)
    return pb.ItemStatus(code=int(Code.INTERNAL), message="internal error")


@dataclass
class TouchpointStore(pb_grpc.TouchpointStoreServiceServicer):
    """Every RPC is one backend call; the backend guarantees durability.

    Every request is validated first, with the rules every service applies
    (a caller may skip ingestion and the decider), and bounded in size.
    Apps are validated before they are written, as the settings API does
    (postback destinations included), whoever writes them."""

    backend: StoreBackend
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)

    async def PutTouches(
        self, request: pb.PutTouchesRequest, context: object
    ) -> pb.PutTouchesResponse:
        check.ensure(check.check_indexed_touches, request.touches, now_micros())
        for indexed in request.touches:  # never stored raw (docs/privacy.md)
            convert.hash_raw_ids(indexed.touch.device)
            # Indexed by the keys the store derives itself, so that an
            # erasure finds every index row of a touch from the touch alone.
            indexed.match_keys[:] = sorted(touch_keys(indexed.touch))
        stored = await self.backend.put_touches(request.touches)
        return pb.PutTouchesResponse(stored=stored)

    async def GatherInstallFacts(
        self, request: pb.GatherInstallFactsRequest, context: object = None
    ) -> pb.GatherInstallFactsResponse:
        check.ensure(check.check_gather, request)
        facts = await self.backend.gather_install_facts(
            InstallQuery(
                request.app_id,
                request.install_id,
                request.touch_keys,
                request.click_ids,
                ts_to_micros(request.engaged_after),
                _before(request),
                request.device_keys,
            )
        )
        response = pb.GatherInstallFactsResponse(touches=facts.touches, prior=facts.prior)
        if facts.existing is not None:
            response.existing.CopyFrom(facts.existing)
        return response

    async def FindTouches(
        self, request: pb.FindTouchesRequest, context: object
    ) -> pb.FindTouchesResponse:
        check.ensure(check.check_find_touches, request)
        touches = await self.backend.find_touches(
            request.app_id,
            request.match_keys,
            request.click_ids,
            ts_to_micros(request.engaged_after),
            _before(request),
        )
        return pb.FindTouchesResponse(touches=touches)

    async def CreateInstallRecord(
        self, request: pb.CreateInstallRecordRequest, context: object = None
    ) -> pb.CreateInstallRecordResponse:
        check.ensure(check.check_create_install_record, request, now_micros())
        # Kept without raw identifiers (docs/privacy.md): both hashed forms
        # give the record every key the raw values did.
        convert.hash_raw_ids(request.record.install.device, devices.HASH_ALGORITHMS)
        created, record = await self.backend.create_install_record(
            request.record, request.postbacks
        )
        if not created and record.decision.decision_id == request.record.decision.decision_id:
            # The stored record is this caller's own, from an earlier attempt
            # whose answer was lost (a retry): the caller did create it. The
            # backend has (re)written its outcome idempotently.
            log.info("install %s: a retried create found its own record", record.install.install_id)
            created = True
        return pb.CreateInstallRecordResponse(created=created, record=record)

    async def ExchangeDecisionWork(
        self, request: pb.ExchangeDecisionWorkRequest, context: object
    ) -> pb.ExchangeDecisionWorkResponse:
        # Every item at once: the backend batches the concurrent writes into
        # one commit; a failed item (an invalid one too) fails alone.
        v = Violations()
        check.check_count(v, request.gathers, "gathers", check.MAX_BATCH)
        check.check_count(v, request.creates, "creates", check.MAX_BATCH)
        v.raise_if_any()
        n = len(request.gathers)
        outcomes = await asyncio.gather(
            *(self.GatherInstallFacts(r) for r in request.gathers),
            *(self.CreateInstallRecord(r) for r in request.creates),
            return_exceptions=True,
        )
        response = pb.ExchangeDecisionWorkResponse()
        for o in outcomes[:n]:
            if isinstance(o, BaseException):
                response.gathers.add(status=_status(o))
            else:
                response.gathers.add(facts=o)  # type: ignore[arg-type]
        for o in outcomes[n:]:
            if isinstance(o, BaseException):
                response.creates.add(status=_status(o))
            else:
                response.creates.add(response=o)  # type: ignore[arg-type]
        return response

    async def GetInstallRecord(
        self, request: pb.GetInstallRecordRequest, context: object
    ) -> pb.GetInstallRecordResponse:
        check.ensure(check.check_install_ref, request.app_id, request.install_id)
        record = await self.backend.get_install_record(request.app_id, request.install_id)
        return pb.GetInstallRecordResponse(
            record=_known_install(record, request.app_id, request.install_id)
        )

    async def RecordOpenDecision(
        self, request: pb.RecordOpenDecisionRequest, context: object
    ) -> pb.RecordOpenDecisionResponse:
        check.ensure(check.check_open_decision, request, now_micros())
        record = await self.backend.record_open_decision(
            request.open,
            request.decision,
            request.postbacks,
            request.explanation.SerializeToString() if request.HasField("explanation") else None,
        )
        return pb.RecordOpenDecisionResponse(
            record=_known_install(record, request.open.app_id, request.open.install_id)
        )

    async def PutEvent(self, request: pb.PutEventRequest, context: object) -> pb.PutEventResponse:
        check.ensure(check.check_put_event, request, now_micros())
        created, attribution = await self.backend.put_event(
            request.event, request.attribution, request.postbacks
        )
        return pb.PutEventResponse(created=created, attribution=attribution)

    async def CreateApp(
        self, request: pb.CreateAppRequest, context: object
    ) -> pb.CreateAppResponse:
        await validate_app(request.app, self.outbound)
        if not await self.backend.create_app(request.app):
            raise AlreadyExists(f"app {request.app.app_id!r} exists already")
        return pb.CreateAppResponse(app=request.app)

    async def GetApp(self, request: pb.GetAppRequest, context: object) -> pb.GetAppResponse:
        check.ensure(check.check_id, request.app_id, "app_id")
        return pb.GetAppResponse(
            app=_known_app(await self.backend.get_app(request.app_id), request.app_id)
        )

    async def ReplaceApp(
        self, request: pb.ReplaceAppRequest, context: object
    ) -> pb.ReplaceAppResponse:
        await validate_app(request.app, self.outbound)
        if not await self.backend.replace_app(request.app, request.expected_version):
            _known_app(await self.backend.get_app(request.app.app_id), request.app.app_id)
            raise Aborted(
                f"app {request.app.app_id!r} changed since version {request.expected_version}"
            )
        return pb.ReplaceAppResponse(app=request.app)

    async def ReadOutcomes(
        self, request: pb.ReadOutcomesRequest, context: object
    ) -> pb.ReadOutcomesResponse:
        check.ensure(check.check_read_outcomes, request)
        outcomes, cursor = await self.backend.read_outcomes(
            request.app_id,
            request.after_cursor,
            request.limit,
            request.rewind.ToMicroseconds() if request.HasField("rewind") else 0,
        )
        return pb.ReadOutcomesResponse(outcomes=outcomes, next_cursor=cursor)

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: object
    ) -> pb.GetDecisionResponse:
        check.ensure(check.check_get_decision, request)
        decision = await self.backend.get_decision(request.app_id, request.decision_id)
        if decision is None:
            raise NotFound(f"no decision {request.decision_id!r} for app {request.app_id!r}")
        answer = pb.GetDecisionResponse(decision=decision)
        if request.include_explanation:
            explanation = await self._explanation(decision)
            if explanation is not None:
                answer.explanation.CopyFrom(explanation)
        return answer

    async def _explanation(
        self, decision: decision_pb2.Decision
    ) -> explanation_pb2.Explanation | None:
        """An open's explanation is kept with its decision; an install's in
        its record (while the record still holds that decision)."""
        if decision.kind in OPEN_KINDS:
            raw = await self.backend.get_open_explanation(decision.app_id, decision.decision_id)
            return explanation_pb2.Explanation.FromString(raw) if raw else None
        record = await self.backend.get_install_record(decision.app_id, decision.install_id)
        if (
            record is None
            or record.decision.decision_id != decision.decision_id
            or not record.HasField("explanation")
        ):
            return None
        return record.explanation

    async def ReadReplayFacts(
        self, request: pb.ReadReplayFactsRequest, context: object
    ) -> pb.ReadReplayFactsResponse:
        """The records at once, then every touch their explanations name, in
        reads of ``_REPLAY_IDS_PER_READ`` click ids at once."""
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        if len(request.decisions) > MAX_REPLAY_DECISIONS:
            v.add("decisions", f"at most {MAX_REPLAY_DECISIONS} at once")
        for n, d in enumerate(request.decisions):
            check.check_id(v, d.install_id, f"decisions[{n}].install_id")
        v.raise_if_any()
        app_id = request.app_id
        records = await asyncio.gather(
            *(self.backend.get_install_record(app_id, d.install_id) for d in request.decisions)
        )
        held: list[pb.InstallRecord | None] = [
            r if r is not None and r.decision.decision_id == d.decision_id else None
            for d, r in zip(request.decisions, records, strict=True)
        ]
        wanted = sorted(
            {c for r in held if r is not None for c in convert.stored_touch_ids(r.explanation)}
        )
        chunks = [
            wanted[i : i + _REPLAY_IDS_PER_READ]
            for i in range(0, len(wanted), _REPLAY_IDS_PER_READ)
        ]
        found: dict[str, touch_pb2.Touch] = {}
        for touches in await asyncio.gather(
            *(self.backend.find_touches(app_id, [], ids, 0, _FOREVER) for ids in chunks)
        ):
            found.update((t.click_id, t) for t in touches)
        answer = pb.ReadReplayFactsResponse()
        for r in held:
            item = answer.facts.add()
            if r is None:
                continue
            item.record.CopyFrom(r)
            item.touches.extend(
                found[c] for c in convert.stored_touch_ids(r.explanation) if c in found
            )
        return answer

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: object
    ) -> pb.ListDecisionsResponse:
        check.ensure(check.check_list_decisions, request)
        end = ts_to_micros(request.end_time) if request.HasField("end_time") else now_micros()
        which = DecisionFilter(
            start=ts_to_micros(request.start_time),
            end=end,
            kinds=frozenset(request.kinds),
            media_source=request.media_source,
        )
        decisions, token = await self.backend.list_decisions(
            request.app_id, which, request.page_size, request.page_token
        )
        return pb.ListDecisionsResponse(decisions=decisions, next_page_token=token)

    async def ListApps(self, request: pb.ListAppsRequest, context: object) -> pb.ListAppsResponse:
        v = Violations()
        check.check_page_size(v, request.page_size)
        if request.after_app_id:
            check.check_id(v, request.after_app_id, "after_app_id")
        v.raise_if_any()
        ids = await self.backend.list_apps(request.after_app_id, request.page_size or 100)
        return pb.ListAppsResponse(app_ids=ids)

    async def EraseDevices(
        self, request: pb.EraseDevicesRequest, context: object
    ) -> pb.EraseDevicesResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_keys(v, request.keys, "keys", MAX_ERASE_KEYS)
        check.check_ids(v, request.install_ids, "install_ids", MAX_ERASE_KEYS)
        check.check_ids(v, request.click_ids, "click_ids", MAX_ERASE_KEYS)
        if not (request.keys or request.install_ids or request.click_ids):
            v.add("keys", "name at least one key, install id or click id")
        v.raise_if_any()
        erased = await self.backend.erase_devices(
            request.app_id, request.keys, request.install_ids, request.click_ids
        )
        return erased.to_proto()

    async def ReadDeviceRecords(
        self, request: pb.ReadDeviceRecordsRequest, context: object
    ) -> pb.ReadDeviceRecordsResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_keys(v, request.keys, "keys", MAX_ERASE_KEYS)
        if not request.keys:
            v.add("keys", "name at least one key")
        v.raise_if_any()
        records = await self.backend.device_records(request.app_id, request.keys)
        return pb.ReadDeviceRecordsResponse(records=records)

    async def PutErasure(
        self, request: pb.PutErasureRequest, context: object
    ) -> pb.PutErasureResponse:
        v = Violations()
        e = request.erasure.erasure
        check.check_id(v, e.erasure_id, "erasure.erasure.erasure_id")
        if e.app_id:
            check.check_id(v, e.app_id, "erasure.erasure.app_id")
        elif not e.all_apps:
            v.add("erasure.erasure.app_id", "is required unless all_apps")
        if e.state == erasure_pb2.ERASURE_STATE_UNSPECIFIED:
            v.add("erasure.erasure.state", "is required")
        for n, device in enumerate(request.erasure.devices):
            check.check_keys(v, device.keys, f"erasure.devices[{n}].keys", check.MAX_LOOKUP)
        v.raise_if_any()
        await self.backend.put_erasure(request.erasure)
        return pb.PutErasureResponse()

    async def GetErasure(
        self, request: pb.GetErasureRequest, context: object
    ) -> pb.GetErasureResponse:
        check.ensure(check.check_id, request.erasure_id, "erasure_id")
        erasure = await self.backend.get_erasure(request.erasure_id)
        if erasure is None:
            raise NotFound(f"no erasure {request.erasure_id!r}")
        return pb.GetErasureResponse(erasure=erasure)

    async def ListPendingErasures(
        self, request: pb.ListPendingErasuresRequest, context: object
    ) -> pb.ListPendingErasuresResponse:
        check.ensure(check.check_page_size, request.page_size)
        erasures = await self.backend.pending_erasures(request.page_size or 100)
        return pb.ListPendingErasuresResponse(erasures=erasures)

    async def PutLink(self, request: pb.PutLinkRequest, context: object) -> pb.PutLinkResponse:
        v = Violations()
        check.check_id(v, request.link.code, "link.code")
        check.check_id(v, request.link.app_id, "link.app_id")
        v.raise_if_any()
        if not await self.backend.put_link(request.link, request.create):
            raise AlreadyExists(f"link {request.link.code!r} exists already")
        return pb.PutLinkResponse()

    async def GetLink(self, request: pb.GetLinkRequest, context: object) -> pb.GetLinkResponse:
        check.ensure(check.check_id, request.code, "code")
        link = await self.backend.get_link(request.code)
        if link is None:
            raise NotFound(f"no link {request.code!r}")
        return pb.GetLinkResponse(link=link)

    async def ListLinks(
        self, request: pb.ListLinksRequest, context: object
    ) -> pb.ListLinksResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_page_size(v, request.page_size)
        if request.after_code:
            check.check_id(v, request.after_code, "after_code")
        v.raise_if_any()
        links = await self.backend.list_links(
            request.app_id, request.after_code, request.page_size or 100
        )
        return pb.ListLinksResponse(links=links)
