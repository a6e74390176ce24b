"""Worker threads for blocking calls (an SQLite query), fed through one C-level queue.

The event loop must never wait on a disk, so a store's blocking calls run in threads. With
`loop.run_in_executor` and a `ThreadPoolExecutor` every call also builds a concurrent Future
(with its own Condition), a work item and a chained asyncio future, and goes through the
executor's idle-thread semaphore: measured on a 2-vCPU VM, about 50 µs of CPU per SQLite row
lookup whose query takes 8. Here a fixed set of threads reads one `queue.SimpleQueue` of jobs
and completes the caller's asyncio future with `call_soon_threadsafe`: the same hop costs about
30 µs, which is most of an LDAP search's cost.

A job whose caller stopped waiting (cancelled, e.g. by a time limit) before a thread took it is
skipped; one already running finishes and its result is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]


def _finish(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


class Workers:
    """`count` daemon threads named `name-N` running blocking callables for coroutines."""

    def __init__(self, count: int, name: str) -> None:
        if count < 1:
            raise ValueError("at least one worker thread")
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(count)
        ]
        self._closed = False
        for thread in self._threads:
            thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` in a worker thread; its result, or its exception raised here."""
        if self._closed:
            raise RuntimeError("workers are closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return await future

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            loop, future, fn, args = job
            if future.cancelled():
                continue  # nobody waits for it any more
            try:
                result = fn(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting coroutine
                self._reply(loop, _fail, future, error)
            else:
                self._reply(loop, _finish, future, result)

    @staticmethod
    def _reply(
        loop: asyncio.AbstractEventLoop,
        callback: Callable[[asyncio.Future[Any], Any], None],
        future: asyncio.Future[Any],
        value: Any,
    ) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody left to tell
            loop.call_soon_threadsafe(callback, future, value)

    def close(self) -> None:
        """Let queued jobs finish, then stop every thread (blocks until they have)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
