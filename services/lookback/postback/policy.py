"""When to retry a postback, and how long to wait (no I/O here)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RESPONSE_EXCERPT = 200
"""Characters of a failed response's body kept with the job."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    """Attempts before a job goes to the dead letters."""
    max_age: float = 24 * 3600
    """Seconds after creation after which a job is not retried any more."""
    base_delay: float = 0.5
    """First backoff, doubled for each further attempt."""
    max_delay: float = 600.0
    """Largest backoff."""


@dataclass(frozen=True)
class Verdict:
    """``delivered``, ``retry`` (after ``delay`` s) or ``dead`` (with ``reason``)."""

    outcome: str
    delay: float = 0.0
    reason: str = ""


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Parse a ``Retry-After`` header: delta seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


def backoff(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter for the ``attempt``-th failure (1-based)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
    return rng.uniform(ceiling / 2, ceiling)


def judge(
    policy: RetryPolicy,
    *,
    attempt: int,
    age: float,
    status: int | None,
    error: str = "",
    retry_after: float | None = None,
    response: str = "",
    rng: random.Random,
) -> Verdict:
    """What to do after ``attempt`` (1-based) ended with ``status`` or ``error``.

    ``response`` (the start of the response body) goes into the reason, so a
    dead letter shows what the partner last answered.
    """
    if status is not None and 200 <= status < 300:
        return Verdict("delivered")
    what = f"HTTP {status}" if status is not None else (error or "network error")
    if status is not None and response:
        what += f" {response[:RESPONSE_EXCERPT]!r}"
    retryable = status is None or status >= 500 or status == 429
    if not retryable:
        return Verdict("dead", reason=f"{what}: not retryable")
    if attempt >= policy.max_attempts:
        return Verdict("dead", reason=f"{what}: gave up after {attempt} attempts")
    delay = backoff(policy, attempt, rng)
    if status == 429 and retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_delay))
    if age + delay > policy.max_age:
        return Verdict("dead", reason=f"{what}: older than {policy.max_age:.0f}s")
    return Verdict("retry", delay=delay, reason=what)
