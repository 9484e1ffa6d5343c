"""Redaction: addresses to their networks, device ids to short hashes, URLs
without their queries; the log handlers and spans apply it to everything."""

from __future__ import annotations

import io
import logging

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lookback.core import redact, telemetry

GAID = "3FA85F64-5717-4562-B3FC-2C963F66AFA6"


def test_ip_keeps_the_network_only() -> None:
    assert redact.ip("203.0.113.77") == "203.0.113.0/24"
    assert redact.ip(" 2001:db8:1234:5678::77 ") == "2001:db8:1234::/48"
    assert redact.ip("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert redact.ip("999.1.1.1") == "invalid"
    assert redact.ip("") == ""


def test_device_id_is_a_short_stable_hash_whatever_the_case() -> None:
    hashed = redact.device_id(GAID)
    assert len(hashed) == 12 and int(hashed, 16) >= 0
    assert redact.device_id(GAID.lower()) == hashed
    assert GAID.lower() not in hashed and redact.device_id("") == ""


def test_url_has_no_user_info_query_or_fragment() -> None:
    assert (
        redact.url("https://user:pw@partner.example:8443/pb/i?click=c1&gaid=x#f")
        == "https://partner.example:8443/pb/i"
    )
    assert redact.url(f"http://h/pb/{GAID}") == f"http://h/pb/{redact.device_id(GAID)}"
    assert redact.url("/v1/click?gaid=x") == "/v1/click"


@pytest.mark.parametrize(
    ("raw", "redacted"),
    [
        (
            "url='http://127.0.0.1:4444/v1/claims?network=n&gaid=abc&android_id=0123456789abcdef'",
            "url='http://127.0.0.1:4444/v1/claims'",
        ),
        ("from 203.0.113.77 via 10.1.2.3", "from 203.0.113.0/24 via 10.1.2.0/24"),
        (
            "[Connect call failed ('203.0.113.77', 9)]",
            "[Connect call failed ('203.0.113.0/24', 9)]",
        ),
        ("peer 2001:db8:1234:5678::77 port 1", "peer 2001:db8:1234::/48 port 1"),
        ("key ip:203.0.113.77", "key ip:203.0.113.0/24"),
        (f"gaid={GAID}.", f"gaid={redact.device_id(GAID)}."),
        ("'GET /v1/click?gaid=x&ip=y HTTP/1.1'", "'GET /v1/click HTTP/1.1'"),
        # Not addresses, not identifiers, or this host's own: left alone.
        ("at 12:30:45, version 1.2.3, no install 'i-1' is it? yes", None),
        ("serving on 127.0.0.1:7401 and 0.0.0.0:8080 and [::1]:9", None),
    ],
)
def test_text_redacts_urls_addresses_and_uuids_and_twice_is_once(
    raw: str, redacted: str | None
) -> None:
    once = redact.text(raw)
    assert once == (raw if redacted is None else redacted)
    assert redact.text(once) == once


def test_log_handlers_redact_messages_and_tracebacks() -> None:
    out = io.StringIO()
    logger = logging.getLogger("lookback.test.redact")
    logger.addHandler(handler := telemetry.log_handler(out))
    try:
        logger.warning("install from %s on %s", "203.0.113.77", GAID)
        try:
            raise ValueError(f"http://h/x?gaid={GAID} from 203.0.113.77")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = out.getvalue()
    assert "203.0.113.77" not in text and GAID not in text and "gaid=" not in text
    assert "install from 203.0.113.0/24 on " + redact.device_id(GAID) in text
    assert "ValueError: http://h/x from 203.0.113.0/24" in text  # the traceback, redacted


def test_spans_record_exceptions_and_errors_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # A tracer of this test's own: the process's provider is set once, by
    # whichever test comes first, and stays someone else's.
    monkeypatch.setattr(telemetry, "_tracer", provider.get_tracer("test"))
    with (
        pytest.raises(RuntimeError),
        telemetry.http_client_span("SRN x", {"lookback.srn.network": "x"}),
    ):
        raise RuntimeError(f"url='http://srn/v1/claims?gaid={GAID}' from 203.0.113.77")
    with telemetry.client_span("svc/Method") as span:
        telemetry.record_error(span, "NOT_FOUND", "no device 203.0.113.77")
    spans = exporter.get_finished_spans()
    dumped = " ".join(
        [s.to_json() for s in spans] + [str(e.attributes) for s in spans for e in s.events]
    )
    assert spans and "203.0.113.77" not in dumped and GAID not in dumped and "gaid=" not in dumped
    assert "http://srn/v1/claims" in dumped and "203.0.113.0/24" in dumped
