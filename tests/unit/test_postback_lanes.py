"""Partner lanes (lookback.postback.lanes): lane names, fair shares of the
dispatcher's workers, and a lane's circuit breaker, 429 pacing and latency.

Deliveries are driven as the dispatcher drives them: ``started`` when a job
is claimed (it says whether the delivery is the half-open probe),
``finished`` when its attempt ends, with ``in_flight_then`` the lane's
deliveries in flight at that moment (this one included) and ``probe`` what
``started`` said, ``abandoned`` when it ends without a request sent."""

from __future__ import annotations

import pytest

from lookback.postback.lanes import (
    Lane,
    LaneView,
    Protection,
    bounds,
    lane_of,
    share_out,
    split_lane,
)

PROTECTION = Protection(failures=3, cooldown=1.0, max_cooldown=4.0, slow_attempt=1.0)
FAST = LaneView(fast=True)
SLOW = LaneView(slow=True)
UNKNOWN = LaneView()
"""No attempt finished yet: known neither fast nor slow."""


def new_lane() -> Lane:
    return Lane("p@h.example", PROTECTION)


def attempt(
    lane: Lane,
    now: float,
    status: int | None,
    *,
    duration: float = 0.1,
    retry_after: float | None = None,
) -> float:
    """One delivery from start to end (the probe if ``started`` says so);
    returns when it ended."""
    probe = lane.started(now)
    end = now + duration
    lane.finished(
        end,
        duration,
        status=status,
        retry_after=retry_after,
        in_flight_then=lane.in_flight,
        probe=probe,
    )
    return end


def open_circuit(lane: Lane, now: float = 0.0) -> float:
    """Fail as many attempts in a row as open the circuit; returns when the
    last one ended."""
    for _ in range(PROTECTION.failures):
        now = attempt(lane, now, None)
    return now


# --- lane names ---------------------------------------------------------------


def test_lane_is_partner_at_host() -> None:
    assert lane_of("networka", "https://P.Example:8443/i?c=1") == "networka@p.example"
    assert split_lane("networka@p.example") == ("networka", "p.example")


def test_lane_of_a_url_without_host_or_unparseable_has_empty_host() -> None:
    assert lane_of("networka", "/relative/path") == "networka@"
    assert lane_of("networka", "not a url") == "networka@"
    assert lane_of("networka", "http://[::1/broken") == "networka@"
    assert split_lane("networka@") == ("networka", "")


def test_split_lane_keeps_an_at_sign_in_the_partner() -> None:
    assert split_lane(lane_of("a@b", "https://h.example/")) == ("a@b", "h.example")


def test_split_of_the_lane_from_before_lanes_is_empty() -> None:
    assert split_lane("") == ("", "")


# --- share_out ----------------------------------------------------------------


def test_bounds() -> None:
    # Fast: fair share workers // n, ceiling all the workers.
    assert bounds(32, 1, FAST) == (32, 32)
    assert bounds(32, 4, FAST) == (8, 32)
    # Not known yet: like slow, workers // (n + 1), no borrowing.
    assert bounds(32, 1, UNKNOWN) == (16, 16)
    assert bounds(32, 4, UNKNOWN) == (6, 6)
    # Slow: workers // (n + 1), no borrowing.
    assert bounds(32, 1, SLOW) == (16, 16)
    assert bounds(32, 4, SLOW) == (6, 6)
    # At least one each, however many lanes.
    assert bounds(4, 10, FAST) == (1, 4)
    assert bounds(4, 10, UNKNOWN) == (1, 1)
    assert bounds(4, 10, SLOW) == (1, 1)
    # The lane's own limit bounds both.
    assert bounds(32, 2, LaneView(fast=True, limit=20)) == (16, 20)
    assert bounds(32, 2, LaneView(fast=True, limit=3)) == (3, 3)
    assert bounds(32, 2, LaneView(slow=True, limit=3)) == (3, 3)
    assert bounds(32, 2, LaneView(limit=0)) == (0, 0)


def test_lone_fast_lane_gets_all_the_workers() -> None:
    assert share_out(32, 32, ["a"], {"a": FAST}) == {"a": 32}
    assert share_out(8, 8, ["a"], {"a": FAST}) == {"a": 8}


def test_lone_lane_not_known_fast_or_slow_gets_half_until_measured() -> None:
    # A new partner that turns out slow never held all the workers; once an
    # attempt finishes fast, the lane gets them all (above).
    assert share_out(32, 32, ["a"], {}) == {"a": 16}
    assert share_out(32, 32, ["a"], {"a": UNKNOWN}) == {"a": 16}


def test_lone_slow_lane_gets_half() -> None:
    assert share_out(32, 32, ["a"], {"a": SLOW}) == {"a": 16}


def test_lane_not_known_fast_or_slow_gets_a_slow_share_and_never_borrows() -> None:
    # Two lanes with work (b only in flight): 32 // (2 + 1), and the idle
    # rest is not borrowed.
    views = {"a": UNKNOWN, "b": LaneView(in_flight=4, fast=True)}
    assert share_out(28, 32, ["a"], views) == {"a": 10}
    # Beside a fast lane, that one borrows what is left.
    assert share_out(32, 32, ["a", "f"], {"a": UNKNOWN, "f": FAST}) == {"a": 10, "f": 22}
    views = {"a": UNKNOWN, "f": LaneView(in_flight=8, fast=True)}
    assert share_out(24, 32, ["a", "f"], views) == {"a": 10, "f": 14}


def test_four_fast_lanes_split_evenly() -> None:
    lanes = ["a", "b", "c", "d"]
    assert share_out(32, 32, lanes, dict.fromkeys(lanes, FAST)) == dict.fromkeys(lanes, 8)


def test_lanes_with_deliveries_in_flight_get_less() -> None:
    lanes = ["a", "b", "c", "d"]
    views = {
        "a": LaneView(in_flight=6, fast=True),
        "b": LaneView(in_flight=2, fast=True),
        "c": FAST,
        "d": FAST,
    }
    out = share_out(24, 32, lanes, views)
    assert out == {"a": 2, "b": 6, "c": 8, "d": 8}
    assert sum(out.values()) == 24


@pytest.mark.parametrize("free", [1, 3, 7, 10, 31, 32])
def test_total_never_exceeds_free(free: int) -> None:
    lanes = ["a", "b", "c"]
    views = {"a": FAST, "b": SLOW, "c": LaneView(fast=True, limit=3)}
    out = share_out(free, 32, lanes, views)
    assert sum(out.values()) <= free
    assert all(k > 0 for k in out.values())


def test_slow_lane_gets_workers_over_n_plus_one_and_never_borrows() -> None:
    # Two lanes: the slow one gets 32 // 3; nothing else claims the rest,
    # and it still does not borrow.
    assert share_out(32, 32, ["s"], {"s": SLOW, "x": LaneView(in_flight=1, fast=True)}) == {"s": 10}
    out = share_out(32, 32, ["s", "f"], {"s": SLOW, "f": FAST})
    assert out["s"] == 10
    # Beside a lane not known yet, neither borrows.
    assert share_out(32, 32, ["s", "u"], {"s": SLOW, "u": UNKNOWN}) == {"s": 10, "u": 10}


def test_fast_lane_borrows_only_after_every_fair_share() -> None:
    # Fair shares: slow 32 // 3 = 10, fast 32 // 2 = 16; the fast lane then
    # borrows what is left (6), within its ceiling of 32.
    assert share_out(32, 32, ["s", "f"], {"s": SLOW, "f": FAST}) == {"s": 10, "f": 22}
    # Too few free for both fair shares: dealt evenly, nothing borrowed.
    assert share_out(20, 32, ["s", "f"], {"s": SLOW, "f": FAST}) == {"s": 10, "f": 10}
    # A lane over its fair share gets nothing while another is below its own.
    views = {"f": LaneView(in_flight=20, fast=True), "g": LaneView(in_flight=0, fast=True)}
    assert share_out(12, 32, ["f", "g"], views) == {"g": 12}
    # Borrowing stops at the ceiling (all the workers), however many are free.
    assert share_out(32, 32, ["f"], {"f": LaneView(in_flight=20, fast=True)}) == {"f": 12}
    assert share_out(32, 32, ["f"], {"f": LaneView(in_flight=32, fast=True)}) == {}


def test_fast_lanes_share_the_idle_workers_round_robin() -> None:
    # Three lanes with work (c only in flight): fair share 32 // 3 = 10 each.
    views = {"a": FAST, "b": FAST, "c": LaneView(in_flight=2, fast=True)}
    assert share_out(30, 32, ["a", "b"], views) == {"a": 15, "b": 15}


def test_lanes_with_limit_zero_get_nothing_and_do_not_count() -> None:
    lanes = ["a", "b", "c"]
    shut = {"a": FAST, "b": FAST, "c": LaneView(limit=0, fast=True)}
    absent = {"a": FAST, "b": FAST}
    out = share_out(32, 32, lanes, shut)
    assert "c" not in out
    assert out == share_out(32, 32, ["a", "b"], absent) == {"a": 16, "b": 16}
    # Same for slow lanes, whose share shows n directly: 32 // 3, not 32 // 4,
    views = {"a": SLOW, "b": SLOW, "c": LaneView(limit=0, slow=True)}
    assert share_out(32, 32, lanes, views) == {"a": 10, "b": 10}
    # and for lanes not known yet (shared as slow): 32 // 3, not 32 // 4.
    assert share_out(32, 32, lanes, {"c": LaneView(limit=0)}) == {"a": 10, "b": 10}


def test_only_lanes_with_limit_zero_due_gives_nothing() -> None:
    assert share_out(32, 32, ["a"], {"a": LaneView(limit=0, fast=True)}) == {}


def test_limit_caps_a_lane() -> None:
    assert share_out(32, 32, ["a"], {"a": LaneView(limit=5, fast=True)}) == {"a": 5}
    assert share_out(32, 32, ["a"], {"a": LaneView(limit=5, in_flight=3, fast=True)}) == {"a": 2}
    assert share_out(32, 32, ["a"], {"a": LaneView(limit=5, in_flight=5, fast=True)}) == {}
    views = {"a": LaneView(limit=3), "b": FAST}
    out = share_out(32, 32, ["a", "b"], views)
    assert out["a"] == 3
    assert out["b"] == 29  # its fair share (16), then borrowed all that is left


def test_turn_rotates_who_gets_the_odd_workers() -> None:
    lanes = ["a", "b", "c"]
    views = dict.fromkeys(lanes, FAST)
    shares = [share_out(2, 32, lanes, views, turn=t) for t in range(3)]
    assert shares == [{"a": 1, "b": 1}, {"b": 1, "c": 1}, {"c": 1, "a": 1}]
    assert len({tuple(sorted(s)) for s in shares}) == 3
    totals = dict.fromkeys(lanes, 0)
    for s in shares:
        for lane, k in s.items():
            totals[lane] += k
    assert totals == {"a": 2, "b": 2, "c": 2}


def test_turn_keeps_counting_past_the_lanes() -> None:
    lanes = ["a", "b", "c"]
    views = dict.fromkeys(lanes, FAST)
    assert share_out(1, 32, lanes, views, turn=4) == share_out(1, 32, lanes, views, turn=1)
    assert share_out(1, 32, lanes, views, turn=4) == {"b": 1}


def test_lanes_in_flight_but_not_due_reduce_the_others_share() -> None:
    assert share_out(32, 32, ["a"], {"a": SLOW}) == {"a": 16}
    views = {"a": SLOW, "b": LaneView(in_flight=4, fast=True)}
    assert share_out(28, 32, ["a"], views) == {"a": 10}  # 32 // (2 + 1)
    views = {"a": FAST, "b": LaneView(in_flight=4, fast=True)}
    assert share_out(28, 32, ["a"], views) == {"a": 28}  # 16, then borrowed
    # A lane in the views with nothing in flight and not due does not count.
    assert share_out(32, 32, ["a"], {"a": SLOW, "idle": FAST}) == {"a": 16}
    assert share_out(32, 32, ["a"], {"a": UNKNOWN, "idle": FAST}) == {"a": 16}


@pytest.mark.parametrize(("free", "spare"), [(0, 0), (-3, 0), (0, -2), (-5, -2)])
def test_nothing_free_gives_nothing(free: int, spare: int) -> None:
    assert share_out(free, 32, ["a"], {"a": FAST}, spare=spare) == {}
    assert share_out(free, 32, ["a"], {"a": UNKNOWN}, spare=spare) == {}


def test_a_negative_free_counts_as_none_and_leaves_the_reserve() -> None:
    assert share_out(-3, 32, ["a"], {}, spare=3) == {"a": 3}


def test_no_due_lanes_gives_nothing() -> None:
    assert share_out(32, 32, [], {"a": LaneView(in_flight=3, fast=True)}) == {}
    assert share_out(32, 32, [], {}, spare=4) == {}


# --- the reserve (spare) ------------------------------------------------------


def test_newcomer_starts_from_the_reserve_while_the_workers_are_all_busy() -> None:
    # One lane holds all 32 workers (its backlog due too); a new lane turns up.
    views = {"busy": LaneView(in_flight=32, fast=True), "new": UNKNOWN}
    assert share_out(0, 32, ["busy", "new"], views, spare=4) == {"new": 4}
    assert share_out(0, 32, ["new", "busy"], views, spare=4, turn=1) == {"new": 4}
    assert share_out(0, 32, ["busy", "new"], views, spare=2) == {"new": 2}
    # Without a reserve, it waits.
    assert share_out(0, 32, ["busy", "new"], views) == {}
    # Whether the newcomer is fast, slow or not known yet.
    for view in (FAST, SLOW):
        assert share_out(0, 32, ["busy", "new"], {**views, "new": view}, spare=4) == {"new": 4}


def test_the_reserve_gives_a_newcomer_at_most_its_fair_share() -> None:
    # 16 lanes with 2 each in flight, and a newcomer: fair share 32 // 17 = 1.
    views = {f"l{i}": LaneView(in_flight=2, fast=True) for i in range(16)}
    views["new"] = FAST
    assert share_out(0, 32, [*views], views, spare=4) == {"new": 1}
    # Its own limit too.
    views = {"busy": LaneView(in_flight=32, fast=True), "new": LaneView(limit=3)}
    assert share_out(0, 32, ["busy", "new"], views, spare=4) == {"new": 3}
    views["new"] = LaneView(limit=0)
    assert share_out(0, 32, ["busy", "new"], views, spare=4) == {}


def test_the_reserve_is_shared_round_robin_among_newcomers() -> None:
    views = {"busy": LaneView(in_flight=32, fast=True), "x": UNKNOWN, "y": UNKNOWN}
    assert share_out(0, 32, ["busy", "x", "y"], views, spare=4) == {"x": 2, "y": 2}
    assert share_out(0, 32, ["x", "y"], views, spare=3) == {"x": 2, "y": 1}
    assert share_out(0, 32, ["x", "y"], views, spare=3, turn=1) == {"y": 2, "x": 1}


def test_lanes_with_deliveries_in_flight_never_use_the_reserve() -> None:
    # b is below its fair share (10) but has deliveries in flight: only the
    # newcomer c draws from the reserve.
    views = {
        "a": LaneView(in_flight=30, fast=True),
        "b": LaneView(in_flight=2, fast=True),
        "c": UNKNOWN,
    }
    assert share_out(0, 32, ["a", "b", "c"], views, spare=4) == {"c": 4}
    del views["c"]
    assert share_out(0, 32, ["a", "b"], views, spare=4) == {}
    assert share_out(0, 32, ["b"], {"b": LaneView(in_flight=2)}, spare=4) == {}


def test_the_reserve_is_drawn_only_once_the_free_workers_are_dealt() -> None:
    # b (in flight) and c (new), fair share 32 // 3 = 10 each; 3 free workers
    # go round robin, then c alone goes on from the reserve.
    views = {
        "a": LaneView(in_flight=29, fast=True),
        "b": LaneView(in_flight=2, fast=True),
        "c": UNKNOWN,
    }
    assert share_out(3, 32, ["b", "c"], views, spare=4) == {"b": 2, "c": 5}
    assert share_out(3, 32, ["c", "b"], views, spare=4) == {"c": 6, "b": 1}


def test_the_reserve_is_never_borrowed() -> None:
    # A fast newcomer among 4 lanes with work: fair share 8, ceiling 32, but
    # beyond its fair share it borrows only free workers, never the reserve.
    views = {
        "a": FAST,
        "b": LaneView(in_flight=8, fast=True),
        "c": LaneView(in_flight=8, fast=True),
        "d": LaneView(in_flight=8, fast=True),
    }
    assert share_out(8, 32, ["a"], views, spare=4) == {"a": 8}
    assert share_out(6, 32, ["a"], views, spare=4) == {"a": 8}  # 6 + 2 of the reserve
    assert share_out(10, 32, ["a"], views, spare=4) == {"a": 10}  # 8 + 2 borrowed
    # A lone fast lane: the reserve fills its fair share, never more.
    assert share_out(0, 32, ["a"], {"a": FAST}, spare=4) == {"a": 4}


@pytest.mark.parametrize("free", [0, 1, 3, 7, 10, 31, 32])
@pytest.mark.parametrize("spare", [0, 1, 4])
def test_total_never_exceeds_free_and_spare(free: int, spare: int) -> None:
    lanes = ["a", "b", "c", "d"]
    views = {
        "a": FAST,
        "b": SLOW,
        "c": LaneView(fast=True, limit=3),
        "d": LaneView(in_flight=2, fast=True),
    }
    out = share_out(free, 32, lanes, views, spare=spare)
    assert sum(out.values()) <= free + spare
    assert out.get("d", 0) <= free  # in flight: never from the reserve
    assert all(k > 0 for k in out.values())


# --- circuit breaker ----------------------------------------------------------


def test_failures_in_a_row_open_the_circuit() -> None:
    lane = new_lane()
    now = 0.0
    for _ in range(PROTECTION.failures - 1):
        now = attempt(lane, now, None)
        assert lane.state(now) == "closed"
    now = attempt(lane, now, 503)
    assert lane.state(now) == "open"
    assert lane.limit(now) == 0
    assert lane.probe_at == pytest.approx(now + 1.0)
    assert lane.state(lane.probe_at - 0.01) == "open"
    assert lane.limit(lane.probe_at - 0.01) == 0


def test_started_is_the_probe_only_when_half_open() -> None:
    lane = new_lane()
    assert lane.started(0.0) is False  # closed
    lane.abandoned()
    open_circuit(lane)
    assert lane.started(lane.probe_at - 0.01) is False  # open
    lane.abandoned()
    assert not lane.probing


def test_half_open_lets_exactly_one_probe_through() -> None:
    lane = new_lane()
    open_circuit(lane)
    at = lane.probe_at
    assert lane.state(at) == "half_open"
    assert lane.limit(at) == 1
    assert lane.started(at) is True
    assert lane.probing
    assert lane.limit(at) == 0
    assert lane.limit(at + 100) == 0
    # Should one start anyway, it is not a second probe.
    assert lane.started(at) is False
    assert lane.probing


def test_half_open_counts_deliveries_still_in_flight() -> None:
    lane = new_lane()
    assert lane.started(0.0) is False  # still in flight when the circuit opens
    open_circuit(lane, 0.0)
    assert lane.in_flight == 1
    assert lane.limit(lane.probe_at) == 2  # in_flight + 1: one probe
    assert lane.started(lane.probe_at) is True
    assert lane.limit(lane.probe_at) == 0


def test_probe_success_closes_the_circuit() -> None:
    lane = new_lane()
    open_circuit(lane)
    now = attempt(lane, lane.probe_at, 200)
    assert lane.state(now) == "closed"
    assert lane.failures == 0
    assert not lane.probing
    assert lane.limit(now) is None


def test_probe_failure_reopens_with_doubled_cooldown_up_to_the_max() -> None:
    lane = new_lane()
    open_circuit(lane)
    assert lane.cooldown == 1.0
    for expected in (2.0, 4.0, 4.0):
        now = attempt(lane, lane.probe_at, None)
        assert lane.state(now) == "open"
        assert not lane.probing
        assert lane.cooldown == expected
        assert lane.probe_at == pytest.approx(now + expected)
        assert lane.limit(lane.probe_at - 0.01) == 0
        assert lane.limit(lane.probe_at) == 1


def test_a_failure_sent_before_the_circuit_opened_changes_nothing() -> None:
    lane = new_lane()
    lane.started(0.0)  # still in flight when the circuit opens
    lane.started(0.0)
    now = open_circuit(lane, 0.0)
    probe_at = lane.probe_at
    # One ends while the circuit is open, before the probe is due.
    lane.finished(now + 0.5, 0.5, status=None, in_flight_then=2)
    assert lane.circuit == "open"
    assert lane.cooldown == 1.0
    assert lane.probe_at == probe_at
    assert lane.limit(probe_at) == 2  # the other one still in flight, + 1 probe


def test_a_stale_failure_while_the_probe_is_in_flight_changes_nothing() -> None:
    lane = new_lane()
    assert lane.started(0.0) is False  # sent before the circuit opens
    open_circuit(lane, 0.0)
    at = lane.probe_at
    assert lane.started(at) is True  # the probe
    assert lane.in_flight == 2
    # The delivery sent before opening times out while the probe is in flight.
    lane.finished(at + 0.5, 10.0, status=None, in_flight_then=2, probe=False)
    assert lane.in_flight == 1
    assert lane.circuit == "open"
    assert lane.cooldown == 1.0  # not doubled
    assert lane.probe_at == at
    assert lane.probing
    assert lane.state(at + 0.5) == "half_open"
    # No second probe until the probe ends, however long it takes.
    for t in (at + 0.5, at + 2.0, at + 100.0):
        assert lane.limit(t) == 0
    # The probe's success closes the circuit.
    lane.finished(at + 1.0, 1.0, status=200, in_flight_then=1, probe=True)
    assert lane.state(at + 1.0) == "closed"
    assert lane.failures == 0
    assert lane.cooldown == 0.0
    assert not lane.probing
    assert lane.in_flight == 0
    assert lane.limit(at + 1.0) is None


def test_the_probe_failing_after_a_stale_failure_doubles_the_cooldown_once() -> None:
    lane = new_lane()
    lane.started(0.0)
    open_circuit(lane, 0.0)
    at = lane.probe_at
    assert lane.started(at) is True
    lane.finished(at + 0.5, 10.0, status=None, in_flight_then=2)
    lane.finished(at + 1.0, 1.0, status=None, in_flight_then=1, probe=True)
    assert lane.circuit == "open"
    assert lane.cooldown == 2.0
    assert lane.probe_at == pytest.approx(at + 1.0 + 2.0)
    assert not lane.probing
    assert lane.limit(lane.probe_at) == 1


def test_an_abandoned_probe_lets_another_through() -> None:
    lane = new_lane()
    open_circuit(lane)
    at = lane.probe_at
    assert lane.started(at) is True
    assert lane.limit(at) == 0
    lane.abandoned(True)
    assert lane.in_flight == 0
    assert not lane.probing
    assert lane.circuit == "open"
    assert lane.cooldown == 1.0
    assert lane.limit(at) == 1
    assert lane.started(at) is True


def test_an_abandoned_delivery_that_is_not_the_probe_keeps_the_probe() -> None:
    lane = new_lane()
    lane.started(0.0)
    open_circuit(lane, 0.0)
    at = lane.probe_at
    assert lane.started(at) is True
    lane.abandoned()
    assert lane.in_flight == 1
    assert lane.probing
    assert lane.limit(at) == 0


def test_abandoned_never_goes_below_zero() -> None:
    lane = new_lane()
    lane.abandoned()
    lane.abandoned(True)
    assert lane.in_flight == 0
    assert not lane.probing
    assert lane.state(0.0) == "closed"


def test_a_4xx_is_an_answer_and_resets_the_failures() -> None:
    lane = new_lane()
    now = 0.0
    for _ in range(5):
        now = attempt(lane, now, None)
        now = attempt(lane, now, None)
        now = attempt(lane, now, 404)
        assert lane.failures == 0
        assert lane.state(now) == "closed"
    # 4xx alone never opens it.
    for _ in range(10):
        now = attempt(lane, now, 400)
    assert lane.state(now) == "closed"
    assert lane.limit(now) is None


def test_a_success_between_failures_resets_the_count() -> None:
    lane = new_lane()
    now = attempt(lane, 0.0, None)
    now = attempt(lane, now, 500)
    now = attempt(lane, now, 200)
    assert lane.failures == 0
    now = attempt(lane, now, None)
    now = attempt(lane, now, None)
    assert lane.state(now) == "closed"
    now = attempt(lane, now, None)
    assert lane.state(now) == "open"


# --- pacing -------------------------------------------------------------------


def burst(lane: Lane, now: float, n: int) -> None:
    for _ in range(n):
        lane.started(now)


def test_a_429_halves_the_deliveries_in_flight() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    assert lane.pace == 10.0
    assert lane.limit(0.5) == 10
    assert lane.state(0.5) == "closed"


def test_429s_within_one_latency_lower_the_pace_once() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    # More 429s from the same round, well within a latency (~0.5 s).
    for i in range(5):
        lane.finished(0.5 + 0.01 * i, 0.5, status=429, in_flight_then=19 - i)
    assert lane.pace == 10.0
    assert lane.limit(0.6) == 10


def test_later_429s_halve_again_down_to_one() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    now = 0.5
    paces = []
    for _ in range(5):
        now += 2.0  # well past a latency
        lane.started(now)
        lane.finished(now + 0.5, 0.5, status=429, in_flight_then=lane.in_flight)
        paces.append(lane.pace)
        # in_flight_then stays above the pace, so the pace is what halves
        assert lane.in_flight >= 10
    assert paces == [5.0, 2.5, 1.25, 1.0, 1.0]
    assert lane.limit(now + 0.5) == 1


def test_a_429_with_fewer_in_flight_than_the_pace_halves_those() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    lane.finished(5.0, 0.5, status=429, in_flight_then=4)
    assert lane.pace == 2.0


def test_successes_raise_the_pace_by_one_per_round() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    now = attempt(lane, 1.0, 200)
    assert lane.pace == pytest.approx(10.1)
    assert lane.limit(now) == 10
    for _ in range(9):
        now = attempt(lane, now, 200)
    assert lane.pace is not None
    assert 10.9 < lane.pace < 11.0
    assert lane.limit(now) == 10
    now = attempt(lane, now, 200)
    assert lane.limit(now) == 11


def test_a_non_2xx_answer_does_not_raise_the_pace() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    attempt(lane, 1.0, 404)
    attempt(lane, 2.0, 302)
    assert lane.pace == 10.0


def test_the_pace_ends_once_it_reaches_the_cap() -> None:
    lane = new_lane()
    lane.cap = 5
    burst(lane, 0.0, 4)
    lane.finished(0.5, 0.5, status=429, in_flight_then=4)
    assert lane.pace == 2.0
    now = 1.0
    while lane.pace is not None:
        now = attempt(lane, now, 200)
        assert now < 100
    assert lane.limit(now) == 5


def test_retry_after_pauses_the_lane() -> None:
    lane = new_lane()
    burst(lane, 0.0, 20)
    lane.finished(1.0, 0.5, status=429, retry_after=2.0, in_flight_then=20)
    assert lane.paused_until == 3.0
    assert lane.limit(1.0) == 0
    assert lane.limit(2.99) == 0
    assert lane.state(2.0) == "closed"
    assert lane.limit(3.0) == 10


def test_retry_after_never_shortens_a_pause() -> None:
    lane = new_lane()
    burst(lane, 0.0, 3)
    lane.finished(1.0, 0.5, status=429, retry_after=10.0, in_flight_then=3)
    lane.finished(1.1, 0.5, status=429, retry_after=1.0, in_flight_then=2)
    assert lane.paused_until == 11.0


def test_cap_bounds_the_limit() -> None:
    lane = new_lane()
    assert lane.limit(0.0) is None
    lane.cap = 5
    assert lane.limit(0.0) == 5
    burst(lane, 0.0, 20)
    lane.finished(0.5, 0.5, status=429, in_flight_then=20)
    assert lane.pace == 10.0
    assert lane.limit(0.5) == 5
    assert lane.view(0.5).limit == 5


# --- latency ------------------------------------------------------------------


def test_neither_fast_nor_slow_until_an_attempt_finished() -> None:
    lane = new_lane()
    assert not lane.fast()
    assert not lane.slow()
    lane.started(0.0)
    assert not lane.fast()
    assert not lane.slow()
    assert lane.view(0.0) == LaneView(in_flight=1, limit=None, fast=False, slow=False)
    lane.finished(0.5, 0.5, status=200)
    assert lane.fast()
    assert not lane.slow()
    assert lane.view(0.5) == LaneView(in_flight=0, limit=None, fast=True, slow=False)


def test_slow_once_an_attempt_took_slow_attempt() -> None:
    lane = new_lane()
    attempt(lane, 0.0, 200, duration=1.0)  # exactly slow_attempt
    assert lane.slow()
    assert not lane.fast()
    assert lane.view(1.0) == LaneView(in_flight=0, limit=None, fast=False, slow=True)


def test_the_moving_average_crosses_slow_attempt() -> None:
    lane = new_lane()
    attempt(lane, 0.0, 200, duration=0.5)
    assert lane.latency == 0.5
    attempt(lane, 1.0, 200, duration=2.0)
    assert lane.latency == pytest.approx(0.8)  # 0.8 * 0.5 + 0.2 * 2.0
    assert lane.fast()
    assert not lane.slow()
    attempt(lane, 4.0, 200, duration=2.0)
    assert lane.latency == pytest.approx(1.04)
    assert not lane.fast()
    assert lane.slow()
    for i in range(20):
        attempt(lane, 10.0 + i, 200, duration=0.1)
    assert lane.fast()
    assert not lane.slow()


def test_failed_attempts_count_toward_latency() -> None:
    lane = new_lane()
    attempt(lane, 0.0, None, duration=5.0)  # a timeout
    assert not lane.fast()
    assert lane.slow()


# --- delay percentiles --------------------------------------------------------


def test_delay_percentile_of_nothing_is_none() -> None:
    assert new_lane().delay_percentile(0.5) is None


def test_delay_percentiles() -> None:
    lane = new_lane()
    lane.delays.extend(float(x) for x in reversed(range(1, 101)))
    assert lane.delay_percentile(0.5) == 50.0
    assert lane.delay_percentile(0.99) == 99.0
    assert lane.delay_percentile(0.0) == 1.0
    assert lane.delay_percentile(1.0) == 100.0


def test_delay_percentile_of_one_delay() -> None:
    lane = new_lane()
    lane.delays.append(3.0)
    assert lane.delay_percentile(0.5) == 3.0
    assert lane.delay_percentile(0.99) == 3.0
