"""run_eagerly: finishes synchronously when nothing is awaited, behaves like a task otherwise."""

from __future__ import annotations

import asyncio

import pytest

from bridge.radius.eager import run_eagerly


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
    got: list[int] = []
    assert run_eagerly(asyncio.get_running_loop(), immediate(), got.append) is None
    assert got == [1]


async def test_suspending_coroutine_continues_in_a_task() -> None:
    got: list[int] = []
    log: list[str] = []
    task = run_eagerly(asyncio.get_running_loop(), suspends(log), got.append)
    assert task is not None
    assert await task == 2
    assert log == ["done"] and got == []


async def test_exceptions_propagate() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(ValueError):
        run_eagerly(loop, fails_at_once(), print)
    task = run_eagerly(loop, fails_later(), print)
    assert task is not None
    with pytest.raises(KeyError):
        await task


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

    task = run_eagerly(asyncio.get_running_loop(), waits(), print)
    assert task is not None and started.is_set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["finally"]


def test_under_uvloop() -> None:
    import uvloop

    async def main() -> int:
        task = run_eagerly(asyncio.get_running_loop(), suspends([]), print)
        assert task is not None
        return await task

    assert uvloop.run(main()) == 2
