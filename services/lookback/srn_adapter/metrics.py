"""The SRN adapter's telemetry: queries by network and outcome, timeouts."""

from __future__ import annotations

from lookback.core import telemetry

meter = telemetry.meter("lookback.srn_adapter")
timeouts = meter.create_counter(
    "lookback.srn.timeouts", description="SRN queries that ran out of time, per network."
)
queries = meter.create_counter(
    "lookback.srn.queries",
    description="SRN queries by network and outcome (claimed, no_claim, timeout, error, "
    "circuit_open).",
)
