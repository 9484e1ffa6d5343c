"""OpenTelemetry for every service: traces, metrics and logs.

Off by default. With ``--otlp-endpoint http://collector:4317`` a service
exports traces, metrics and logs over OTLP/gRPC. Tests install in-memory
exporters with :func:`install`.

- **Traces**: every gRPC call is a server span (context taken from the
  call's metadata, W3C ``traceparent``), every call a service makes is a
  client span whose context goes out in the metadata, and the gateway's HTTP
  requests are server spans (context taken from the request headers). So one
  install is one trace: gateway -> ingestion -> decider -> store and SRN
  adapter -> postback dispatcher.
- **Metrics**: instruments are made from the global meter provider (no-ops
  until one is set); the services record what they own.
- **Logs** carry ``trace_id`` and ``span_id`` (``-`` outside a span), and are
  exported with the rest when an endpoint is set.
- **Redaction**: every log record a service's handlers write or export is
  passed through :func:`lookback.core.redact.text` (its message, traceback
  and stack), and so are span status messages and recorded exceptions: no
  raw device id, full IP address or URL query string leaves a service, even
  in an exception raised by a library (docs/security.md).

While telemetry is off, the per-call code does nothing but test a flag:
the decider is latency-critical.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from lookback.core import redact

_state = {"enabled": False}
_providers: list[Any] = []


def enabled() -> bool:
    """True once tracing is configured (OTLP or in-memory)."""
    return _state["enabled"]


_tracer = trace.get_tracer("lookback")  # a proxy: follows the provider set later


def tracer() -> trace.Tracer:
    return _tracer


def meter(name: str) -> metrics.Meter:
    """A meter from the global provider (no-op instruments until one is set)."""
    return metrics.get_meter(name)


class _TraceIds(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` to every record (``-`` outside a span)."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        else:
            record.trace_id = record.span_id = "-"
        return True


class _Redact(logging.Filter):
    """Redacts every record (see :func:`lookback.core.redact.text`): its
    message, and its traceback and stack, which are formatted here once (an
    exception's message may hold anything). The OTLP handler gets the
    redacted exception as the ``exception.*`` attributes it would have set."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep what there is
            message = str(record.msg)
        record.msg, record.args = redact.text(message), None
        if record.exc_info:
            exc_type, exc, _ = record.exc_info
            formatted = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact.text(formatted)
            if exc_type is not None:
                setattr(record, "exception.type", exc_type.__name__)
            if exc is not None:
                setattr(record, "exception.message", redact.text(str(exc)))
            setattr(record, "exception.stacktrace", record.exc_text)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact.text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact.text(record.stack_info)
        return True


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s trace=%(trace_id)s span=%(span_id)s %(message)s"


def _add_filters(handler: logging.Handler) -> None:
    for kind in (_Redact, _TraceIds):
        if not any(isinstance(f, kind) for f in handler.filters):
            handler.addFilter(kind())


def log_handler(stream: Any = None) -> logging.Handler:
    """A handler writing redacted lines with the trace and span ids (stderr by default)."""
    handler = logging.StreamHandler(stream)
    _add_filters(handler)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def configure_logging(level: str) -> None:
    """Log to stderr, redacted, with the trace and span ids on every line."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    if not any(isinstance(h, logging.StreamHandler) for h in root.handlers):
        root.addHandler(log_handler())
    for handler in root.handlers:
        _add_filters(handler)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))


def setup(service: str, endpoint: str, sample_ratio: float = 1.0) -> None:
    """Export traces, metrics and logs of ``service`` over OTLP/gRPC to
    ``endpoint``; nothing when ``endpoint`` is empty. ``sample_ratio`` of new
    traces are recorded (a caller's decision is followed)."""
    if not endpoint:
        return
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    insecure = endpoint.startswith("http://")
    resource = Resource.create(
        {"service.name": f"lookback-{service.replace('_', '-')}", "service.namespace": "lookback"}
    )
    sampler = ParentBased(TraceIdRatioBased(min(1.0, max(0.0, sample_ratio))))
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    tracer_provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure))
    )
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=insecure), export_interval_millis=10_000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(
        BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=insecure))
    )
    set_logger_provider(logger_provider)
    otlp_handler = LoggingHandler(logger_provider=logger_provider)
    _add_filters(otlp_handler)
    logging.getLogger().addHandler(otlp_handler)
    install(tracer_provider, meter_provider)
    _providers.append(logger_provider)


def install(tracer_provider: Any, meter_provider: Any | None = None) -> None:
    """Make these the process's providers and turn tracing on.

    OpenTelemetry takes global providers once per process: a second call
    only turns tracing back on (what tests that share a process need)."""
    if not _providers:
        trace.set_tracer_provider(tracer_provider)
        _providers.append(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
            _providers.append(meter_provider)
    _state["enabled"] = True


def turn_off() -> None:
    """Stop making spans (the providers stay; for tests sharing a process)."""
    _state["enabled"] = False


def shutdown() -> None:
    """Flush and stop the exporters (at the end of a service's life)."""
    for provider in reversed(_providers):
        provider.shutdown()
    _providers.clear()


# --- spans ----------------------------------------------------------------


def _rpc_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


@contextmanager
def _span(
    name: str,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    context: Context | None = None,
) -> Iterator[Span]:
    """A current span that records an exception ending it redacted (its
    message may hold anything a library put there: a URL, an address)."""
    with tracer().start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            if span.is_recording():
                message = redact.text(str(exc))
                span.record_exception(
                    exc,
                    {
                        "exception.message": message,
                        "exception.stacktrace": redact.text(traceback.format_exc()),
                    },
                )
                status = getattr(span, "status", None)
                if status is None or status.status_code is StatusCode.UNSET:
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
            raise


def server_span(method: str, metadata: Any) -> AbstractContextManager[Span]:
    """A SERVER span for a gRPC call, continuing the caller's trace."""
    carrier = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
    return _span(
        method.lstrip("/"), SpanKind.SERVER, _rpc_attributes(method), propagate.extract(carrier)
    )


def outgoing_metadata(metadata: Any) -> list[tuple[str, str]]:
    """``metadata`` plus the current trace context (W3C ``traceparent``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*(metadata or ()), *carrier.items()]


def client_span(method: str) -> Any:
    """A CLIENT span for an outgoing gRPC call (a context manager)."""
    return _span(method, SpanKind.CLIENT, _rpc_attributes(method))


def http_server_span(method: str, route: str, headers: Mapping[str, str]) -> Any:
    """A SERVER span for an HTTP request, continuing the caller's trace."""
    return _span(
        f"{method} {route}",
        SpanKind.SERVER,
        {"http.request.method": method, "http.route": route},
        propagate.extract(dict(headers)),
    )


def http_client_span(name: str, attributes: Mapping[str, Any], parent: str = "") -> Any:
    """A CLIENT span for a request to a third party (SRN query, postback),
    under the current span or, if given, the W3C ``parent`` traceparent.

    No trace context goes out to third parties: it would tell them nothing
    useful, and our trace ids are ours. Attributes must be redacted already
    (a URL through :func:`lookback.core.redact.url`)."""
    context = propagate.extract({"traceparent": parent}) if parent else None
    return _span(name, SpanKind.CLIENT, attributes, context)


def current_traceparent() -> str:
    """The current span's W3C ``traceparent`` ("" outside a span)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def record_error(span: Span | None, code: str, message: str) -> None:
    """Mark ``span`` failed with ``code`` and ``message`` (redacted)."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, f"{code}: {redact.text(message)}"))
