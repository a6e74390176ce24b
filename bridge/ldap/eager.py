"""Run a coroutine inline until it first waits; only then hand the rest to a task.

Python 3.11 has no eager task factory. A cached bind never suspends (cache hit, throttle check,
audit line), so creating a task and waiting a loop turn for it would be most of its cost. `run`
steps the coroutine once: if it finishes, its value comes back at once; if it yields a future,
a task continues it from exactly that point (`_Resume` hands the task the same future, then
forwards every later send and throw to the coroutine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pending(Generic[T]):
    task: asyncio.Future[T]


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
    return Pending(asyncio.ensure_future(_finish(_Resume(coro, first))))
