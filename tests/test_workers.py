"""bridge.workers: blocking calls in threads, results and errors back to the coroutine, real
parallelism, cancelled jobs skipped, clean shutdown, under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import uvloop

from bridge.workers import Workers


async def test_result_and_thread() -> None:
    workers = Workers(2, "test")
    try:
        name = await workers.run(lambda: threading.current_thread().name)
        assert name.startswith("test-") and name != threading.current_thread().name
        assert await workers.run(pow, 2, 10) == 1024
    finally:
        workers.close()


async def test_exception_reaches_the_caller_with_its_type() -> None:
    workers = Workers(1, "test")

    def broken() -> None:
        raise KeyError("missing")

    try:
        with pytest.raises(KeyError):
            await workers.run(broken)
        assert await workers.run(int, "7") == 7  # the thread survived
    finally:
        workers.close()


async def test_jobs_run_in_parallel() -> None:
    """Three jobs that each wait for the other two can only finish on three threads."""
    workers = Workers(3, "test")
    barrier = threading.Barrier(3, timeout=10)
    try:
        got = await asyncio.gather(*(workers.run(barrier.wait) for _ in range(3)))
        assert sorted(got) == [0, 1, 2]
    finally:
        workers.close()


async def test_cancelled_job_is_skipped() -> None:
    """A job whose caller gave up before a thread took it never runs."""
    workers = Workers(1, "test")
    gate = threading.Event()
    ran: list[str] = []
    try:
        busy = asyncio.ensure_future(workers.run(gate.wait, 10))
        waiting = asyncio.ensure_future(workers.run(ran.append, "late"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        gate.set()
        assert await busy is True
        await workers.run(ran.append, "next")
        assert ran == ["next"]
    finally:
        workers.close()


async def test_timeout_drops_a_running_jobs_result() -> None:
    workers = Workers(1, "test")
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await workers.run(time.sleep, 0.3)
        assert await workers.run(int, "1") == 1  # the thread finished the sleep and went on
    finally:
        workers.close()


def test_close_waits_for_queued_jobs_and_refuses_new_ones() -> None:
    async def main() -> None:
        workers = Workers(2, "test")
        done: list[int] = []
        jobs = [asyncio.ensure_future(workers.run(done.append, i)) for i in range(20)]
        await asyncio.gather(*jobs)
        workers.close()
        assert sorted(done) == list(range(20))
        assert not any(t.name.startswith("test-") for t in threading.enumerate())
        with pytest.raises(RuntimeError):
            await workers.run(int)

    asyncio.run(main())


def test_under_uvloop() -> None:
    async def main() -> int:
        workers = Workers(2, "test")
        try:
            return sum(await asyncio.gather(*(workers.run(abs, -i) for i in range(100))))
        finally:
            workers.close()

    assert uvloop.run(main()) == sum(range(100))


def test_needs_a_thread() -> None:
    with pytest.raises(ValueError):
        Workers(0, "test")
