"""A local OpenTelemetry collector (OTLP/gRPC) that keeps what it is sent,
for tests, and a process of its own for benchmarks:

    python -m lookback.testing.otlp     # prints "listening on 127.0.0.1:PORT"
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as logs_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as metrics_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as trace_grpc


class Collector:
    """Receives traces, metrics and logs; ``keep=False`` only counts spans."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[Any] = []
        self.metrics: list[Any] = []
        self.logs: list[Any] = []
        self.span_count = 0
        self.server: grpc.aio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        collector = self

        class Traces(trace_grpc.TraceServiceServicer):  # type: ignore[misc]
            async def Export(self, request: Any, context: Any) -> Any:
                collector.span_count += sum(
                    len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans
                )
                if collector.keep:
                    collector.spans.extend(request.resource_spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_grpc.MetricsServiceServicer):  # type: ignore[misc]
            async def Export(self, request: Any, context: Any) -> Any:
                if collector.keep:
                    collector.metrics.extend(request.resource_metrics)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_grpc.LogsServiceServicer):  # type: ignore[misc]
            async def Export(self, request: Any, context: Any) -> Any:
                if collector.keep:
                    collector.logs.extend(request.resource_logs)
                return logs_service_pb2.ExportLogsServiceResponse()

        self.server = grpc.aio.server()
        trace_grpc.add_TraceServiceServicer_to_server(Traces(), self.server)  # type: ignore[no-untyped-call]
        metrics_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)  # type: ignore[no-untyped-call]
        logs_grpc.add_LogsServiceServicer_to_server(Logs(), self.server)  # type: ignore[no-untyped-call]
        bound = self.server.add_insecure_port(f"{host}:{port}")
        await self.server.start()
        return f"{host}:{bound}"

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


async def _main() -> None:
    collector = Collector(keep=False)
    address = await collector.start()
    print(f"listening on {address}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        print(f"received {collector.span_count} spans", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(_main())
