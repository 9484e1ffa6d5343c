"""Durations as written in settings and scenarios: ``30s``, ``90m``, ``24h``,
``7d``, ``3mo`` (30-day months) or ``0`` (off)."""

from __future__ import annotations

import re

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
MONTH = 30 * DAY

MAX_DURATION = 315_576_000_000 * SECOND
"""The longest duration a ``google.protobuf.Duration`` holds (10,000 years)."""

_UNITS = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY, "mo": MONTH}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mo|s|m|h|d)\s*$", re.ASCII)


def parse_duration(text: str) -> int:
    """Parse a duration into microseconds. Raises ``ValueError`` when malformed."""
    if text.strip() == "0":
        return 0
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 90m, 24h, 7d, 3mo or 0)")
    number, unit = match.groups()
    micros = float(number) * _UNITS[unit]
    if not micros <= MAX_DURATION:  # also infinity (from a very long number)
        raise ValueError(f"too long: {text[:40]!r} (at most 10000 years)")
    return round(micros)


def format_duration(micros: int) -> str:
    """The shortest exact spelling of ``micros`` (``0``, ``7d``, ``90m``, ...)."""
    if micros == 0:
        return "0"
    for unit in ("mo", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if micros % size == 0:
            return f"{micros // size}{unit}"
    return f"{micros / SECOND:g}s"
