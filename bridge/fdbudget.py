"""The process's open-file budget, and the headroom the TCP listeners keep below it.

A service manager's usual soft limit is 1,024 descriptors. When every one of them holds a
connection, `accept` fails with EMFILE, the event loop stops accepting on every listener for a
while and logs nothing useful, and store connections, log files and health probes fail too. So
at start the soft limit is raised to the hard limit (and the budget logged), and every TCP
listener refuses a new connection (closing it at once) while fewer than `reserve` descriptors
are left: RADIUS (its sockets are already open), the store, and sessions already connected keep
working.

How full the table is: descriptors are allocated lowest-free first, so an accepted socket whose
number is N proves N descriptors below it are taken; the connections the listeners hold plus
what was open at start bounds it from the other side (closed low descriptors leave holes). The
larger of the two is the estimate: no system call per connection.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from bridge.admission import Gate

log = structlog.get_logger("bridge.fdbudget")

#: Never aim the soft limit higher than this, even when the hard limit is unlimited.
CEILING = 1 << 20


@dataclass(slots=True)
class FdBudget:
    """How many descriptors the listeners may fill. `connections` is kept by the listeners'
    gates (one increment per accepted connection, one decrement when it ends); `gates` lists
    them, so a listener out of descriptors can take one from a flood on another listener."""

    limit: int
    reserve: int
    baseline: int = 0
    connections: int = 0
    gates: list[Gate] = field(default_factory=list)

    def room(self, fd: int) -> bool:
        """Whether a just-accepted socket numbered `fd` leaves the reserve untouched."""
        used = max(fd + 1, self.baseline + self.connections + 1)
        return used <= self.limit - self.reserve

    @property
    def available(self) -> int:
        """Descriptors left for connections before the reserve (for logs and tests)."""
        return max(self.limit - self.reserve - self.baseline - self.connections, 0)

    @classmethod
    def unlimited(cls) -> FdBudget:
        """A budget that never refuses (tests that build a listener without the app)."""
        return cls(limit=CEILING * 4, reserve=0)


def reserve_for(limit: int) -> int:
    """Descriptors kept back: 1/16 of the limit, at least 32, at most 1,024."""
    return min(max(limit // 16, 32), 1024)


def open_descriptors() -> int:
    """How many descriptors the process holds now (Linux /proc; elsewhere a guess)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        with contextlib.suppress(OSError):
            return len(os.listdir(path))
    return 16


def raise_soft_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; (soft, hard) as they are afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = CEILING if hard == resource.RLIM_INFINITY else min(hard, CEILING)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("fd_limit_not_raised", soft=soft, hard=hard, error=type(exc).__name__)
        return soft, hard
    return target, hard


def start() -> FdBudget:
    """At daemon start: raise the limit, measure what is open, log the budget."""
    soft, hard = raise_soft_limit()
    limit = CEILING if soft == resource.RLIM_INFINITY else soft
    budget = FdBudget(limit=limit, reserve=reserve_for(limit), baseline=open_descriptors())
    log.info(
        "fd_budget",
        soft_limit=limit,
        hard_limit=-1 if hard == resource.RLIM_INFINITY else hard,
        reserve=budget.reserve,
        open_at_start=budget.baseline,
        for_connections=budget.available,
    )
    return budget
