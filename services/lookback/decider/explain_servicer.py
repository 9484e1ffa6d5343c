"""``lookback.explain.v1.ExplainService``: requests to the explainer and back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from lookback.api.explain.v1 import explain_service_pb2 as pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as pb_grpc
from lookback.core import auth, convert
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.errors import Violations
from lookback.decider.explain import MAX_PAGE, Explainer

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["ExplainService"],
    ExplainDecision=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    Simulate=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
)
"""An app's own backend (``s2s``) explains and simulates its app; the admin every app."""


def check_explain(v: Violations, r: pb.ExplainDecisionRequest) -> None:
    check.check_id(v, r.app_id, "app_id")
    if bool(r.decision_id) == bool(r.install_id):
        v.add("decision_id", "give a decision_id or an install_id (one of them)")
    if r.decision_id:
        check.check_id(v, r.decision_id, "decision_id")
    if r.install_id:
        check.check_id(v, r.install_id, "install_id")


def check_simulate(v: Violations, r: pb.SimulateRequest, now: int) -> None:
    check.check_id(v, r.app_id, "app_id")
    if not 0 <= r.page_size <= MAX_PAGE:
        v.add("page_size", f"must be 0 to {MAX_PAGE}")
    start = convert.ts_to_micros(r.start_time)
    end = convert.ts_to_micros(r.end_time) if r.HasField("end_time") else now
    if start < 0 or end <= start:
        v.add("end_time", "must be after start_time")


@dataclass
class ExplainServicer(pb_grpc.ExplainServiceServicer):
    explainer: Explainer

    async def ExplainDecision(
        self, request: pb.ExplainDecisionRequest, context: object
    ) -> pb.ExplainDecisionResponse:
        check.ensure(check_explain, request)
        decision, explanation = await self.explainer.explain(
            request.app_id, request.decision_id, request.install_id
        )
        return pb.ExplainDecisionResponse(decision=decision, explanation=explanation)

    async def Simulate(
        self, request: pb.SimulateRequest, context: object
    ) -> AsyncIterator[pb.SimulateResponse]:
        now = now_micros()
        check.ensure(check_simulate, request, now)
        end = convert.ts_to_micros(request.end_time) if request.HasField("end_time") else now
        async for page in self.explainer.simulate(
            request.app_id,
            request.settings,
            request.update_mask,
            convert.ts_to_micros(request.start_time),
            end,
            request.page_size,
        ):
            yield page
