"""The allowed range of every app setting (ATTRIBUTION_RULES.md, section 4)."""

from __future__ import annotations

from dataclasses import dataclass

from lookback.domain.durations import DAY, HOUR, MONTH, format_duration


@dataclass(frozen=True, slots=True)
class Range:
    """Inclusive bounds in microseconds; ``allow_zero`` lets 0 mean off."""

    low: int
    high: int
    allow_zero: bool = False

    def check(self, value: int) -> str:
        """``""`` when allowed, else a description of the allowed range."""
        if value == 0 and self.allow_zero:
            return ""
        if self.low <= value <= self.high:
            return ""
        span = f"{format_duration(self.low)} to {format_duration(self.high)}"
        return f"must be {'0 (off) or ' if self.allow_zero else ''}{span}"


RANGES: dict[str, Range] = {
    "click_lookback": Range(1 * DAY, 30 * DAY),
    "click_lookback_by_source": Range(1 * DAY, 30 * DAY),
    "view_lookback": Range(1, 24 * HOUR, allow_zero=True),
    "probabilistic_click_lookback": Range(1 * HOUR, 24 * HOUR),
    "probabilistic_view_lookback": Range(1, 24 * HOUR, allow_zero=True),
    "preload_lookback": Range(1, 180 * DAY),
    "reattribution_window": Range(1 * MONTH, 24 * MONTH),
    "reengagement_window": Range(1 * DAY, 90 * DAY),
    "min_ctit": Range(1, 1 * DAY, allow_zero=True),
    "max_ctit": Range(1 * HOUR, 30 * DAY, allow_zero=True),
}

TOUCH_CLICK_LOOKBACK = RANGES["click_lookback"]
"""A touch's own click lookback override must lie in the app's allowed range."""

DURATION_SETTINGS = tuple(name for name in RANGES if name != "click_lookback_by_source")
"""The app settings that are single durations."""
