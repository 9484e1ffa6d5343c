"""The one wall clock of the suite, in microseconds since the epoch (UTC).

Every service and backend reads the time through :func:`now_micros`, and
takes a ``clock`` callable where tests need to move time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]
"""A source of the current time in microseconds."""


def now_micros() -> int:
    """The current wall-clock time in microseconds."""
    return time.time_ns() // 1000
