"""The three guessing limits, with the clock passed in: per card, per source, global."""

from __future__ import annotations

import math

from bridge.core.throttle import Throttle, ThrottleRules

CARD = "21234000000001"
SRC = "192.0.2.7"
T0 = 1_000_000.0


def fail(throttle: Throttle, times: int, now: float, barcode: str = CARD, src: str = SRC) -> None:
    for _ in range(times):
        throttle.record_failure(barcode, src, now)


def test_free_failures_then_growing_delays_then_lock() -> None:
    rules = ThrottleRules(
        card_free_failures=3, card_delay_base=2.0, card_delay_max=16.0, card_lock_after=8
    )
    t = Throttle(rules)
    now = T0
    fail(t, 3, now)
    assert t.check(CARD, SRC, now) is None  # free failures: no delay
    delays = []
    for _ in range(4):  # failures 4..7 get growing delays
        t.record_failure(CARD, SRC, now)
        refusal = t.check(CARD, SRC, now)
        assert refusal is not None and refusal.scope == "card"
        assert refusal.retry_after is not None
        delays.append(refusal.retry_after)
        now += refusal.retry_after  # wait it out exactly
        assert t.check(CARD, SRC, now) is None
    assert delays == [2.0, 4.0, 8.0, 16.0]
    t.record_failure(CARD, SRC, now)  # failure 8: the lock
    refusal = t.check(CARD, SRC, now)
    assert refusal is not None and "locked" in refusal.reason
    assert refusal.retry_after == rules.card_lock_seconds
    assert t.card_locked(CARD, now)
    now += rules.card_lock_seconds
    assert t.check(CARD, SRC, now) is None and not t.card_locked(CARD, now)


def test_delay_is_capped() -> None:
    rules = ThrottleRules(
        card_free_failures=0, card_delay_base=1.0, card_delay_max=5.0, card_lock_after=100
    )
    t = Throttle(rules)
    fail(t, 20, T0)
    refusal = t.check(CARD, SRC, T0)
    assert refusal is not None and refusal.retry_after == 5.0


def test_lock_seconds_zero_means_until_cleared() -> None:
    rules = ThrottleRules(card_lock_after=3, card_lock_seconds=0, card_forget_after=60)
    t = Throttle(rules)
    fail(t, 3, T0)
    for later in (T0, T0 + 3600, T0 + 10 * 365 * 86400):
        refusal = t.check(CARD, SRC, later)
        assert refusal is not None and refusal.scope == "card" and refusal.retry_after is None
        assert t.card_locked(CARD, later)
    assert t.clear(CARD)
    assert t.check(CARD, SRC, T0 + 1) is None
    assert not t.clear(CARD)  # nothing left to clear


def test_forget_after_quiet_period() -> None:
    rules = ThrottleRules(card_free_failures=5, card_forget_after=600)
    t = Throttle(rules)
    fail(t, 4, T0)
    assert t.failures(CARD, T0 + 600) == 4
    assert t.failures(CARD, T0 + 601) == 0
    t.record_failure(CARD, SRC, T0 + 602)
    assert t.failures(CARD, T0 + 602) == 1  # counting starts over


def test_success_resets_card() -> None:
    t = Throttle(ThrottleRules(card_free_failures=2))
    fail(t, 3, T0)
    assert t.check(CARD, SRC, T0) is not None
    t.record_success(CARD, T0)
    assert t.failures(CARD, T0) == 0 and t.check(CARD, SRC, T0) is None


def test_per_source_block() -> None:
    rules = ThrottleRules(source_max_failures=10, source_window=300, source_block_seconds=120)
    t = Throttle(rules)
    for i in range(10):  # ten different cards, one address: no card is near its limit
        t.record_failure(f"2123400000{i:04d}", SRC, T0 + i)
    refusal = t.check("21234000009999", SRC, T0 + 10)
    assert refusal is not None and refusal.scope == "source" and refusal.retry_after == 119
    assert t.check("21234000009999", "192.0.2.8", T0 + 10) is None  # another address is fine
    assert t.check("21234000009999", SRC, T0 + 129) is None  # the block ends


def test_source_failures_spread_over_the_window_are_forgotten() -> None:
    rules = ThrottleRules(source_max_failures=3, source_window=60)
    t = Throttle(rules)
    for i in range(10):
        t.record_failure(f"2123400000{i:04d}", SRC, T0 + i * 61)
    assert t.check("x", SRC, T0 + 10 * 61) is None


def test_global_spray_guard() -> None:
    """One PIN over 400 sequential barcodes from many addresses: no card and no address
    reaches its own limit, the global rate guard does."""
    rules = ThrottleRules(global_max_failures=300, global_window=60)
    t = Throttle(rules)
    refused_at = None
    for i in range(400):
        barcode, source = f"2123400{i:07d}", f"198.51.100.{i % 250}"
        now = T0 + i * 0.01
        refusal = t.check(barcode, source, now)
        if refusal is not None:
            assert refusal.scope == "global"
            refused_at = refused_at if refused_at is not None else i
            continue
        t.record_failure(barcode, source, now)
    assert refused_at == 300
    assert all(t.failures(f"2123400{i:07d}", T0 + 5) <= 1 for i in range(400))
    assert t.global_pressure(T0 + 5)
    refusal = t.check(CARD, "198.51.100.7", T0 + 5)  # an address that sprayed
    assert refusal is not None and refusal.retry_after is not None and refusal.retry_after > 0
    assert t.check(CARD, SRC, T0 + 5) is None  # an address that never failed is not refused
    assert not t.global_pressure(T0 + 60 + 3.0)  # the window drains


def test_sweep_bounds_memory() -> None:
    rules = ThrottleRules(card_forget_after=10, source_window=10, global_max_failures=10**9)
    t = Throttle(rules)
    for i in range(3000):
        t.record_failure(f"2123400{i:07d}", SRC, T0 + i)
    # Every sweep (each 1,000 failures) drops counters quiet for longer than 10 s.
    assert len(t) < 1100
    assert t.sweep(T0 + 10_000) > 0 and len(t) == 0


def test_locked_card_is_refused_before_source_and_global() -> None:
    rules = ThrottleRules(card_lock_after=2, card_lock_seconds=math.inf)
    t = Throttle(rules)
    fail(t, 2, T0)
    refusal = t.check(CARD, SRC, T0)
    assert refusal is not None and refusal.scope == "card" and refusal.retry_after is None
