"""`[server]`: how many worker processes run the daemon on one host.

One process uses one core (the GIL); `workers = N` (or `"auto"`, one per CPU) makes a supervisor
start N copies of the full daemon on the same listeners (SO_REUSEPORT). Default 1: nothing changes
for a small site.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

import msgspec

from bridge.settings import Section

MAX_WORKERS = 64


class ServerSettings(Section, frozen=True):
    workers: Annotated[int, msgspec.Meta(ge=1, le=MAX_WORKERS)] | Literal["auto"] = 1
    # Seconds a worker that died waits before its restart, doubling per quick death up to the max.
    restart_delay: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.5
    restart_delay_max: Annotated[float, msgspec.Meta(ge=0, le=600)] = 30.0

    def worker_count(self) -> int:
        """The number of worker processes: `auto` is one per CPU this process may use."""
        if self.workers == "auto":
            try:
                cpus = len(os.sched_getaffinity(0))
            except AttributeError:  # not Linux
                cpus = os.cpu_count() or 1
            return max(1, min(cpus, MAX_WORKERS))
        return self.workers
