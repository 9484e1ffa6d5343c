"""Token buckets, one per key (a client IP, an app key), in bounded memory.

Each bucket holds at most ``burst`` tokens and gains ``rate`` tokens a
second; a request takes one, or is refused with the seconds until one is
there. The buckets live in an LRU of ``max_keys`` entries: a key pushed
out (the least recently seen) starts again with a full bucket, so memory
stays bounded whatever the number of clients. The clock is injected, so
tests need no sleeps.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from lookback.core.errors import ResourceExhausted

DEFAULT_MAX_KEYS = 100_000


class RateLimiter:
    """Token buckets by key; ``rate <= 0`` turns the limiter off."""

    def __init__(
        self,
        rate: float,
        burst: float,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        what: str = "requests",
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_keys = max_keys
        self.clock = clock
        self.what = what
        # key -> (tokens, time of the last refill)
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def try_take(self, key: Hashable) -> float:
        """Take a token from ``key``'s bucket: 0.0 when taken, else the
        seconds until one will be there (nothing is taken then)."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - last) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def take(self, key: Hashable) -> None:
        """Take a token, or raise :class:`ResourceExhausted` with the wait."""
        wait = self.try_take(key)
        if wait > 0.0:
            raise ResourceExhausted(f"too many {self.what}; retry later", retry_after=wait)
