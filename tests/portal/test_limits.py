"""The forgot-PIN request limiter."""

from __future__ import annotations

from bridge.portal.limits import WindowLimiter


def test_window() -> None:
    limiter = WindowLimiter(limit=2, window=60)
    assert limiter.allow("a", 0) and limiter.allow("a", 1)
    assert not limiter.allow("a", 2)
    assert limiter.allow("b", 2)
    assert limiter.allow("a", 60.5)  # the first hit left the window


def test_memory_stays_bounded() -> None:
    limiter = WindowLimiter(limit=1, window=10, max_keys=100)
    for i in range(1000):
        limiter.allow(str(i), float(i))
    assert len(limiter) <= 100


def test_full_does_not_count() -> None:
    limiter = WindowLimiter(limit=1, window=10)
    assert not limiter.full("a", 0)
    assert not limiter.full("a", 0)
    limiter.allow("a", 0)
    assert limiter.full("a", 5) and not limiter.full("a", 10)
