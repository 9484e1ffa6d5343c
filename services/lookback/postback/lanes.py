"""Partner isolation (docs/postbacks.md): each partner and destination host
is a *lane* with its own share of the dispatcher's workers, its own circuit
breaker and its own pace. Plain Python, no I/O: the dispatcher keeps a
:class:`Lane` per lane and asks :func:`share_out` how many due jobs to
claim from each lane with work.

The shares. Of ``workers`` deliveries in flight at once, a lane with work
(due jobs, or deliveries in flight) may hold:

- a *fair share*, ``workers // n`` for ``n`` lanes with work, if it is
  *fast* (its attempts are known to take less than ``slow_attempt`` on
  average); a lane that is *slow* (``slow_attempt`` or longer), or not
  measured yet (no attempt finished), gets ``workers // (n + 1)``, so
  that a lane that turns up next finds workers free at once, and a new
  partner that turns out slow never held all the workers;
- plus, if *fast* (its attempts are known to take less than
  ``slow_attempt``), idle workers nobody else claims, up to all
  ``workers`` (a fast lane gives borrowed workers back within
  ``slow_attempt``); a lane with no attempt finished yet does not borrow;
- never more than its own limit: its ``max_in_flight`` setting, its 429
  pace, and its circuit (none while open, one probe when half open).

Beyond the ``workers``, a *reserve* of ``workers // 8`` deliveries may
start for lanes that have none in flight: a partner that turns up while
the workers are all busy (say with a healthy lane's backlog that just
turned slow) starts at once, within a poll of the queue.

A lane at its share is simply not claimed from: its jobs wait in the queue,
in order, and nothing is claimed only to be given back.
"""

from __future__ import annotations

import collections
import math
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RESERVE_FRACTION = 8
"""``workers // RESERVE_FRACTION`` deliveries beyond the workers may start,
for lanes with none in flight."""
LATENCY_WEIGHT = 0.2
"""Weight of the newest attempt in a lane's moving average latency."""
DELAYS_KEPT = 1000
"""Recent delivery delays kept per lane, for its percentiles."""
PAUSE_LIMIT = 600.0
"""Longest pause a ``Retry-After`` imposes on a lane, in seconds."""


def lane_of(partner: str, url: str) -> str:
    """The lane of a job: ``<partner>@<destination host>``."""
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        host = ""
    return f"{partner}@{host}"


def split_lane(lane: str) -> tuple[str, str]:
    """(partner, host) of a lane; a lane from before lanes existed is ``("", "")``."""
    partner, _, host = lane.rpartition("@")
    return partner, host


@dataclass(frozen=True)
class LaneView:
    """What :func:`share_out` needs to know of a lane, at one moment."""

    in_flight: int = 0
    """Deliveries of the lane in flight."""
    limit: int | None = None
    """At most this many in flight (its setting, pace or circuit); 0: none
    may start; None: no limit of its own."""
    fast: bool = False
    """Its attempts are known to take less than ``slow_attempt``."""
    slow: bool = False
    """Its attempts are known to take ``slow_attempt`` or longer."""


def bounds(workers: int, lanes: int, view: LaneView) -> tuple[int, int]:
    """(fair share, ceiling) of a lane among ``lanes`` lanes with work: the
    deliveries in flight it is owed, and the most it may hold by borrowing."""
    if not view.fast:  # slow, or not measured yet
        base = ceiling = max(1, workers // (lanes + 1))
    else:
        base = max(1, workers // max(1, lanes))
        ceiling = max(1, workers)
    if view.limit is not None:
        ceiling = min(ceiling, view.limit)
    return min(base, ceiling), ceiling


def share_out(
    free: int,
    workers: int,
    due: Sequence[str],
    views: Mapping[str, LaneView],
    turn: int = 0,
    spare: int = 0,
) -> dict[str, int]:
    """How many jobs to claim from each lane in ``due`` (the lanes with due
    jobs not in flight), given ``free`` idle workers of ``workers`` and
    ``spare`` free places in the reserve.

    Dealt out one at a time, round robin from lane number ``turn`` (the
    caller turns it on each claim), first up to each lane's fair share (from
    the reserve too, for a lane with nothing in flight, once the workers are
    all dealt), then what is left of the workers up to each fast lane's
    ceiling."""
    default = LaneView()
    free, spare = max(0, free), max(0, spare)
    claimable = [lane for lane in due if views.get(lane, default).limit != 0]
    if not claimable or free + spare <= 0:
        return {}
    active = set(claimable) | {lane for lane, v in views.items() if v.in_flight > 0}
    first: dict[str, int] = {}
    extra: dict[str, int] = {}
    for lane in claimable:
        v = views.get(lane, default)
        base, ceiling = bounds(workers, len(active), v)
        first[lane] = max(0, base - v.in_flight)
        extra[lane] = max(0, ceiling - max(base, v.in_flight))
    start = turn % len(claimable)
    order = claimable[start:] + claimable[:start]
    out = dict.fromkeys(order, 0)
    idle = {lane for lane in order if views.get(lane, default).in_flight == 0}
    for allowance, reserve in ((first, spare), (extra, 0)):
        while free > 0 or reserve > 0:
            dealt = False
            for lane in order:
                if allowance[lane] <= 0:
                    continue
                if free > 0:
                    free -= 1
                elif reserve > 0 and lane in idle:
                    reserve -= 1
                else:
                    continue
                allowance[lane] -= 1
                out[lane] += 1
                dealt = True
            if not dealt:
                break
    return {lane: k for lane, k in out.items() if k}


CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class Protection:
    """The settings of the circuit breaker and of slow lanes."""

    slow_attempt: float = 1.0
    """An attempt slower than this on average makes its lane slow."""
    failures: int = 5
    """Failed attempts in a row that open a lane's circuit."""
    cooldown: float = 5.0
    """Seconds an opened circuit waits before a probe."""
    max_cooldown: float = 300.0
    """The cooldown doubles after each failed probe, up to this."""


@dataclass
class Lane:
    """A lane's state on one dispatcher (kept in memory)."""

    name: str
    protection: Protection = field(default_factory=Protection)
    cap: int = 0
    """Its ``max_in_flight`` (the newest claimed job's, else the dispatcher's); 0: none."""
    in_flight: int = 0
    failures: int = 0
    """Failed attempts in a row (timeouts, network errors, 5xx)."""
    circuit: str = CLOSED
    probe_at: float = 0.0
    """When an open circuit lets a probe through."""
    cooldown: float = 0.0
    probing: bool = False
    """A half-open circuit's probe is in flight."""
    pace: float | None = None
    """Deliveries in flight the endpoint accepts without a 429; None: not paced."""
    paused_until: float = 0.0
    """No delivery starts before this (a 429's ``Retry-After``)."""
    paced_at: float = 0.0
    """When the pace was last lowered (once per round of deliveries)."""
    latency: float | None = None
    """Moving average of an attempt's duration, seconds."""
    delays: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=DELAYS_KEPT)
    )
    """Recent delays from a job's creation to its delivery, seconds."""
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    last_error: str = ""
    queued: int = 0
    """Jobs not yet finished across the queue, as last measured."""
    last_active: float = 0.0

    def state(self, now: float) -> str:
        """``closed``, ``open`` or ``half_open`` (open, and its probe is due)."""
        if self.circuit == OPEN and now >= self.probe_at:
            return HALF_OPEN
        return self.circuit

    def limit(self, now: float) -> int | None:
        """At most this many in flight now (see :class:`LaneView`)."""
        state = self.state(now)
        if state == OPEN or now < self.paused_until:
            return 0
        if state == HALF_OPEN:
            return 0 if self.probing else self.in_flight + 1
        limits = [self.cap] if self.cap > 0 else []
        if self.pace is not None:
            limits.append(max(1, int(self.pace)))
        return min(limits) if limits else None

    def fast(self) -> bool:
        return self.latency is not None and self.latency < self.protection.slow_attempt

    def slow(self) -> bool:
        return self.latency is not None and self.latency >= self.protection.slow_attempt

    def view(self, now: float) -> LaneView:
        return LaneView(
            in_flight=self.in_flight, limit=self.limit(now), fast=self.fast(), slow=self.slow()
        )

    def started(self, now: float) -> bool:
        """A delivery of the lane starts; True if it is the half-open
        circuit's probe (to be said so when it ends)."""
        probe = self.state(now) == HALF_OPEN and not self.probing
        if probe:
            self.probing = True
        self.in_flight += 1
        self.last_active = now
        return probe

    def abandoned(self, probe: bool = False) -> None:
        """A delivery ended without a request sent (refused before sending)."""
        self.in_flight = max(0, self.in_flight - 1)
        if probe:
            self.probing = False

    def finished(
        self,
        now: float,
        duration: float,
        *,
        status: int | None,
        retry_after: float | None = None,
        in_flight_then: int = 1,
        probe: bool = False,
    ) -> None:
        """An attempt ended after ``duration`` s with ``status`` (None: no
        answer: a timeout or network error). ``in_flight_then``: the lane's
        deliveries in flight when it ended, this one included; ``probe``:
        it was the half-open circuit's probe (:meth:`started` said so)."""
        self.in_flight = max(0, self.in_flight - 1)
        self.last_active = now
        w = LATENCY_WEIGHT
        self.latency = duration if self.latency is None else (1 - w) * self.latency + w * duration
        if status == 429:
            self._paced(now, retry_after, in_flight_then)
            self._answered()
        elif status is None or status >= 500:
            self._failed(now, probe)
        else:
            self._answered()
            if self.pace is not None and 200 <= status < 300:
                self.pace += 1 / self.pace  # one more per round of deliveries
                if self.cap and self.pace >= self.cap:
                    self.pace = None

    def _answered(self) -> None:
        """The endpoint answered (anything but a 5xx): the circuit closes."""
        self.failures = 0
        self.circuit = CLOSED
        self.cooldown = 0.0
        self.probing = False

    def _failed(self, now: float, probe: bool) -> None:
        self.failures += 1
        if probe and self.circuit == OPEN:  # the probe failed: wait longer
            self.probing = False
            self._open(now, min(self.protection.max_cooldown, 2 * self.cooldown))
        elif self.circuit == OPEN:
            pass  # sent before the circuit opened: changes nothing
        elif self.failures >= self.protection.failures:
            self._open(now, self.protection.cooldown)

    def _open(self, now: float, cooldown: float) -> None:
        self.circuit = OPEN
        self.cooldown = max(cooldown, self.protection.cooldown)
        self.probe_at = now + self.cooldown

    def _paced(self, now: float, retry_after: float | None, in_flight_then: int) -> None:
        # The 429s of one round of deliveries lower the pace once.
        if self.pace is None or now - self.paced_at >= (self.latency or 0.0):
            current = self.pace if self.pace is not None else float(in_flight_then)
            self.pace = max(1.0, min(current, float(in_flight_then)) / 2)
            self.paced_at = now
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + min(retry_after, PAUSE_LIMIT))

    def delay_percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of the recent delivery delays."""
        if not self.delays:
            return None
        ordered = sorted(self.delays)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
