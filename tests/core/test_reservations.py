"""Reserve before the check, settle after: the budgets hold whatever is in flight at once.

Pure unit tests of `Throttle.reserve`/`settle` with the clock passed in, and hypothesis
interleavings: for any order of reservations and settlements, the failures evaluated for one
card never exceed `card_lock_after`, the delay stage never has two checks in flight, and no
reservation is left behind.
"""

from __future__ import annotations

import math
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.throttle import (
    GuessGuard,
    MemoryBackend,
    Refusal,
    Result,
    Throttle,
    ThrottleRules,
    Ticket,
)

CARD = "21234000000001"
SRC = "192.0.2.7"
T0 = 1_000_000.0


def take(t: Throttle, barcode: str = CARD, src: str = SRC, now: float = T0) -> Ticket:
    got = t.reserve_now(barcode, src, now)
    assert isinstance(got, Ticket), got
    return got


def refusal(t: Throttle, barcode: str = CARD, src: str = SRC, now: float = T0) -> Refusal:
    got = t.reserve_now(barcode, src, now)
    assert isinstance(got, Refusal), got
    return got


def test_throttle_is_a_guess_guard() -> None:
    assert isinstance(Throttle(ThrottleRules()), GuessGuard)


async def test_async_reserve_and_settle_are_the_same_rules() -> None:
    t = Throttle(ThrottleRules(card_free_failures=1, card_lock_after=1))
    ticket = await t.reserve(CARD, SRC, T0)
    assert isinstance(ticket, Ticket)
    assert isinstance(await t.reserve(CARD, SRC, T0), Refusal)
    settled = await t.settle(ticket, Result.FAILURE, T0)
    assert settled.card_locked and t.card_locked(CARD, T0)


def test_card_budget_is_taken_by_reservations_in_flight() -> None:
    """Ten free failures, lock at ten: ten checks may run at once, the eleventh is refused
    before the first has answered, and after ten failures the right PIN is refused too."""
    t = Throttle(ThrottleRules(card_free_failures=10, card_lock_after=10))
    tickets = [take(t) for _ in range(10)]
    late = refusal(t)
    assert late.scope == "card" and not late.busy
    assert t.check(CARD, SRC, T0) is not None  # the cached fast path sees it too
    locked = [t.settle_now(ticket, Result.FAILURE, T0).card_locked for ticket in tickets]
    assert locked == [False] * 9 + [True]
    assert t.failures(CARD, T0) == 10 and t.card_locked(CARD, T0)
    assert "locked" in refusal(t).reason
    assert t.inflight == 0


def test_delay_stage_checks_one_at_a_time() -> None:
    rules = ThrottleRules(card_free_failures=3, card_delay_base=2.0, card_lock_after=6)
    t = Throttle(rules)
    first = [take(t) for _ in range(3)]  # the free failures may run together
    refusal(t)
    for ticket in first:
        t.settle_now(ticket, Result.FAILURE, T0)
    now = T0
    fourth = take(t, now=now)  # failure 4 would start the delays: alone
    assert refusal(t, now=now).reason.startswith("PIN checks for this card")
    t.settle_now(fourth, Result.FAILURE, now)
    assert refusal(t, now=now + 1.9).reason == "too many failed PINs, wait"
    now += 2.0
    fifth = take(t, now=now)
    refusal(t, now=now)
    t.settle_now(fifth, Result.RELEASE, now)  # store unavailable: not counted
    assert t.failures(CARD, now) == 4
    sixth = take(t, now=now)
    t.settle_now(sixth, Result.FAILURE, now)
    now += 4.0
    last = take(t, now=now)
    assert t.settle_now(last, Result.FAILURE, now).card_locked
    assert t.failures(CARD, now) == 6


def test_free_failures_zero_means_one_at_a_time_from_the_start() -> None:
    t = Throttle(ThrottleRules(card_free_failures=0, card_lock_after=5))
    take(t)
    refusal(t)


def test_release_counts_nothing_and_leaves_nothing() -> None:
    t = Throttle(ThrottleRules())
    ticket = take(t)
    assert len(t) == 2 and t.inflight == 1
    t.settle_now(ticket, Result.RELEASE, T0)
    assert len(t) == 0 and t.inflight == 0 and t.failures(CARD, T0) == 0
    assert not t.global_pressure(T0)


def test_success_resets_the_card_but_keeps_other_checks_counted() -> None:
    t = Throttle(ThrottleRules(card_free_failures=3, card_lock_after=4))
    t.record_failure(CARD, SRC, T0)
    ok, other = take(t), take(t)
    refusal(t)  # 1 failure + 2 in flight = the 3 free failures
    t.settle_now(ok, Result.SUCCESS, T0)
    assert t.failures(CARD, T0) == 0
    third = take(t)  # 0 failures + 1 in flight leaves room again
    t.settle_now(other, Result.FAILURE, T0)
    t.settle_now(third, Result.FAILURE, T0)
    assert t.failures(CARD, T0) == 2 and t.inflight == 0


def test_a_ticket_is_settled_once() -> None:
    t = Throttle(ThrottleRules(card_free_failures=2, card_lock_after=2))
    a = take(t)
    take(t)
    t.settle_now(a, Result.RELEASE, T0)
    t.settle_now(a, Result.RELEASE, T0)  # a second settle gives nothing more back
    assert t.inflight == 1
    take(t)  # one place was given back, once
    refusal(t)


def test_staff_clear_keeps_checks_in_flight() -> None:
    t = Throttle(ThrottleRules(card_free_failures=1, card_lock_after=3))
    t.record_failure(CARD, SRC, T0)
    ticket = take(t)
    assert t.clear(CARD)
    refusal(t)  # the check in flight still counts (one at a time past the free failure)
    t.settle_now(ticket, Result.FAILURE, T0)
    assert t.failures(CARD, T0) == 1


def test_unknown_barcodes_have_budgets_too() -> None:
    t = Throttle(ThrottleRules(card_free_failures=2, card_lock_after=2))
    for ticket in [take(t, "99999999"), take(t, "99999999")]:
        t.settle_now(ticket, Result.FAILURE, T0)
    assert t.card_locked("99999999", T0)


def test_source_budget_in_flight_is_busy_not_blocked() -> None:
    t = Throttle(ThrottleRules(source_max_failures=5, source_block_seconds=60))
    tickets = [take(t, f"2123400000000{i}") for i in range(5)]
    busy = refusal(t, "21234000000099")
    assert busy.scope == "source" and busy.busy
    assert t.check("21234000000099", "192.0.2.8", T0) is None  # another address is fine
    for ticket in tickets:
        t.settle_now(ticket, Result.FAILURE, T0)
    blocked = refusal(t, "21234000000099")
    assert blocked.scope == "source" and not blocked.busy and blocked.retry_after == 60


def test_source_successes_give_the_budget_back() -> None:
    t = Throttle(ThrottleRules(source_max_failures=3))
    for i in range(20):
        ticket = take(t, f"2123400000{i:04d}")
        t.settle_now(ticket, Result.SUCCESS, T0)
    assert t.check(CARD, SRC, T0) is None and len(t) == 0


def test_global_guard_counts_checks_in_flight() -> None:
    rules = ThrottleRules(global_max_failures=5, source_max_failures=100)
    t = Throttle(rules)
    tickets = [take(t, f"2123400000{i:04d}") for i in range(5)]
    assert t.global_pressure(T0)
    busy = refusal(t, "21234000009999")  # the spraying address has checks in flight
    assert busy.scope == "global" and busy.busy
    assert t.check("21234000009999", "192.0.2.99", T0) is None  # a quiet address gets in
    for ticket in tickets:
        t.settle_now(ticket, Result.FAILURE, T0)
    refused = refusal(t, "21234000009999")
    assert refused.scope == "global" and not refused.busy
    assert refused.retry_after == rules.global_window
    fresh = take(t, "21234000009999", "192.0.2.99")  # one check for a fresh address...
    assert refusal(t, "21234000009998", "192.0.2.99").busy  # ...at a time
    t.settle_now(fresh, Result.FAILURE, T0)
    assert not refusal(t, "21234000009998", "192.0.2.99").busy  # and now it failed
    assert t.check(CARD, SRC, T0 + rules.global_window + 1) is None  # the window drains


def test_bad_input_counts_on_the_source_only() -> None:
    rules = ThrottleRules(source_max_failures=3, global_max_failures=2)
    t = Throttle(rules)
    for _ in range(3):
        t.record_bad_input(SRC, T0)
    assert not t.global_pressure(T0)
    blocked = refusal(t)
    assert blocked.scope == "source"
    assert t.failures(CARD, T0) == 0


def test_reservations_are_not_persisted() -> None:
    saved: dict[str, object] = {}

    class Recording(MemoryBackend):
        def save(self, key: str, counter: object) -> None:
            saved[key] = counter

    t = Throttle(ThrottleRules(), Recording())
    ticket = take(t)
    assert saved == {}
    t.settle_now(ticket, Result.SUCCESS, T0)
    assert saved == {}
    ticket = take(t)
    t.settle_now(ticket, Result.FAILURE, T0)
    assert set(saved) == {"card:" + CARD, "source:" + SRC}


def test_quiet_counter_with_a_reservation_is_kept_but_starts_over() -> None:
    rules = ThrottleRules(card_free_failures=1, card_lock_after=9, card_forget_after=10)
    t = Throttle(rules)
    t.record_failure(CARD, SRC, T0)
    ticket = take(t)  # one failure, one check in flight, then a long quiet
    later = T0 + 3600
    t.sweep(later)
    assert t.inflight == 1 and t.failures(CARD, later) == 0
    t.settle_now(ticket, Result.FAILURE, later)
    assert t.failures(CARD, later) == 1


# -- interleavings ------------------------------------------------------------------------------

CARDS = [f"2123400000000{i}" for i in range(3)]
SOURCES = ["192.0.2.1", "192.0.2.2", "198.51.100.9"]

op = st.one_of(
    st.tuples(st.just("reserve"), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(
        st.just("settle"),
        st.integers(0, 10**6),
        st.sampled_from([Result.FAILURE, Result.FAILURE, Result.RELEASE]),
    ),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 7.0]), st.just(0)),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(op, max_size=200),
    free=st.integers(0, 6),
    lock=st.integers(1, 8),
    source_max=st.integers(1, 12),
)
def test_property_budgets_hold_for_any_interleaving(
    ops: list[tuple[str, object, object]], free: int, lock: int, source_max: int
) -> None:
    """A guesser without the PIN (every evaluation fails or evaluates nothing): whatever the
    order of reservations, settlements and clock steps, no card ever gets more than
    `card_lock_after` evaluations, the delay stage never has two in flight, no source gets
    more than `source_max_failures` evaluations before its block, and nothing leaks."""
    rules = ThrottleRules(
        card_free_failures=free,
        card_delay_base=1.0,
        card_delay_max=4.0,
        card_lock_after=lock,
        card_lock_seconds=0,  # locked until cleared: the budget is for good
        card_forget_after=math.inf,
        source_max_failures=source_max,
        source_window=math.inf,
        source_block_seconds=math.inf,
        global_max_failures=10**9,
    )
    t = Throttle(rules)
    now = T0
    open_tickets: list[Ticket] = []
    evaluated: defaultdict[str, int] = defaultdict(int)
    per_source: defaultdict[str, int] = defaultdict(int)
    in_flight: defaultdict[str, int] = defaultdict(int)
    for kind, a, b in ops:
        if kind == "tick":
            assert isinstance(a, float)
            now += a
        elif kind == "reserve":
            assert isinstance(a, int) and isinstance(b, int)
            got = t.reserve_now(CARDS[a], SOURCES[b], now)
            if isinstance(got, Ticket):
                open_tickets.append(got)
                in_flight[got.barcode] += 1
                delay_stage = evaluated[got.barcode] >= free
                assert not delay_stage or in_flight[got.barcode] == 1
        elif open_tickets:
            assert isinstance(a, int) and isinstance(b, Result)
            ticket = open_tickets.pop(a % len(open_tickets))
            in_flight[ticket.barcode] -= 1
            t.settle_now(ticket, b, now)
            if b is Result.FAILURE:
                evaluated[ticket.barcode] += 1
                per_source[ticket.source] += 1
        assert all(n <= lock for n in evaluated.values())
        assert all(n <= source_max for n in per_source.values())
        assert t.inflight == len(open_tickets)
    for ticket in open_tickets:
        t.settle_now(ticket, Result.RELEASE, now)
    assert t.inflight == 0


@settings(max_examples=200, deadline=None)
@given(
    order=st.permutations(list(range(40))),
    right_at=st.integers(0, 39),
)
def test_property_right_pin_in_a_burst(order: list[int], right_at: int) -> None:
    """40 requests for one card arrive together (all reserve before any settles) and
    finish in any order; the right PIN among them is only ever evaluated while the budget
    allows, and the wrong ones never exceed it."""
    rules = ThrottleRules(card_free_failures=10, card_lock_after=10, card_lock_seconds=0)
    t = Throttle(rules)
    tickets: dict[int, Ticket] = {}
    for i in range(40):
        got = t.reserve_now(CARD, SRC, T0)
        if isinstance(got, Ticket):
            tickets[i] = got
    assert len(tickets) == 10
    for i in order:
        if i in tickets:
            t.settle_now(tickets[i], Result.SUCCESS if i == right_at else Result.FAILURE, T0)
    wrong = sum(1 for i in tickets if i != right_at)
    assert wrong <= 10
    if right_at not in tickets:  # the right PIN came after the budget was taken: refused
        assert t.card_locked(CARD, T0)
        assert isinstance(t.reserve_now(CARD, SRC, T0), Refusal)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["reserve", "reserve", "settle"]),
            st.integers(0, 10**6),
            st.integers(0, 5),
        ),
        max_size=250,
    ),
    threshold=st.integers(1, 30),
)
def test_property_global_guard_holds_within_one_window(
    ops: list[tuple[str, int, int]], threshold: int
) -> None:
    """A spray (every check fails, each barcode once, card and source limits out of reach)
    from up to six addresses within one window: the failures evaluated never exceed the
    threshold plus one per distinct address (an address that never failed gets one check
    through the raised guard, then it has failed)."""
    rules = ThrottleRules(
        source_max_failures=10**9, global_max_failures=threshold, global_window=3600
    )
    t = Throttle(rules)
    sources = [f"198.51.100.{i}" for i in range(6)]
    open_tickets: list[Ticket] = []
    failures = 0
    seen: set[str] = set()
    for n, (kind, pick, src) in enumerate(ops):
        if kind == "reserve":
            got = t.reserve_now(f"2999{n:010d}", sources[src], T0)
            if isinstance(got, Ticket):
                open_tickets.append(got)
                seen.add(got.source)
        elif open_tickets:
            ticket = open_tickets.pop(pick % len(open_tickets))
            t.settle_now(ticket, Result.FAILURE, T0)
            failures += 1
        assert failures <= threshold + len(seen)
        assert failures + len(open_tickets) <= threshold + len(seen)
