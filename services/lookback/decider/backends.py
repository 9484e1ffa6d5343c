"""The engine's interfaces over the other services' gRPC stubs.

Conversions of the store's and the SRN adapter's own messages live here.
Calls to the store are micro-batched: the decisions in flight together
travel to the store in one call (see :class:`lookback.core.batching.Batcher`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    explanation_pb2,
    install_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core import convert
from lookback.core.batching import Batcher
from lookback.core.errors import Code, LookbackError, error_for
from lookback.core.validation import is_id
from lookback.decider.engine import ClaimsAnswer, InstallFacts
from lookback.decider.explain import REPLAYED_KINDS, ReplayFacts
from lookback.domain import matching, model

log = logging.getLogger("lookback.decider")


def claim(c: srn_pb.SrnClaim) -> model.SrnClaim:
    return model.SrnClaim(
        media_source=c.media_source,
        touch_type=convert.TOUCH_TYPE.domain(c.touch_type, model.TouchType.CLICK),
        engaged_at=convert.ts_to_micros(c.engaged_at),
        campaign=c.campaign,
        click_id=c.click_id,
    )


def lookup_click_ids(lookup: matching.Lookup) -> list[str]:
    """The lookup's click ids that can name a stored touch: an install
    referrer's may be anything, and the store refuses what is no id."""
    return [c for c in lookup.click_ids if is_id(c)]


def gather_request(
    app_id: str, install_id: str, lookup: matching.Lookup
) -> store_pb.GatherInstallFactsRequest:
    return store_pb.GatherInstallFactsRequest(
        app_id=app_id,
        install_id=install_id,
        touch_keys=lookup.touch_keys,
        click_ids=lookup_click_ids(lookup),
        engaged_after=convert.micros_to_ts(lookup.engaged_after),
        engaged_before=convert.micros_to_ts(lookup.engaged_before),
        device_keys=lookup.device_keys,
    )


def item_error(status: store_pb.ItemStatus) -> LookbackError:
    try:
        code = Code(status.code)
    except ValueError:
        code = Code.UNKNOWN
    return error_for(code, status.message)


Work = store_pb.GatherInstallFactsRequest | store_pb.CreateInstallRecordRequest
Done = InstallFacts | tuple[bool, store_pb.InstallRecord]


class StoreClient:
    """Facts, records and apps, from the touchpoint store. The gathers and
    creates of concurrent decisions travel together: one
    ``ExchangeDecisionWork`` call at a time carries every one waiting."""

    def __init__(self, stub: store_grpc.TouchpointStoreServiceStub, max_in_flight: int = 1) -> None:
        self.stub = stub
        self._work: Batcher[Work, Done] = Batcher(self._exchange, max_in_flight=max_in_flight)

    async def _exchange(self, work: list[Work]) -> list[Done | BaseException]:
        request = store_pb.ExchangeDecisionWorkRequest()
        for item in work:
            if isinstance(item, store_pb.GatherInstallFactsRequest):
                request.gathers.append(item)
            else:
                request.creates.append(item)
        answer = await self.stub.ExchangeDecisionWork(request)
        gathers, creates = iter(answer.gathers), iter(answer.creates)
        out: list[Done | BaseException] = []
        for item in work:
            if isinstance(item, store_pb.GatherInstallFactsRequest):
                g = next(gathers)
                out.append(
                    item_error(g.status)
                    if g.status.code
                    else InstallFacts(
                        g.facts.existing if g.facts.HasField("existing") else None,
                        g.facts.touches,
                        g.facts.prior,
                    )
                )
            else:
                c = next(creates)
                out.append(
                    item_error(c.status)
                    if c.status.code
                    else (c.response.created, c.response.record)
                )
        return out

    def batching(self) -> str:
        """How many items the batched calls carried."""
        return f"{self._work.items} gathers and creates in {self._work.batches} calls"

    async def gather_install(
        self, app_id: str, install_id: str, lookup: matching.Lookup
    ) -> InstallFacts:
        facts = await self._work.submit(gather_request(app_id, install_id, lookup))
        assert isinstance(facts, InstallFacts)
        return facts

    async def find_touches(self, app_id: str, lookup: matching.Lookup) -> Sequence[touch_pb2.Touch]:
        found = await self.stub.FindTouches(
            store_pb.FindTouchesRequest(
                app_id=app_id,
                match_keys=lookup.touch_keys,
                click_ids=lookup_click_ids(lookup),
                engaged_after=convert.micros_to_ts(lookup.engaged_after),
                engaged_before=convert.micros_to_ts(lookup.engaged_before),
            )
        )
        return found.touches

    async def install_record(self, app_id: str, install_id: str) -> store_pb.InstallRecord:
        r = await self.stub.GetInstallRecord(
            store_pb.GetInstallRecordRequest(app_id=app_id, install_id=install_id)
        )
        return r.record

    async def create_install(
        self, record: store_pb.InstallRecord, postbacks: Sequence[postback_pb2.PostbackJob] = ()
    ) -> tuple[bool, store_pb.InstallRecord]:
        created = await self._work.submit(
            store_pb.CreateInstallRecordRequest(record=record, postbacks=postbacks)
        )
        assert isinstance(created, tuple)
        return created

    async def record_open(
        self,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
        explanation: explanation_pb2.Explanation | None = None,
    ) -> None:
        await self.stub.RecordOpenDecision(
            store_pb.RecordOpenDecisionRequest(
                open=open_, decision=decision, postbacks=postbacks, explanation=explanation
            )
        )

    async def put_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        r = await self.stub.PutEvent(
            store_pb.PutEventRequest(event=event, attribution=attribution, postbacks=postbacks)
        )
        return r.created, r.attribution

    # --- history (explanations and simulations) ------------------------------

    async def explained_decision(
        self, app_id: str, decision_id: str
    ) -> tuple[decision_pb2.Decision, explanation_pb2.Explanation | None]:
        r = await self.stub.GetDecision(
            store_pb.GetDecisionRequest(
                app_id=app_id, decision_id=decision_id, include_explanation=True
            )
        )
        return r.decision, r.explanation if r.HasField("explanation") else None

    async def list_installs(
        self, app_id: str, start: int, end: int, page_size: int, page_token: str
    ) -> tuple[Sequence[decision_pb2.Decision], str]:
        r = await self.stub.ListDecisions(
            store_pb.ListDecisionsRequest(
                app_id=app_id,
                start_time=convert.micros_to_ts(start),
                end_time=convert.micros_to_ts(end),
                kinds=REPLAYED_KINDS,
                page_size=page_size,
                page_token=page_token,
            )
        )
        return r.decisions, r.next_page_token

    async def replay_facts(
        self, app_id: str, decisions: Sequence[decision_pb2.Decision]
    ) -> Sequence[ReplayFacts]:
        r = await self.stub.ReadReplayFacts(
            store_pb.ReadReplayFactsRequest(app_id=app_id, decisions=decisions)
        )
        return [ReplayFacts(f.record if f.HasField("record") else None, f.touches) for f in r.facts]

    async def create_app(self, app: app_pb2.App) -> app_pb2.App:
        return (await self.stub.CreateApp(store_pb.CreateAppRequest(app=app))).app

    async def get_app(self, app_id: str) -> app_pb2.App:
        return (await self.stub.GetApp(store_pb.GetAppRequest(app_id=app_id))).app

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> app_pb2.App:
        r = await self.stub.ReplaceApp(
            store_pb.ReplaceAppRequest(app=app, expected_version=expected_version)
        )
        return r.app


class SrnClient:
    """SRN claims from the SRN adapter, within ``budget_ms``; a failed or late
    adapter leaves every network unanswered (the decision goes on without)."""

    def __init__(self, stub: srn_grpc.SrnAdapterServiceStub, budget_ms: int) -> None:
        self.stub = stub
        self.budget_ms = budget_ms

    async def query(self, install: install_pb2.Install, networks: Sequence[str]) -> ClaimsAnswer:
        request = srn_pb.QueryClaimsRequest(
            app_id=install.app_id,
            networks=list(networks),
            device=install.device,
            installed_at=install.installed_at,
            budget=convert.micros_to_dur(self.budget_ms * 1000),
        )
        try:
            answer = await self.stub.QueryClaims(request, timeout=self.budget_ms / 1000 + 0.05)
        except LookbackError as exc:
            log.warning("SRN adapter failed: %s", exc.code.name)
            return ClaimsAnswer(unanswered=tuple(networks))
        return ClaimsAnswer([claim(c) for c in answer.claims], tuple(answer.unanswered))


class PostbackClient:
    """Postback jobs to the dispatcher; the jobs of concurrent decisions are
    queued in one call (all or none: a failed call fails each caller)."""

    def __init__(
        self, stub: postback_grpc.PostbackDispatcherServiceStub, max_in_flight: int = 2
    ) -> None:
        self.stub = stub
        self._batches: Batcher[Sequence[postback_pb2.PostbackJob], None] = Batcher(
            self._enqueue_batch, max_batch=64, max_in_flight=max_in_flight
        )

    async def _enqueue_batch(self, groups: list[Sequence[postback_pb2.PostbackJob]]) -> list[None]:
        jobs = [job for group in groups for job in group]
        await self.stub.EnqueuePostbacks(postback_pb.EnqueuePostbacksRequest(jobs=jobs))
        return [None] * len(groups)

    async def enqueue(self, jobs: Sequence[postback_pb2.PostbackJob]) -> None:
        await self._batches.submit(jobs)
