"""Micro-batching: a lone item leaves at once; items that arrive together,
or while every slot is busy, travel together; failures reach the right callers."""

from __future__ import annotations

import asyncio

import pytest

from lookback.core.batching import Batcher


class Recorder:
    """A ``send`` that records each batch and answers when released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def send(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        await self.release.wait()
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]


async def test_a_lone_item_is_sent_alone_at_once() -> None:
    r = Recorder()
    b: Batcher[int, int] = Batcher(r.send)
    assert await b.submit(2) == 20
    assert r.batches == [[2]]


async def test_items_submitted_together_go_in_one_batch() -> None:
    r = Recorder()
    b: Batcher[int, int] = Batcher(r.send)
    assert await asyncio.gather(*(b.submit(i) for i in (0, 2, 4, 6))) == [0, 20, 40, 60]
    assert r.batches == [[0, 2, 4, 6]]


async def test_items_wait_for_a_free_slot_and_then_go_together() -> None:
    r = Recorder()
    r.release.clear()
    b: Batcher[int, int] = Batcher(r.send, max_in_flight=1)
    first = asyncio.ensure_future(b.submit(0))
    await asyncio.sleep(0)  # let the first batch leave
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(b.submit(i)) for i in (2, 4, 6)]
    await asyncio.sleep(0)
    assert r.batches == [[0]]  # the slot is busy: the others wait
    r.release.set()
    assert await asyncio.gather(first, *later) == [0, 20, 40, 60]
    assert r.batches == [[0], [2, 4, 6]]
    assert (b.batches, b.items) == (2, 4)


async def test_a_batch_is_capped() -> None:
    r = Recorder()
    b: Batcher[int, int] = Batcher(r.send, max_batch=2, max_in_flight=4)
    await asyncio.gather(*(b.submit(i) for i in (0, 2, 4, 6, 8)))
    assert sorted(map(len, r.batches)) == [1, 2, 2]


async def test_an_item_error_fails_that_item_only() -> None:
    r = Recorder()
    b: Batcher[int, int] = Batcher(r.send)
    results = await asyncio.gather(b.submit(2), b.submit(3), return_exceptions=True)
    assert results[0] == 20
    assert isinstance(results[1], ValueError) and str(results[1]) == "odd 3"


async def test_a_failed_batch_fails_each_caller() -> None:
    async def down(items: list[int]) -> list[int | BaseException]:
        raise ConnectionError("store down")

    b: Batcher[int, int] = Batcher(down)
    results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    assert all(isinstance(e, ConnectionError) for e in results)
    with pytest.raises(ConnectionError):  # and the next call is tried again
        await b.submit(3)


async def test_a_caller_that_gives_up_does_not_break_the_batch() -> None:
    r = Recorder()
    r.release.clear()
    b: Batcher[int, int] = Batcher(r.send)
    impatient = asyncio.ensure_future(b.submit(2))
    patient = asyncio.ensure_future(b.submit(4))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    impatient.cancel()
    r.release.set()
    assert await patient == 40
    assert impatient.cancelled()
