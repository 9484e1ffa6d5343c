"""The decider's telemetry: decision latency, cache hit ratios, and the
decision on the span (kind, method, media source)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from lookback.api.types.v1 import decision_pb2
from lookback.core import telemetry
from lookback.core.convert import enum_short_name


class _Cache(Protocol):
    @property
    def hit_ratio(self) -> float: ...


_meter = telemetry.meter("lookback.decider")
_caches: dict[str, _Cache] = {}
_KIND = decision_pb2.DecisionKind.DESCRIPTOR
_METHOD = decision_pb2.AttributionMethod.DESCRIPTOR

decision_duration = _meter.create_histogram(
    "lookback.decider.decision.duration",
    unit="s",
    description="Time to decide, from the request arriving to the answer (by call, kind, method).",
)


def _hit_ratios(options: CallbackOptions) -> Iterable[Observation]:
    for name, cache in list(_caches.items()):
        yield Observation(cache.hit_ratio, {"cache": name})


_meter.create_observable_gauge(
    "lookback.decider.cache.hit_ratio",
    callbacks=[_hit_ratios],
    description="Hits over lookups since start, per in-process LRU cache.",
)


def watch(caches: Mapping[str, _Cache]) -> None:
    """Report these caches' hit ratios (the latest decider's, by name)."""
    _caches.update(caches)


def decided(call: str, decision: decision_pb2.Decision, seconds: float) -> None:
    """Record one decision: on the current span, and in the latency histogram
    (nothing to do while telemetry is off: no provider would take it)."""
    if not telemetry.enabled():
        return
    kind = enum_short_name(_KIND, decision.kind)
    method = enum_short_name(_METHOD, decision.method).replace("unspecified", "none")
    trace.get_current_span().set_attributes(
        {
            "lookback.app_id": decision.app_id,
            "lookback.decision.kind": kind,
            "lookback.decision.method": method,
            "lookback.decision.media_source": decision.media_source,
            "lookback.decision.counted": decision.counted,
        }
    )
    decision_duration.record(seconds, {"call": call, "kind": kind, "method": method})
