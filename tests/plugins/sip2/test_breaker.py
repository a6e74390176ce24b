"""The circuit breaker, pure: time is a number the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.sip2.breaker import Breaker, State


def state(b: Breaker) -> State:
    """Read the state through a call, so mypy does not narrow it across steps."""
    return b.state


def test_opens_after_consecutive_failures_and_probes_after_the_pause() -> None:
    b = Breaker(failures=3, reset=2.0, reset_max=8.0, probe_timeout=5.0)
    for t in (0.0, 0.1):
        assert b.allow(t)
        b.failure(t)
    assert state(b) is State.CLOSED
    b.failure(0.2)
    assert state(b) is State.OPEN
    assert not b.allow(1.0)
    assert b.retry_after(1.0) == pytest.approx(1.2)
    assert b.allow(2.2)  # the probe
    assert state(b) is State.HALF_OPEN
    assert not b.allow(2.3)  # one probe at a time
    b.success(2.4)
    assert state(b) is State.CLOSED and b.allow(2.5)


def test_failed_probes_double_the_pause_up_to_the_cap() -> None:
    b = Breaker(failures=1, reset=1.0, reset_max=4.0, probe_timeout=100.0)
    b.failure(0.0)
    now, pauses = 0.0, []
    for _ in range(5):
        start = now
        while not b.allow(now):
            now += 0.25
        pauses.append(now - start)
        b.failure(now)
    assert pauses == [1.0, 2.0, 4.0, 4.0, 4.0]
    b.success(now)
    b.failure(now)
    assert not b.allow(now + 0.5) and b.allow(now + 1.0)  # success reset the pause


def test_a_success_clears_the_failure_count() -> None:
    b = Breaker(failures=2, reset=1.0)
    b.failure(0)
    b.success(0)
    b.failure(0)
    assert state(b) is State.CLOSED


def test_a_lost_probe_is_given_up_on() -> None:
    b = Breaker(failures=1, reset=1.0, probe_timeout=3.0)
    b.failure(0)
    assert b.allow(1.0)
    assert not b.allow(3.9)
    assert b.allow(4.0)  # the first probe never reported


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Breaker(failures=0)
    with pytest.raises(ValueError):
        Breaker(reset=2.0, reset_max=1.0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["allow", "ok", "fail"]), st.floats(0, 5)),
        max_size=60,
    )
)
def test_never_allows_while_open_before_the_pause(steps: list[tuple[str, float]]) -> None:
    b = Breaker(failures=2, reset=1.0, reset_max=8.0, probe_timeout=2.0)
    now = 0.0
    for action, dt in steps:
        now += dt
        if action == "ok":
            b.success(now)
        elif action == "fail":
            b.failure(now)
        else:
            was_open_until = b.retry_after(now)
            allowed = b.allow(now)
            if was_open_until > 0:
                assert not allowed
            if state(b) is State.CLOSED:
                assert allowed
        assert 0 <= b.retry_after(now) <= 8.0
