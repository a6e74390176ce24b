"""eager.run: inline when the coroutine never waits, a task from the exact suspension point
otherwise, and cancellation forwarded into the coroutine."""

from __future__ import annotations

import asyncio

import pytest

from bridge import eager


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


# --- suspension points a store really uses (executors, timers), errors, cancellation ---


async def immediate() -> int:
    return 1


async def suspends(log: list[str]) -> int:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: None)
    await asyncio.sleep(0)
    await asyncio.sleep(0.001)
    log.append("done")
    return 2


async def fails_at_once() -> int:
    raise ValueError("now")


async def fails_later() -> int:
    await asyncio.sleep(0.001)
    raise KeyError("later")


async def test_finishes_without_a_task() -> None:
    assert eager.run(immediate()) == 1


async def test_suspending_coroutine_continues_in_a_task() -> None:
    log: list[str] = []
    pending = eager.run(suspends(log))
    assert isinstance(pending, eager.Pending) and log == []
    assert await pending.task == 2
    assert log == ["done"]


async def test_exceptions_propagate() -> None:
    with pytest.raises(ValueError):
        eager.run(fails_at_once())
    pending = eager.run(fails_later())
    assert isinstance(pending, eager.Pending)
    with pytest.raises(KeyError):
        await pending.task


async def test_cancellation_reaches_the_coroutine() -> None:
    cleaned: list[str] = []
    started = asyncio.Event()

    async def waits() -> int:
        try:
            started.set()
            await asyncio.Event().wait()
        finally:
            cleaned.append("finally")
        return 0

    pending = eager.run(waits())
    assert isinstance(pending, eager.Pending) and started.is_set()
    pending.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending.task
    assert cleaned == ["finally"]


def test_under_uvloop() -> None:
    import uvloop

    async def main() -> int:
        pending = eager.run(suspends([]))
        assert isinstance(pending, eager.Pending)
        return await pending.task

    assert uvloop.run(main()) == 2
