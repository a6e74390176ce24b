"""Which TCP connections a listener takes: caps per source address and in total, the descriptor
reserve, and TLS handshakes in progress.

One `Gate` per listener (SIP2, LDAP with LDAPS, the PIN pages). A connection is admitted when it
is accepted, before any byte is read, and released when it ends. When the listener is full (its
`max_connections`, or the process's descriptor reserve) the gate does not simply refuse the
newcomer: it closes the oldest connection that has not yet proved itself (a SIP2 connection
before its login, an LDAP connection before its first bind, a page request whose header is not
complete), because that is where a flood of slow or idle connections sits, while a real client
proves itself within milliseconds of connecting and is then never chosen. Only when every
connection has proved itself is the newcomer refused. When descriptors run short, the victim
is taken from whichever listener holds the most unproven connections, so a flood on one listener
cannot lock the others out. The per-source cap is a plain refusal:
one address cannot crowd out the others (vendors behind one NAT address, such as EZproxy, need
a generous value). TLS handshakes in progress have their own cap, with the same oldest-first
eviction, because each pending handshake holds buffers (tens of KB) until it finishes.

Every refusal and eviction goes to the shared `RefusalLog` (one line per listener, reason kind
and source per interval). All of it is bookkeeping per connection, none per byte.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Protocol

from bridge import eager
from bridge.fdbudget import FdBudget
from bridge.ratelog import RefusalLog


class Guarded(Protocol):
    """What a gate needs of a connection."""

    source: str
    admitted: bool

    def evict(self, kind: str) -> None:
        """Close at once (the gate has already released it)."""


class Gate:
    def __init__(
        self,
        listener: str,
        *,
        max_connections: int,
        max_per_source: int,
        fds: FdBudget,
        refusals: RefusalLog,
        max_handshakes: int = 0,
        exempt: Callable[[str], bool] | None = None,
    ) -> None:
        self.listener = listener
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.max_handshakes = max_handshakes
        self.fds = fds
        self.refusals = refusals
        self.exempt = exempt  # sources without a per-source cap (trusted proxies)
        self.count = 0
        self.per_source: dict[str, int] = {}
        # Insertion-ordered: the first key is the oldest.
        self.unproven: dict[Guarded, None] = {}
        self.handshaking: dict[Guarded, None] = {}
        fds.gates.append(self)

    def admit(self, conn: Guarded, fd: int = -1) -> bool:
        """Count a just-accepted connection (`fd`: its descriptor number, -1 unknown); False
        when it must be closed at once (the refusal is logged)."""
        source = conn.source
        held = self.per_source.get(source, 0)
        if held >= self.max_per_source and (self.exempt is None or not self.exempt(source)):
            self.refusals.refused(
                self.listener, "per_source_cap", source, limit=self.max_per_source
            )
            return False
        if self.count >= self.max_connections:
            kind = "connection_cap"
        elif not self.fds.room(fd):
            kind = "fd_reserve"
        else:
            kind = ""
        if kind and not self._make_room(kind):
            self.refusals.refused(self.listener, kind, source)
            return False
        self.per_source[source] = self.per_source.get(source, 0) + 1
        self.count += 1
        self.fds.connections += 1
        self.unproven[conn] = None
        conn.admitted = True
        return True

    def proven(self, conn: Guarded) -> None:
        """The connection did what a real client does first (logged in, bound, sent a whole
        request): no longer a candidate for eviction."""
        self.unproven.pop(conn, None)

    def unproven_again(self, conn: Guarded) -> None:
        """Waiting again for a client's next move (an idle keep-alive HTTP connection): the
        newest candidate for eviction."""
        if conn.admitted:
            self.unproven.pop(conn, None)
            self.unproven[conn] = None

    def begin_handshake(self, conn: Guarded) -> bool:
        """Take a TLS handshake slot, evicting the oldest pending handshake when all are
        taken; False when there is no slot at all (the cap is 0) and TLS must not start."""
        if self.max_handshakes <= 0:
            self.refusals.refused(self.listener, "handshake_cap", conn.source)
            return False
        if conn in self.handshaking:
            return True
        if len(self.handshaking) >= self.max_handshakes:
            self._evict_oldest(self.handshaking, "handshake_cap")
        if not conn.admitted:  # never counted (or released): no slot to hold
            return False
        self.handshaking[conn] = None
        return True

    def end_handshake(self, conn: Guarded) -> None:
        self.handshaking.pop(conn, None)

    def release(self, conn: Guarded) -> None:
        """The connection ended (or was evicted); idempotent."""
        if not conn.admitted:
            return
        conn.admitted = False
        self.unproven.pop(conn, None)
        self.handshaking.pop(conn, None)
        self.count -= 1
        self.fds.connections -= 1
        source = conn.source
        left = self.per_source.get(source, 0) - 1
        if left > 0:
            self.per_source[source] = left
        else:
            self.per_source.pop(source, None)

    def _make_room(self, kind: str) -> bool:
        """Evict an unproven connection: this listener's oldest for its own cap; for the
        descriptor reserve, the oldest of whichever listener holds the most (a flood of idle
        LDAP connections must not leave SIP2 or the pages without a descriptor)."""
        if kind != "fd_reserve":
            return self._evict_oldest(self.unproven, kind)
        fullest = max(self.fds.gates, key=lambda gate: len(gate.unproven), default=self)
        return fullest._evict_oldest(fullest.unproven, kind)

    def _evict_oldest(self, pool: dict[Guarded, None], kind: str) -> bool:
        if not pool:
            return False
        victim = next(iter(pool))
        self.release(victim)
        self.refusals.refused(self.listener, f"evicted_{kind}", victim.source)
        victim.evict(kind)
        return True

    def __len__(self) -> int:
        return self.count


def socket_fd(transport: object) -> int:
    """The descriptor number behind a transport (asyncio's or uvloop's), -1 when unknown."""
    get = getattr(transport, "get_extra_info", None)
    sock = get("socket") if get is not None else None
    fileno = getattr(sock, "fileno", None)
    if fileno is None:
        return -1
    try:
        fd = fileno()
    except OSError:
        return -1
    return fd if isinstance(fd, int) else -1


def start_tls_now(
    transport: asyncio.Transport,
    protocol: asyncio.BaseProtocol,
    context: ssl.SSLContext,
    timeout: float,
    done: Callable[[asyncio.Future[asyncio.Transport | None]], None],
) -> None:
    """Put a server-side TLS layer under `protocol` before a byte of the peer's handshake can
    reach it, and call `done` with the outcome (the new transport, or the failure).

    The first step of `loop.start_tls` runs here, inline (`eager.run`): it pauses reading and
    swaps in the TLS protocol synchronously. Scheduled as a task instead, it would run a loop
    iteration later, and uvloop starts reading a new connection right after `connection_made`
    returns (its `pause_reading` there is a no-op), so a client's ClientHello could reach the
    clear-text protocol first. `timeout` is the handshake's deadline from now, never extended
    by the peer's bytes."""
    loop = asyncio.get_running_loop()
    outcome = eager.run(
        loop.start_tls(
            transport, protocol, context, server_side=True, ssl_handshake_timeout=timeout
        )
    )
    if isinstance(outcome, eager.Pending):
        outcome.task.add_done_callback(done)
        return
    finished: asyncio.Future[asyncio.Transport | None] = loop.create_future()
    finished.set_result(outcome)
    done(finished)
