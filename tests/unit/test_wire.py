"""A status stays small however much of the request its error quotes: a
client reads at most 8 KiB of trailing metadata, and a longer status would
reach the caller as RESOURCE_EXHAUSTED instead of the error it is."""

from __future__ import annotations

from lookback.core import wire
from lookback.core.errors import FieldViolation, InvalidArgument, NotFound


def test_a_long_message_is_clipped() -> None:
    status = wire.to_status(NotFound(f"app {'x' * 50_000!r} not found"))
    assert len(status.message) <= wire.MAX_MESSAGE
    assert status.ByteSize() < 1000


def test_many_long_violations_are_clipped_and_counted() -> None:
    violations = [FieldViolation(f"settings.m[{'k' * 5000}{i}]", "é" * 5000) for i in range(1000)]
    status = wire.to_status(InvalidArgument(violations))
    assert status.ByteSize() < 4000
    error = wire.from_status(status)
    assert isinstance(error, InvalidArgument)
    assert 0 < len(error.violations) < 1000
    assert all(v.field.startswith("settings.m[kkk") for v in error.violations)
    assert all(len(v.field) <= wire.MAX_FIELD for v in error.violations)
    assert "(1000 violations, first" in error.message


def test_short_errors_are_unchanged() -> None:
    violations = [FieldViolation("install.app_id", "is required")]
    error = wire.from_status(wire.to_status(InvalidArgument(violations)))
    assert isinstance(error, InvalidArgument)
    assert error.violations == violations
    assert error.message == "invalid request: install.app_id"
