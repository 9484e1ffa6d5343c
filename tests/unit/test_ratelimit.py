"""Token buckets with an injected clock (lookback.gateway.ratelimit)."""

from __future__ import annotations

import pytest

from lookback.core.errors import Code, ResourceExhausted
from lookback.gateway.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.try_take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.try_take("a") == pytest.approx(0.5)
    assert limiter.try_take("a") == pytest.approx(0.5)  # a refusal takes nothing
    clock.now += 0.25
    assert limiter.try_take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert limiter.try_take("a") == 0.0
    assert limiter.try_take("a") > 0
    clock.now += 100  # refills up to the burst, no further
    assert [limiter.try_take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert limiter.try_take("a") > 0


def test_keys_have_their_own_buckets() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.try_take("a") == 0.0
    assert limiter.try_take("a") > 0
    assert limiter.try_take("b") == 0.0
    assert limiter.try_take(("app", 1)) == 0.0


def test_take_raises_with_the_wait() -> None:
    limiter = RateLimiter(rate=0.1, burst=1, clock=Clock(), what="clicks")
    limiter.take("a")
    with pytest.raises(ResourceExhausted) as exc:
        limiter.take("a")
    assert exc.value.code == Code.RESOURCE_EXHAUSTED
    assert exc.value.retry_after == pytest.approx(10.0)
    assert "clicks" in exc.value.message


def test_zero_rate_is_off() -> None:
    limiter = RateLimiter(rate=0, burst=0, clock=Clock())
    assert not limiter.enabled
    for _ in range(1000):
        limiter.take("a")
    assert len(limiter) == 0


def test_memory_is_bounded_and_least_recent_keys_go_first() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=1, max_keys=3, clock=clock)
    for key in ("a", "b", "c"):
        limiter.take(key)
    assert limiter.try_take("a") > 0  # "a" is now the most recent
    limiter.take("d")  # pushes out "b"
    assert len(limiter) == 3
    assert limiter.try_take("b") == 0.0  # forgotten: a full bucket again
    assert limiter.try_take("a") > 0
    for i in range(10_000):
        limiter.try_take(f"k{i}")
    assert len(limiter) == 3
