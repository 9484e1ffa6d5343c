"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lookback.core.errors import LookbackError


async def cancel_and_wait(task: asyncio.Task[object] | None, interval: float = 0.1) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling again if needed.

    One ``cancel()`` is not always enough: on Python 3.11 a cancellation that
    lands as an awaited operation completes can be swallowed (by
    ``asyncio.wait_for``, or inside a client library), and a ``while True``
    loop then carries on for ever. Cancelling again until the task is done
    ends it anyway; loops should also check a stop flag of their own.
    """
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=interval)


class Periodic:
    """A pass (``run_once``) every ``interval`` seconds in a task of its own,
    until stopped; a pass that fails is logged and the next one tried.
    Subclasses set ``interval``, ``log`` and ``name`` and define ``run_once``."""

    interval: float
    log: logging.Logger
    name: str

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def run_once(self) -> object:
        raise NotImplementedError

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.run_once()
            except LookbackError as exc:  # a backend away: next round
                self.log.info("%s: %s: %s", self.name, exc.code.name, exc.message)
            except Exception:
                self.log.exception("%s pass failed", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
