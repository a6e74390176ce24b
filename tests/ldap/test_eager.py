"""eager.run: inline when the coroutine never waits, a task from the exact suspension point
otherwise, and cancellation forwarded into the coroutine."""

from __future__ import annotations

import asyncio

import pytest

from bridge.ldap import eager


async def test_inline_result_without_a_task() -> None:
    async def quick() -> int:
        return 7

    assert eager.run(quick()) == 7


async def test_waiting_coroutine_continues_in_a_task() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def slow() -> int:
        steps.append("before")
        value = await gate
        steps.append("after")
        await asyncio.sleep(0)
        return value * 2

    pending = eager.run(slow())
    assert isinstance(pending, eager.Pending) and steps == ["before"]
    gate.set_result(21)
    assert await pending.task == 42
    assert steps == ["before", "after"]


async def test_exceptions_and_cancellation_reach_the_coroutine() -> None:
    cleaned: list[bool] = []

    async def failing() -> int:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        eager.run(failing())

    async def stuck() -> int:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append(True)
        return 0

    pending = eager.run(stuck())
    assert isinstance(pending, eager.Pending)
    await asyncio.sleep(0)
    pending.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending.task
    assert cleaned == [True]
