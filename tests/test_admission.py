"""The connection gate every TCP listener shares: caps per source and in total, the descriptor
reserve, TLS handshake slots, eviction of the oldest connection that has not proved itself, and
the rate-limited refusal log. Pure bookkeeping, so tested without sockets; the listeners' own
tests (tests/ldap/test_limits.py, tests/sip2/test_limits.py, tests/portal/test_guard.py) show
the same rules on the wire."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.admission import Gate, socket_fd
from bridge.fdbudget import FdBudget, reserve_for
from bridge.ratelog import RefusalLog


@dataclass(eq=False)
class Conn:
    source: str
    admitted: bool = False
    evicted: list[str] = field(default_factory=list)

    def evict(self, kind: str) -> None:
        self.evicted.append(kind)


class Lines:
    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append((event, fields))


def gate(
    *, total: int = 10, per_source: int = 3, handshakes: int = 2, fds: FdBudget | None = None
) -> tuple[Gate, Lines, list[float]]:
    now = [0.0]
    lines = Lines()
    refusals = RefusalLog(10.0, clock=lambda: now[0], logger=lines)
    g = Gate(
        "ldap",
        max_connections=total,
        max_per_source=per_source,
        max_handshakes=handshakes,
        fds=fds or FdBudget.unlimited(),
        refusals=refusals,
    )
    return g, lines, now


def test_per_source_cap_refuses_and_logs_once_per_interval() -> None:
    g, lines, now = gate(per_source=2)
    held = [Conn("10.0.0.1"), Conn("10.0.0.1")]
    assert all(g.admit(c) for c in held)
    assert not g.admit(Conn("10.0.0.1"))
    assert not g.admit(Conn("10.0.0.1"))
    assert g.admit(Conn("10.0.0.2"))  # another address is not affected
    assert [(e, f["reason"], f["source"]) for e, f in lines.lines] == [
        ("ldap_connection_refused", "per_source_cap", "10.0.0.1")
    ]
    now[0] = 11.0
    assert not g.admit(Conn("10.0.0.1"))
    assert lines.lines[-1][1]["suppressed"] == 1  # the one held back
    g.release(held[0])
    assert g.admit(Conn("10.0.0.1"))


def test_full_listener_evicts_the_oldest_unproven_connection() -> None:
    g, lines, _ = gate(total=3, per_source=10)
    a, b, c = Conn("10.0.0.1"), Conn("10.0.0.2"), Conn("10.0.0.3")
    for conn in (a, b, c):
        assert g.admit(conn)
    g.proven(a)  # a bound: never the one to go
    newcomer = Conn("10.0.0.4")
    assert g.admit(newcomer)
    assert b.evicted == ["connection_cap"] and not b.admitted and not a.evicted
    assert len(g) == 3 and g.per_source == {"10.0.0.1": 1, "10.0.0.3": 1, "10.0.0.4": 1}
    assert any(f["reason"] == "evicted_connection_cap" for _, f in lines.lines)


def test_full_of_proven_connections_refuses_the_newcomer() -> None:
    g, lines, _ = gate(total=2, per_source=10)
    held = [Conn("10.0.0.1"), Conn("10.0.0.2")]
    for conn in held:
        assert g.admit(conn)
        g.proven(conn)
    assert not g.admit(Conn("10.0.0.3"))
    assert lines.lines[-1][1]["reason"] == "connection_cap"
    assert not any(c.evicted for c in held)


def test_unproven_again_makes_it_the_newest_candidate() -> None:
    g, _, _ = gate(total=2, per_source=10)
    a, b = Conn("10.0.0.1"), Conn("10.0.0.2")
    g.admit(a)
    g.admit(b)
    g.proven(a)
    g.unproven_again(a)  # e.g. an HTTP keep-alive connection waiting for its next request
    g.admit(Conn("10.0.0.3"))
    assert b.evicted and not a.evicted


def test_descriptor_reserve() -> None:
    fds = FdBudget(limit=100, reserve=10, baseline=20)
    g, lines, _ = gate(total=1000, per_source=1000, fds=fds)
    conns = [Conn(f"10.0.1.{i}") for i in range(70)]
    assert all(g.admit(c, fd=20 + i) for i, c in enumerate(conns))
    for conn in conns:
        g.proven(conn)
    assert fds.connections == 70 and fds.available == 0
    late = Conn("10.0.2.1")
    assert not g.admit(late, fd=91)
    assert lines.lines[-1][1]["reason"] == "fd_reserve"
    g.release(conns[0])
    assert g.admit(Conn("10.0.2.2"), fd=20)  # one closed: room again
    # a descriptor number near the limit proves the table is full, whatever the count says
    small = FdBudget(limit=100, reserve=10)
    assert small.room(50) and not small.room(95)


def test_descriptor_reserve_evicts_unproven_first() -> None:
    fds = FdBudget(limit=100, reserve=10)
    g, _, _ = gate(total=1000, per_source=1000, fds=fds)
    idle = Conn("10.0.0.9")
    assert g.admit(idle, fd=50)
    assert g.admit(Conn("10.0.0.1"), fd=95)  # over the reserve, but the idle one makes room
    assert idle.evicted == ["fd_reserve"]


def test_handshake_slots_evict_the_oldest_pending_handshake() -> None:
    g, _, _ = gate(handshakes=2, per_source=10)
    a, b, c = Conn("10.0.0.1"), Conn("10.0.0.2"), Conn("10.0.0.3")
    for conn in (a, b, c):
        assert g.admit(conn)
    assert g.begin_handshake(a) and g.begin_handshake(b)
    g.end_handshake(a)
    assert g.begin_handshake(c)  # a finished: a free slot, nobody evicted
    assert not a.evicted and not b.evicted
    d = Conn("10.0.0.4")
    assert g.admit(d) and g.begin_handshake(d)
    assert b.evicted == ["handshake_cap"] and len(g.handshaking) == 2


def test_release_is_idempotent() -> None:
    g, _, _ = gate()
    conn = Conn("10.0.0.1")
    g.admit(conn)
    g.release(conn)
    g.release(conn)
    assert len(g) == 0 and g.per_source == {} and g.fds.connections == 0


def test_exempt_sources_skip_the_per_source_cap() -> None:
    g, _, _ = gate(per_source=1)
    g.exempt = lambda source: source == "10.9.9.9"
    assert g.admit(Conn("10.9.9.9")) and g.admit(Conn("10.9.9.9"))
    assert g.admit(Conn("10.0.0.1")) and not g.admit(Conn("10.0.0.1"))


def test_reserve_for_scales_with_the_limit() -> None:
    assert reserve_for(1024) == 64
    assert reserve_for(100) == 32
    assert reserve_for(1 << 20) == 1024


def test_socket_fd_without_a_socket() -> None:
    assert socket_fd(object()) == -1


OPS = st.lists(
    st.tuples(st.sampled_from(["admit", "prove", "release", "hs", "hs_end"]), st.integers(0, 40)),
    max_size=300,
)


@settings(max_examples=200, deadline=None)
@given(OPS, st.integers(1, 8), st.integers(1, 4), st.integers(1, 3))
def test_property_counts_stay_consistent(
    ops: list[tuple[str, int]], total: int, per_source: int, handshakes: int
) -> None:
    g, _, _ = gate(total=total, per_source=per_source, handshakes=handshakes)
    conns = [Conn(f"10.0.0.{i % 5}") for i in range(41)]
    for op, i in ops:
        conn = conns[i]
        if op == "admit" and not conn.admitted:
            g.admit(conn)
        elif op == "prove":
            g.proven(conn)
        elif op == "release":
            g.release(conn)
        elif op == "hs" and conn.admitted:
            g.begin_handshake(conn)
        elif op == "hs_end":
            g.end_handshake(conn)
        live = [c for c in conns if c.admitted]
        assert len(g) == len(live) == g.fds.connections <= total
        assert sum(g.per_source.values()) == len(live)
        assert all(0 < n <= per_source for n in g.per_source.values())
        assert set(g.unproven) <= set(live) and set(g.handshaking) <= set(live)
        assert len(g.handshaking) <= handshakes


def test_descriptor_reserve_takes_room_from_the_flooded_listener() -> None:
    fds = FdBudget(limit=100, reserve=10)
    ldap, _, _ = gate(total=1000, per_source=1000, fds=fds)
    sip2, _, _ = gate(total=1000, per_source=1000, fds=fds)
    flood = [Conn(f"10.0.3.{i}") for i in range(5)]
    for i, conn in enumerate(flood):
        assert ldap.admit(conn, fd=10 + i)
    selfcheck = Conn("10.0.0.1")
    assert sip2.admit(selfcheck, fd=95)  # SIP2 has nobody to evict: LDAP's oldest goes
    assert flood[0].evicted == ["fd_reserve"] and len(ldap) == 4 and len(sip2) == 1
