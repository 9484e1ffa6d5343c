"""Micro-batching: items submitted together travel together.

A :class:`Batcher` sends a batch as soon as it has items and a free slot
(at most ``max_in_flight`` batches on the wire at once). Items submitted
while every slot is busy wait for the next batch. So a lone caller pays no
added latency (its item leaves at once, on the next turn of the event loop),
while under load each call carries many items and the per-call cost is
shared among them ("natural" batching: no timer, no fixed batch size).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

I = TypeVar("I")  # noqa: E741
R = TypeVar("R")

Send = Callable[[list[I]], Awaitable[Sequence[R | BaseException]]]
"""Sends a batch; answers one result (or the exception for that item) per item."""


class Batcher(Generic[I, R]):
    """Groups concurrent :meth:`submit` calls into calls of ``send``."""

    def __init__(self, send: Send[I, R], max_batch: int = 256, max_in_flight: int = 2) -> None:
        self._send = send
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[I, asyncio.Future[R]]] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self.batches = 0
        """Batches sent so far."""
        self.items = 0
        """Items sent so far."""

    async def submit(self, item: I) -> R:
        """Send ``item`` in the next batch; its result once that batch answers."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            # Flush at the end of this turn of the loop, so that every item
            # submitted in the same turn goes in one batch.
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._pending and len(self._in_flight) < self.max_in_flight:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            task = asyncio.create_task(self._run(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._pending and not self._scheduled:
            self._flush()

    async def _run(self, batch: list[tuple[I, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(batch)
        try:
            results = await self._send([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # the whole batch failed: each caller gets the error
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller gave up (cancelled)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def close(self) -> None:
        """Wait for the batches on the wire; pending items fail."""
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))
        for _, future in self._pending:
            if not future.done():
                future.set_exception(RuntimeError("batcher closed"))
        self._pending.clear()
