"""The check gate: pending caps shed at once, running slots go round robin by source, a wait
is bounded by the deadline, and nothing is held after a cancellation or a timeout."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.gate import Busy, Gate, GateLimits


def test_pending_caps_shed_at_once() -> None:
    gate = Gate(GateLimits(max_active=1, max_pending=3, max_pending_per_source=2))
    assert gate.admit("a") and gate.admit("a")
    assert not gate.admit("a")  # per source
    assert gate.admit("b")
    assert not gate.admit("c")  # in total
    assert gate.shed == 2 and gate.pending == 3
    gate.leave("a")
    assert gate.admit("c")
    for source in ("a", "b", "c"):
        gate.leave(source)
    assert gate.pending == 0 and gate._per_source == {}


async def test_slots_go_round_robin_by_source() -> None:
    """Ten waiters from a flooding address, then one from elsewhere: the other address runs
    next, not eleventh."""
    gate = Gate(GateLimits(max_active=1, max_pending=100, max_pending_per_source=100))
    await gate.acquire("flood")
    order: list[str] = []

    async def wait(source: str) -> None:
        await gate.acquire(source)
        order.append(source)
        gate.release()

    tasks = [asyncio.create_task(wait("flood")) for _ in range(10)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(wait("patron")))
    await asyncio.sleep(0)
    gate.release()
    await asyncio.gather(*tasks)
    assert order[:2] == ["flood", "patron"]
    assert gate.active == 0 and not gate._waiting


async def test_wait_is_bounded_by_the_deadline() -> None:
    gate = Gate(GateLimits(max_active=1, wait_deadline=0.05))
    await gate.acquire("a")
    with pytest.raises(Busy):
        await gate.acquire("b")
    assert gate.timed_out == 1 and not gate._waiting
    gate.release()
    assert gate.active == 0


async def test_cancelled_waiter_holds_nothing() -> None:
    gate = Gate(GateLimits(max_active=1))
    await gate.acquire("a")
    waiter = asyncio.create_task(gate.acquire("b"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not gate._waiting
    gate.release()
    assert gate.active == 0


async def test_slot_handed_to_a_waiter_cancelled_in_the_same_instant_passes_on() -> None:
    gate = Gate(GateLimits(max_active=1))
    await gate.acquire("a")
    first = asyncio.create_task(gate.acquire("b"))
    second = asyncio.create_task(gate.acquire("c"))
    await asyncio.sleep(0)
    gate.release()  # the slot goes to `first`...
    first.cancel()  # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot passed on
    assert gate.active == 1
    gate.release()
    assert gate.active == 0


@settings(max_examples=60, deadline=None)
@given(
    plan=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3), st.booleans()), max_size=40),
    active=st.integers(1, 3),
)
async def test_property_running_never_exceeds_the_cap(
    plan: list[tuple[str, int, bool]], active: int
) -> None:
    """Any mix of sources, hold times and cancellations: never more than `max_active` run at
    once, and when all is done nothing is held."""
    gate = Gate(GateLimits(max_active=active, max_pending=10**6, max_pending_per_source=10**6))
    running = 0
    peak = 0

    async def job(source: str, hold: int) -> None:
        nonlocal running, peak
        await gate.acquire(source)
        running += 1
        peak = max(peak, running)
        try:
            for _ in range(hold):
                await asyncio.sleep(0)
        finally:
            running -= 1
            gate.release()

    tasks = [asyncio.create_task(job(source, hold)) for source, hold, _ in plan]
    await asyncio.sleep(0)
    for task, (_, _, cancel) in zip(tasks, plan, strict=True):
        if cancel:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert peak <= active
    assert gate.active == 0 and not gate._waiting
