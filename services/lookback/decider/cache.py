"""In-process caching: a bounded LRU cache whose entries also expire by
age, and single flight (concurrent calls with one key share one run)."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class LruCache(Generic[K, V]):
    """At most ``max_size`` entries, each at most ``max_age`` seconds old."""

    def __init__(
        self, max_size: int, max_age: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_size = max_size
        self.max_age = max_age
        self.clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: K) -> V | None:
        item = self._data.get(key)
        if item is None or self.clock() - item[0] > self.max_age:
            if item is not None:
                del self._data[key]
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return item[1]

    def put(self, key: K, value: V) -> None:
        self._data[key] = (self.clock(), value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_size:
            self._data.popitem(last=False)

    def drop(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def hit_ratio(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class SingleFlight(Generic[T]):
    """Concurrent calls with the same key share one execution."""

    def __init__(self) -> None:
        self._running: dict[object, asyncio.Future[T]] = {}

    async def run(self, key: object, fn: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """Returns the result and whether this caller was the one that ran it."""
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running), False
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            result = await fn()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._running[key]
        future.set_result(result)
        return result, True
