"""Connection deadlines kept in shared ticks: one timer per tick of time, not one per connection.

Why: every SIP2 connection needs a deadline (login, then idle, or half a message), and a
`TimerHandle` of its own cost about 4,000 instructions a connection (uvloop's handle and libuv
timer made at connect, cancelled at close): a tenth of a short session's CPU, where a discovery
layer opens a connection per patron login. Here a deadline is rounded *up* to the next tick
(`TICK` seconds) and the connection joins that tick's set; only the first connection of a tick
makes a timer, and leaving is a set discard. A deadline is therefore met up to one tick late,
never early (`Connection.check_deadline` compares against the exact time and re-arms when the
loop's clock, rounded to milliseconds, fires a tick a little before its time).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

#: Seconds per tick: the most a deadline can be late by.
TICK = 1 / 32
_PER_SECOND = 32


class Timed(Protocol):
    def check_deadline(self) -> None:
        """The tick the object joined has come: act on its deadline (or join a later one)."""


class Deadlines:
    """The ticks that have members, each with the one timer that fires it."""

    def __init__(self) -> None:
        self._ticks: dict[int, set[Timed]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, member: Timed, when: float) -> int:
        """Join the first tick at or after `when` (loop time); returns the tick to `discard`."""
        tick = int(when * _PER_SECOND) + 1
        members = self._ticks.get(tick)
        if members is None:
            self._ticks[tick] = {member}
            loop = asyncio.get_running_loop()
            # `call_at`, spelt as uvloop implements it (its call_at wraps call_later)
            self._timers[tick] = loop.call_later(tick * TICK - loop.time(), self._fire, tick)
        else:
            members.add(member)
        return tick

    def discard(self, member: Timed, tick: int) -> None:
        members = self._ticks.get(tick)
        if members is not None:
            members.discard(member)

    def _fire(self, tick: int) -> None:
        self._timers.pop(tick, None)
        members = self._ticks.pop(tick, None)
        if members:
            for member in members:
                member.check_deadline()

    def close(self) -> None:
        """Cancel every tick's timer (the listener has closed its connections)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._ticks.clear()

    def __len__(self) -> int:
        """Members waiting, over all ticks (for tests)."""
        return sum(len(members) for members in self._ticks.values())
