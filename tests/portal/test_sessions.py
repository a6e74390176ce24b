"""Server-side sessions and CSRF tokens (the clock is moved by hand)."""

from __future__ import annotations

from bridge.portal.sessions import SessionStore, new_id, plausible_id
from tests.portal.support import Clock


def store(clock: Clock, **kw: int) -> SessionStore:
    return SessionStore(clock, idle_seconds=60, max_seconds=600, **kw)


def test_idle_and_absolute_timeouts() -> None:
    clock = Clock()
    sessions = store(clock)
    sid = sessions.create("A")
    for _ in range(10):
        clock.now += 59
        assert sessions.get(sid) is not None
    clock.now += 59  # active all along, but past the absolute limit
    assert sessions.get(sid) is None
    idle = sessions.create("A")
    clock.now += 61
    assert sessions.get(idle) is None


def test_end_patron_ends_only_that_patron() -> None:
    sessions = store(Clock())
    a1, a2, b = sessions.create("A"), sessions.create("A"), sessions.create("B")
    sessions.end_patron("A")
    assert sessions.get(a1) is None and sessions.get(a2) is None
    assert sessions.get(b) is not None


def test_capacity_drops_the_least_recently_used() -> None:
    sessions = store(Clock(), max_sessions=2)
    first, second = sessions.create("A"), sessions.create("B")
    sessions.get(first)
    sessions.create("C")
    assert sessions.get(second) is None and sessions.get(first) is not None


def test_csrf_is_bound_to_the_cookie() -> None:
    sessions = store(Clock())
    one, two = new_id(), new_id()
    assert sessions.csrf_ok(one, sessions.csrf_token(one))
    assert not sessions.csrf_ok(two, sessions.csrf_token(one))
    assert not sessions.csrf_ok(one, None) and not sessions.csrf_ok(None, "x")
    other = store(Clock())  # another process: another key
    assert not other.csrf_ok(one, sessions.csrf_token(one))


def test_plausible_ids() -> None:
    assert plausible_id(new_id())
    for bad in (None, "", "short", "x" * 65, "a b" * 10, "é" * 30):
        assert not plausible_id(bad)
