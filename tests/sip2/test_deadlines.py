"""The shared deadline ticks: a member is called at or after its deadline, once; a discarded
one never; one timer per tick, not per member. (How late a tick fires depends on the machine:
not asserted.)"""

from __future__ import annotations

import asyncio

from bridge.sip2.deadlines import TICK, Deadlines


class Member:
    def __init__(self, deadlines: Deadlines, when: float) -> None:
        self.when = when
        self.called: list[float] = []
        self.tick = deadlines.add(self, when)

    def check_deadline(self) -> None:
        self.called.append(asyncio.get_running_loop().time())


async def test_members_fire_at_or_after_their_deadline_and_once() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    now = loop.time()
    members = [Member(deadlines, now + 0.05 + i * 0.013) for i in range(8)]
    gone = Member(deadlines, now + 0.05)
    deadlines.discard(gone, gone.tick)
    assert len(deadlines) == 8
    assert len(deadlines._timers) < len(members)  # members share ticks
    await asyncio.sleep(0.05 + 8 * 0.013 + 3 * TICK)
    for member in members:
        assert len(member.called) == 1
        assert member.when <= member.called[0]  # never early
    assert gone.called == []
    assert len(deadlines) == 0 and not deadlines._timers


async def test_close_cancels_every_tick() -> None:
    deadlines = Deadlines()
    member = Member(deadlines, asyncio.get_running_loop().time() + 0.02)
    deadlines.close()
    await asyncio.sleep(0.02 + 2 * TICK)
    assert member.called == []
