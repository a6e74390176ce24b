"""Bounded work: how many PIN checks may be pending, and who runs next.

Every check that needs the store (the KDF in the hasher's pool, or an ILS round trip) passes
this gate. It holds two numbers per process:

- pending: checks admitted and not finished (running or waiting to run). At most
  `max_pending` in total and `max_pending_per_source` per source address; a request beyond
  either is shed at once (the core answers BUSY: each protocol's "try again"), so a flood
  costs a dict lookup per request, not a queue entry, a task's memory and a hash.
- running: at most `max_active` checks call the store at the same time, so the KDF queue never
  holds more than that. The others wait, in per-source round robin: a flood from one address
  waits behind itself, and a patron from elsewhere gets the next free slot. A wait longer than
  `wait_deadline` gives up with `Busy`, which bounds what a legitimate request can be made to
  wait for a slot.

The counters `shed` and `timed_out` are there for metrics. Pure asyncio, no clock of its own
(the deadline is the loop's).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict, deque
from dataclasses import dataclass


class Busy(Exception):
    """No slot within the deadline: the request is answered BUSY."""


@dataclass(frozen=True, slots=True)
class GateLimits:
    max_active: int = 8
    max_pending: int = 256
    max_pending_per_source: int = 64
    wait_deadline: float = 5.0


class Gate:
    def __init__(self, limits: GateLimits) -> None:
        self.limits = limits
        self.pending = 0
        self.active = 0
        self._per_source: dict[str, int] = {}
        # Waiters by source, sources in round-robin order (a served source moves to the end).
        self._waiting: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        self.shed = 0  # requests refused at once (pending caps)
        self.timed_out = 0  # requests that waited `wait_deadline` for a slot in vain

    def __repr__(self) -> str:
        return f"Gate(pending={self.pending}, active={self.active}, shed={self.shed})"

    def admit(self, source: str) -> bool:
        """Count one pending check for `source`, or False (shed) when a cap is reached.
        Every True must be matched by one `leave(source)`."""
        limits = self.limits
        mine = self._per_source.get(source, 0)
        if self.pending >= limits.max_pending or mine >= limits.max_pending_per_source:
            self.shed += 1
            return False
        self.pending += 1
        self._per_source[source] = mine + 1
        return True

    def leave(self, source: str) -> None:
        self.pending -= 1
        mine = self._per_source[source] - 1
        if mine:
            self._per_source[source] = mine
        else:
            del self._per_source[source]

    async def acquire(self, source: str) -> None:
        """Wait for a running slot (at most `wait_deadline`); raises `Busy` when none came.
        Every return must be matched by one `release()`. Cancellation leaves nothing held."""
        if self.active < self.limits.max_active and not self._waiting:
            self.active += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.get(source)
        if queue is None:
            queue = self._waiting[source] = deque()
        queue.append(future)
        try:
            async with asyncio.timeout(self.limits.wait_deadline):
                await future
        except TimeoutError:
            self._abandon(source, future)
            self.timed_out += 1
            raise Busy("no PIN check slot within the deadline") from None
        except BaseException:
            self._abandon(source, future)
            raise

    def _abandon(self, source: str, future: asyncio.Future[None]) -> None:
        """A waiter gives up: out of the queue, or, when a slot was handed to it in the
        same instant, the slot goes on to the next."""
        if future.done() and not future.cancelled():
            self.release()
            return
        queue = self._waiting.get(source)
        if queue is not None:
            with contextlib.suppress(ValueError):  # already handed a slot and popped
                queue.remove(future)
            if not queue:
                del self._waiting[source]

    def release(self) -> None:
        """Give the running slot to the next waiter (next source in turn), or free it."""
        while self._waiting:
            source, queue = next(iter(self._waiting.items()))
            future = queue.popleft()
            if queue:
                self._waiting.move_to_end(source)
            else:
                del self._waiting[source]
            if not future.done():
                future.set_result(None)  # the slot passes on; `active` is unchanged
                return
        self.active -= 1
