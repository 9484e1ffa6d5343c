"""Stopping background tasks reliably."""

from __future__ import annotations

import asyncio


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
