"""Run a coroutine eagerly: inline to completion when it never has to wait, in a task otherwise.

Most LDAP requests finish without awaiting anything (a cached bind, a RootDSE read, a
WhoAmI), yet wrapping each one's handler in a task costs a task, a loop iteration and a
scheduled callback, a large share of the whole request. Python 3.12 has `eager_task_factory`
for this; the daemon supports 3.11, so this is the same idea: step the coroutine once; if it
finishes, its value comes back at once; if it yields a future, a task continues it from exactly
that point (`_Resume` hands the task the same future, then forwards every later send and
throw).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pending(Generic[T]):
    task: asyncio.Task[T]


class _Resume(Generic[T]):
    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self.coro
        pending = self.first
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # noqa: BLE001 - forwarded (cancellation) into coro
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    result: T = stop.value
                    return result
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    result = stop.value
                    return result


async def _finish(resume: _Resume[T]) -> T:
    return await resume


def run(coro: Coroutine[Any, Any, T]) -> T | Pending[T]:
    """The coroutine's result if it completes without waiting, else a `Pending` task."""
    try:
        first = coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    task = asyncio.get_running_loop().create_task(_finish(_Resume(coro, first)))
    # A task cancelled before its first step never drives the coroutine: close it so its
    # `finally` blocks run. A no-op once it finished.
    task.add_done_callback(lambda _: coro.close())
    return Pending(task)
