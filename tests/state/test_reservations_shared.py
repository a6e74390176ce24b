"""The reserve/settle semantic tests of `tests/core/test_reservations.py` (written for the
in-memory `Throttle`), run unchanged against the shared backends: each test's `Throttle(...)`
becomes a fresh Redis guard (own key prefix) or SQLite guard (own file), behind a synchronous
adapter that asks the shared state itself for what the test inspects.

Left out, because they inspect what only one process's memory has: the count of counters kept
(`len`), the write-behind file (`Recording`), the sweep of a quiet counter whose reservation a
shared backend lets expire by design, and the async test (the adapter runs its own loop)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from bridge.core.throttle import Refusal, Result, Settled, ThrottleRules, Ticket
from bridge.state.bus import LocalBus
from bridge.state.redis_client import connect
from bridge.state.redis_throttle import RedisGuard
from bridge.state.settings import StateSettings
from bridge.state.sqlite_guard import SqliteGuard, Tx
from tests.core import test_reservations as semantics
from tests.state.redis_server import delete_prefix, shared_prefix

RUN = [
    "test_card_budget_is_taken_by_reservations_in_flight",
    "test_delay_stage_checks_one_at_a_time",
    "test_free_failures_zero_means_one_at_a_time_from_the_start",
    "test_success_resets_the_card_but_keeps_other_checks_counted",
    "test_a_ticket_is_settled_once",
    "test_staff_clear_keeps_checks_in_flight",
    "test_unknown_barcodes_have_budgets_too",
    "test_source_budget_in_flight_is_busy_not_blocked",
    "test_global_guard_counts_checks_in_flight",
    "test_bad_input_counts_on_the_source_only",
    "test_property_budgets_hold_for_any_interleaving",
    "test_property_right_pin_in_a_burst",
    "test_property_global_guard_holds_within_one_window",
]


class SyncShared:
    """The `Throttle` surface the semantic tests use, answered by a shared backend."""

    def __init__(self, guard: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.guard = guard
        self.loop = loop
        self.rules = guard.rules

    def _do(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def reserve_now(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        got: Ticket | Refusal = self._do(self.guard.reserve(barcode, source, now))
        return got

    def settle_now(self, ticket: Ticket, result: Result, now: float) -> Settled:
        settled: Settled = self._do(self.guard.settle(ticket, result, now))
        return settled

    def check(self, barcode: str, source: str, now: float) -> Refusal | None:
        """The shared state's answer (the process-local `check` of a shared backend may lag)."""
        got = self.reserve_now(barcode, source, now)
        if isinstance(got, Refusal):
            return got
        self.settle_now(got, Result.RELEASE, now)
        return None

    async def _written(self, write: Callable[[], None]) -> None:
        write()  # the guard's write-behind task starts on this adapter's loop
        await self.guard.settled()

    def record_failure(self, barcode: str | None, source: str, now: float) -> None:
        self._do(self._written(lambda: self.guard.record_failure(barcode, source, now)))

    def record_bad_input(self, source: str, now: float) -> None:
        self._do(self._written(lambda: self.guard.record_bad_input(source, now)))

    def clear(self, barcode: str) -> bool:
        cleared: bool = self._do(self.guard.clear_async(barcode))
        return cleared

    def failures(self, barcode: str, now: float) -> int:
        return self._state(barcode, now)[0]

    def card_locked(self, barcode: str, now: float) -> bool:
        return self._state(barcode, now)[1]

    def _state(self, barcode: str, now: float) -> tuple[int, bool]:
        guard = self.guard
        if isinstance(guard, RedisGuard):
            state: tuple[int, bool] = self._do(guard.peek(barcode, now))
            return state

        def body(tx: Tx) -> tuple[int, bool]:
            card = tx.counter("card:", barcode, guard.rules.card_forget_after)[0]
            if card is None:
                return 0, False
            return card.failures, card.locked and card.blocked_until > now

        return self._do(guard._run(now, body))  # type: ignore[no-any-return]

    @property
    def inflight(self) -> int:
        guard = self.guard
        if isinstance(guard, RedisGuard):
            count: int = self._do(guard.client.zcard(f"{guard.prefix}gi"))
            return count
        return self._do(guard._run(0.0, lambda tx: tx.inflight()))  # type: ignore[no-any-return]

    def global_pressure(self, now: float) -> bool:
        rules = self.rules
        guard = self.guard
        if isinstance(guard, RedisGuard):
            failed = self._do(
                guard.client.zcount(f"{guard.prefix}gf", now - rules.global_window, "+inf")
            )
            flying = self._do(guard.client.zcount(f"{guard.prefix}gi", now, "+inf"))
            return bool(failed + flying >= rules.global_max_failures)

        def body(tx: Tx) -> bool:
            failed = tx.conn.execute(f"SELECT count(*) FROM {tx.d.failures}").fetchone()[0]
            return bool(failed + tx.inflight() >= rules.global_max_failures)

        return self._do(guard._run(now, body))  # type: ignore[no-any-return]


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., SyncShared]]:
    loop = asyncio.new_event_loop()
    made: list[Any] = []
    numbers = itertools.count()
    if request.param == "postgres":
        from bridge.state.postgres_guard import PostgresGuard
        from tests.plugins import servers
        from tests.state.test_guards import postgres_tables

        with servers.pg_database() as dbname:
            dsn = postgres_tables(dbname)

            def on_postgres(rules: ThrottleRules, *_: object) -> SyncShared:
                # One guard (one connection) for every example, emptied like a new Throttle.
                if not made:
                    made.append(PostgresGuard(rules, dsn, bus=LocalBus()))
                guard = made[0]
                guard.rules = rules
                guard._cards.clear()
                guard._sources.clear()
                loop.run_until_complete(guard._run(0.0, _empty))
                return SyncShared(guard, loop)

            yield on_postgres
            for guard in made:
                loop.run_until_complete(guard.aclose())
            made.clear()
    elif request.param == "sqlite":

        def sqlite(rules: ThrottleRules, *_: object) -> SyncShared:
            while made:
                loop.run_until_complete(made.pop().aclose())
            guard = SqliteGuard(rules, tmp_path / f"state{next(numbers)}.db", bus=LocalBus())
            made.append(guard)
            return SyncShared(guard, loop)

        yield sqlite
    else:
        with shared_prefix() as (url, prefix):
            client = loop.run_until_complete(_client(url))

            def on_redis(rules: ThrottleRules, *_: object) -> SyncShared:
                guard = RedisGuard(
                    rules, client, prefix=f"{prefix}{next(numbers)}:", bus=LocalBus()
                )
                made.append(guard)
                return SyncShared(guard, loop)

            yield on_redis
            loop.run_until_complete(client.aclose())
            delete_prefix(url, prefix)
    for guard in made:
        loop.run_until_complete(guard.aclose())
    loop.close()


def _empty(tx: Tx) -> None:
    for table in (tx.d.counters, tx.d.reservations, tx.d.failures):
        tx.conn.execute(f"DELETE FROM {table}")


async def _client(url: str) -> Any:
    return connect(StateSettings(backend="redis", url=url))


@pytest.mark.parametrize("name", RUN)
def test_shared_backend_keeps_the_semantics(
    name: str, backend: Callable[..., SyncShared], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(semantics, "Throttle", backend)
    getattr(semantics, name)()


def test_redis_is_reachable_or_skipped() -> None:
    """Keeps the fixture honest: the shared Redis answers (CI starts it)."""
    with shared_prefix() as (url, _prefix):
        assert redis.Redis.from_url(url).ping()
