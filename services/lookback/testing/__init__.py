"""Support for testing Lookback and code that uses it (like
``temporalio.testing``): shipped in the wheel, used by our tests, benchmarks
and the scenario runner.

- :mod:`lookback.testing.suite`: :class:`EphemeralSuite`, every service as a
  real server on a free loopback port inside this event loop;
- :mod:`lookback.testing.srn`: :class:`FakeSrn`, self-reporting networks;
- :mod:`lookback.testing.receiver`: :class:`PostbackSink`, a partner that
  receives postbacks (and fails on purpose when told);
- :mod:`lookback.testing.otlp`: a local OpenTelemetry collector;
- :mod:`lookback.testing.processes`: ``lookback serve``/``lookback up`` and
  other processes, health polling, free ports;
- :mod:`lookback.testing.builders`: apps, touches, installs, fresh ids;
- :mod:`lookback.testing.browser`: headless Chromium (Debian's) through Playwright;
- :mod:`lookback.testing.tls`: a throw-away CA and certificates (``openssl``).
- :mod:`lookback.testing.fuzz`: hypothesis strategies for fuzzing requests
  (protobuf from descriptors, friendly JSON, raw bytes; needs ``hypothesis``).

Nothing here is imported by the services.
"""
