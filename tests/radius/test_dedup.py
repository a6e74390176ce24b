"""RFC 5080 duplicate cache: absorb in flight, replay after, purge on a new authenticator."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bridge.radius.dedup import DuplicateCache, Verdict

KEY = ("192.0.2.1", 40000, 7)
A = b"a" * 16
B = b"b" * 16


def test_new_then_in_flight_then_replay() -> None:
    cache = DuplicateCache(window=10)
    assert cache.check(KEY, A, 0).verdict is Verdict.NEW
    assert cache.check(KEY, A, 1).verdict is Verdict.IN_FLIGHT
    cache.complete(KEY, A, b"reply", 2)
    seen = cache.check(KEY, A, 3)
    assert seen.verdict is Verdict.REPLAY and seen.reply == b"reply"


def test_reply_expires_after_window() -> None:
    cache = DuplicateCache(window=5)
    cache.check(KEY, A, 0)
    cache.complete(KEY, A, b"reply", 1)
    assert cache.check(KEY, A, 5.9).verdict is Verdict.REPLAY
    assert cache.check(KEY, A, 6.1).verdict is Verdict.NEW


def test_new_authenticator_purges_and_late_reply_is_not_cached() -> None:
    cache = DuplicateCache()
    cache.check(KEY, A, 0)
    assert cache.check(KEY, B, 1).verdict is Verdict.NEW
    cache.complete(KEY, A, b"old", 2)  # the first request's reply arrives late
    assert cache.check(KEY, B, 3).verdict is Verdict.IN_FLIGHT
    cache.complete(KEY, B, b"new", 4)
    assert cache.check(KEY, B, 5).reply == b"new"


def test_forget_lets_retransmission_be_tried_again() -> None:
    cache = DuplicateCache()
    cache.check(KEY, A, 0)
    cache.forget(KEY, A)
    assert cache.check(KEY, A, 1).verdict is Verdict.NEW


def test_keys_differ_by_port_and_identifier() -> None:
    """(The same authenticator from another port is the same request: see
    test_the_same_request_from_another_port_is_a_retransmission.)"""
    cache = DuplicateCache()
    assert cache.check(("192.0.2.1", 1, 1), A, 0).verdict is Verdict.NEW
    assert cache.check(("192.0.2.1", 2, 1), B, 0).verdict is Verdict.NEW
    assert cache.check(("192.0.2.1", 1, 2), A, 0).verdict is Verdict.NEW


def test_the_same_request_from_another_port_is_a_retransmission() -> None:
    """A UDP balancer (nginx) forwards each copy from a new port: same address, Identifier and
    Request Authenticator are the same request, absorbed in flight and replayed after."""
    cache = DuplicateCache(window=10)
    assert cache.check(("192.0.2.1", 1, 7), A, 0).verdict is Verdict.NEW
    assert cache.check(("192.0.2.1", 2, 7), A, 1).verdict is Verdict.IN_FLIGHT
    cache.complete(("192.0.2.1", 1, 7), A, b"reply", 2)
    seen = cache.check(("192.0.2.1", 3, 7), A, 3)
    assert seen.verdict is Verdict.REPLAY and seen.reply == b"reply"
    # another authenticator, another address or another Identifier: a different request
    assert cache.check(("192.0.2.1", 4, 7), B, 4).verdict is Verdict.NEW
    assert cache.check(("192.0.2.2", 5, 7), A, 4).verdict is Verdict.NEW
    assert cache.check(("192.0.2.1", 6, 8), A, 4).verdict is Verdict.NEW
    assert cache.check(("192.0.2.1", 7, 7), A, 13).verdict is Verdict.NEW  # the reply expired


def test_a_retransmission_on_a_port_another_request_used_is_still_a_retransmission() -> None:
    """nginx picks a free port of its own for each copy, and may pick one an earlier request
    (another NAS, same Identifier) came from. The key then holds that other request: the copy
    must still be found by (address, Identifier, Request Authenticator) and replayed, not
    decided a second time (seen as one RADIUS decision too many through nginx)."""
    cache = DuplicateCache(window=10)
    assert cache.check(("192.0.2.1", 1, 1), A, 0).verdict is Verdict.NEW  # NAS 1's request
    cache.complete(("192.0.2.1", 1, 1), A, b"reply-a", 0)
    assert cache.check(("192.0.2.1", 2, 1), B, 1).verdict is Verdict.NEW  # NAS 2's request
    assert cache.check(("192.0.2.1", 1, 1), B, 1).verdict is Verdict.IN_FLIGHT  # its copy, port 1
    cache.complete(("192.0.2.1", 2, 1), B, b"reply-b", 2)
    seen = cache.check(("192.0.2.1", 1, 1), B, 3)
    assert seen.verdict is Verdict.REPLAY and seen.reply == b"reply-b"
    seen = cache.check(("192.0.2.1", 3, 1), A, 3)  # NAS 1's copy: its entry was kept
    assert seen.verdict is Verdict.REPLAY and seen.reply == b"reply-a"


def test_forgotten_and_evicted_requests_leave_no_alias() -> None:
    cache = DuplicateCache(max_entries=4)
    cache.check(("192.0.2.1", 1, 7), A, 0)
    cache.forget(("192.0.2.1", 1, 7), A)
    assert cache.check(("192.0.2.1", 2, 7), A, 1).verdict is Verdict.NEW
    for port in range(10, 40):
        cache.check(("192.0.2.1", port, port), A, 2)
    assert len(cache) <= 4 and len(cache._by_request) <= 4


def test_lost_in_flight_entry_stops_absorbing() -> None:
    cache = DuplicateCache(in_flight_limit=30)
    cache.check(KEY, A, 0)
    assert cache.check(KEY, A, 31).verdict is Verdict.NEW


def test_size_is_bounded() -> None:
    cache = DuplicateCache(max_entries=16)
    for i in range(1000):
        cache.check(("192.0.2.1", i, 0), A, 0)
    assert len(cache) <= 16


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["check", "complete", "forget"]),
            st.integers(0, 3),  # identifier
            st.sampled_from([A, B]),
            st.floats(0, 5),  # time step
        ),
        max_size=60,
    )
)
def test_property_never_two_checks_of_one_request_in_flight(
    steps: list[tuple[str, int, bytes, float]],
) -> None:
    """A request (key + authenticator) is handed out as NEW at most once until its entry is
    forgotten, replaced or expired: that is what keeps a retransmission from a second PIN check."""
    cache = DuplicateCache(window=10, max_entries=64)
    now = 0.0
    live: dict[tuple[int, bytes], bool] = {}
    for op, ident, auth, step in steps:
        now += step
        key = ("h", 1, ident)
        if op == "check":
            seen = cache.check(key, auth, now)
            if seen.verdict is Verdict.NEW:
                for other in (A, B):
                    live.pop((ident, other), None)
                live[(ident, auth)] = True
            else:
                assert live.get((ident, auth))
        elif op == "complete":
            cache.complete(key, auth, b"r", now)
        else:
            cache.forget(key, auth)
            live.pop((ident, auth), None)
        assert len(cache) <= 64


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["check", "check", "complete", "forget"]),
            st.integers(1, 3),  # the source port (a balancer's, chosen anew for each copy)
            st.integers(0, 2),  # identifier
            st.sampled_from([A, B]),
        ),
        max_size=80,
    )
)
def test_property_a_live_request_is_never_new_from_any_port(
    steps: list[tuple[str, int, int, bytes]],
) -> None:
    """Copies arrive from any of three ports. While a request (Identifier + authenticator) still
    has its entry (not forgotten, nor replaced by another request on the key it was first seen
    on), no copy of it from any port is NEW: through a UDP balancer, each NEW is a decision."""
    cache = DuplicateCache(window=10, max_entries=64)
    live: dict[tuple[int, bytes], tuple[str, int, int]] = {}  # request -> key first seen on
    for op, port, ident, auth in steps:
        key = ("h", port, ident)
        request = (ident, auth)
        if op == "check":
            seen = cache.check(key, auth, 0.0)
            assert (seen.verdict is Verdict.NEW) == (request not in live), (request, live)
            if seen.verdict is Verdict.NEW:
                live = {r: k for r, k in live.items() if k != key}  # replaced on its key
                live[request] = key
        elif op == "complete":
            cache.complete(key, auth, b"r", 0.0)
        elif live.get(request) == key:
            cache.forget(key, auth)
            del live[request]
