"""The guessing limits (`GuessGuard`) shared by the workers of one host through a SQLite file.

For `[server] workers = N` without Redis. Every decision is one `BEGIN IMMEDIATE` transaction
(the file's write lock is taken before anything is read, so two workers can never both pass a
check that only one of them may pass), run on this process's one state thread so the event loop
never waits on the disk. The rules are those of the in-memory `Throttle` (docs/throttle-api.md),
applied to rows: counters in the `throttle` table the single-process write-behind backend has
always used (a lock set before the switch to workers still holds), reservations in
`reservations` (expired ones are dropped on every decision touching them: released, not
counted), failures of the global window in `global_failures`.

The synchronous questions (`check`, the cached fast path) answer from a local mirror of the
refusals this process was given, dropped when any worker clears the card (the bus).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bridge.core.throttle import (
    CARD,
    SOURCE,
    Counter,
    GuardUnavailable,
    Refusal,
    Result,
    Settled,
    ThrottleRules,
    Ticket,
)
from bridge.state.bus import Bus
from bridge.workers import Workers

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS throttle (key TEXT PRIMARY KEY, failures INTEGER NOT NULL,"
    " last_failure REAL NOT NULL, blocked_until REAL NOT NULL, locked INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS reservations (id TEXT PRIMARY KEY, barcode TEXT NOT NULL,"
    " source TEXT NOT NULL, expires REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS reservations_barcode ON reservations (barcode)",
    "CREATE INDEX IF NOT EXISTS reservations_source ON reservations (source)",
    "CREATE INDEX IF NOT EXISTS reservations_expires ON reservations (expires)",
    "CREATE TABLE IF NOT EXISTS global_failures (at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS global_failures_at ON global_failures (at)",
)

_CARD_LOCKED = "card locked after too many failed PINs"
_CARD_WAIT = "too many failed PINs, wait"
_CARD_BUSY = "PIN checks for this card are in progress"
_SOURCE_BLOCKED = "too many failures from this address"
_SOURCE_BUSY = "this address's failure budget is taken by checks in progress"
_GLOBAL = "failed-attempt rate too high"
MAX_MIRROR = 100_000


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the SQL engines that keep the shared counters."""

    p: str = "?"  # the driver's placeholder
    counters: str = "throttle"
    reservations: str = "reservations"
    failures: str = "global_failures"


SQLITE = Dialect()


class Tx:
    """The rules on the rows of one open transaction (all methods run on the state thread).
    The caller holds the write lock for the whole transaction (SQLite: BEGIN IMMEDIATE;
    PostgreSQL: a transaction-scoped advisory lock), so nothing here can interleave."""

    def __init__(
        self, conn: Any, rules: ThrottleRules, now: float, dialect: Dialect = SQLITE
    ) -> None:
        self.conn = conn
        self.rules = rules
        self.now = now
        self.d = d = dialect
        # Table names come from the fixed Dialect, values are always bound (S608 below).
        expired = f"DELETE FROM {d.reservations} WHERE expires <= {d.p}"  # noqa: S608
        old = f"DELETE FROM {d.failures} WHERE at <= {d.p}"  # noqa: S608
        conn.execute(expired, (now,))
        conn.execute(old, (now - rules.global_window,))

    def counter(self, prefix: str, name: str, quiet: float) -> tuple[Counter | None, int]:
        """(the live counter or None, reservations in flight) after forgetting a quiet one."""
        d = self.d
        column = "barcode" if prefix == CARD else "source"
        inflight = self.conn.execute(
            f"SELECT count(*) FROM {d.reservations} WHERE {column} = {d.p}",  # noqa: S608
            (name,),
        ).fetchone()[0]
        row = self.conn.execute(
            "SELECT failures, last_failure, blocked_until, locked"  # noqa: S608 - fixed names
            f" FROM {d.counters} WHERE key = {d.p}",
            (prefix + name,),
        ).fetchone()
        if row is None:
            return None, inflight
        counter = Counter(row[0], row[1], row[2], bool(row[3]), inflight)
        if counter.blocked_until <= self.now and self.now - counter.last_failure > quiet:
            self.delete(prefix + name)
            return None, inflight
        return counter, inflight

    def delete(self, key: str) -> bool:
        gone = self.conn.execute(
            f"DELETE FROM {self.d.counters} WHERE key = {self.d.p}",  # noqa: S608
            (key,),
        )
        return bool(gone.rowcount > 0)

    def reserve(self, ticket: Ticket) -> None:
        d = self.d
        self.conn.execute(
            f"INSERT INTO {d.reservations} (id, barcode, source, expires)"  # noqa: S608
            f" VALUES ({d.p}, {d.p}, {d.p}, {d.p})",
            (ticket.id, ticket.barcode, ticket.source, ticket.expires),
        )

    def unreserve(self, ticket_id: str) -> None:
        self.conn.execute(
            f"DELETE FROM {self.d.reservations} WHERE id = {self.d.p}",  # noqa: S608
            (ticket_id,),
        )

    def inflight(self) -> int:
        return int(self.conn.execute(f"SELECT count(*) FROM {self.d.reservations}").fetchone()[0])  # noqa: S608

    def save(self, prefix: str, name: str, c: Counter) -> None:
        d = self.d
        self.conn.execute(
            f"INSERT INTO {d.counters} (key, failures, last_failure, blocked_until, locked)"  # noqa: S608
            f" VALUES ({d.p}, {d.p}, {d.p}, {d.p}, {d.p}) ON CONFLICT(key) DO UPDATE SET"
            " failures=excluded.failures, last_failure=excluded.last_failure,"
            " blocked_until=excluded.blocked_until, locked=excluded.locked",
            (prefix + name, c.failures, c.last_failure, c.blocked_until, c.locked),
        )

    def card_refusal(self, barcode: str) -> Refusal | None:
        r, now = self.rules, self.now
        card, inflight = self.counter(CARD, barcode, r.card_forget_after)
        failures = 0
        if card is not None:
            if card.blocked_until > now:
                if card.locked:
                    retry = None if math.isinf(card.blocked_until) else card.blocked_until - now
                    return Refusal("card", _CARD_LOCKED, retry)
                return Refusal("card", _CARD_WAIT, card.blocked_until - now)
            failures = card.failures
        floor = min(r.card_lock_after, r.card_free_failures)
        if inflight and failures + inflight >= floor:
            return Refusal("card", _CARD_BUSY, max(r.card_delay_base, 1.0))
        return None

    def source_refusal(self, source: str) -> Refusal | None:
        r, now = self.rules, self.now
        src, inflight = self.counter(SOURCE, source, r.source_window)
        if src is not None and src.blocked_until > now:
            return Refusal("source", _SOURCE_BLOCKED, src.blocked_until - now)
        failures = 0 if src is None else src.failures
        if inflight and failures + inflight >= r.source_max_failures:
            return Refusal("source", _SOURCE_BUSY, 1.0, busy=True)
        if src is None and not inflight:
            return None
        failed, oldest = self.conn.execute(
            f"SELECT count(*), min(at) FROM {self.d.failures}"  # noqa: S608
        ).fetchone()
        total = self.inflight()
        if failed + total >= r.global_max_failures:
            # Failed recently: refused while the failures alone reach the threshold, busy while
            # checks in flight make up the rest; an address with a check in flight: busy.
            recent = src is not None and src.last_failure > now - r.global_window
            if recent and failed >= r.global_max_failures:
                return Refusal("global", _GLOBAL, oldest + r.global_window - now)
            if recent or inflight:
                return Refusal("global", _GLOBAL, 1.0, busy=True)
        return None

    def fail(self, barcode: str | None, source: str, *, count_global: bool) -> bool:
        """Count one failure; True when it locked a card that was not locked."""
        r, now = self.rules, self.now
        locked_now = False
        if barcode is not None:
            card = self.counter(CARD, barcode, r.card_forget_after)[0] or Counter()
            card.failures += 1
            card.last_failure = now
            if card.failures >= r.card_lock_after:
                locked_now = not card.locked or card.blocked_until <= now
                card.locked = True
                card.blocked_until = now + r.card_lock_seconds if r.card_lock_seconds else math.inf
            elif card.failures > r.card_free_failures:
                extra = card.failures - r.card_free_failures - 1
                card.blocked_until = now + min(r.card_delay_base * 2**extra, r.card_delay_max)
            self.save(CARD, barcode, card)
        src = self.counter(SOURCE, source, r.source_window)[0] or Counter()
        src.failures += 1
        src.last_failure = now
        if src.failures >= r.source_max_failures:
            src.blocked_until = now + r.source_block_seconds
            src.failures = 0
        self.save(SOURCE, source, src)
        if count_global:
            self.conn.execute(
                f"INSERT INTO {self.d.failures} (at) VALUES ({self.d.p})",  # noqa: S608
                (now,),
            )
        return locked_now


class SqlGuard:
    """`GuessGuard` on SQL rows every process can reach; see the module docstring. Subclasses
    say how to connect, how to take the write lock, and their dialect."""

    dialect = SQLITE
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    what = "state file"

    def __init__(self, rules: ThrottleRules, *, bus: Bus) -> None:
        self.rules = rules
        self.bus = bus
        self.round_trips = 0
        self._thread = Workers(1, "state-db")
        self._conn: Any = None
        self._cards: OrderedDict[str, tuple[float, Refusal]] = OrderedDict()
        self._sources: OrderedDict[str, tuple[float, Refusal]] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def _open(self) -> Any:
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def _tx(self, now: float, body: Callable[[Tx], T], conn: Any = None) -> T:
        conn = conn or self._open()
        try:
            self._begin(conn)
            result = body(Tx(conn, self.rules, now, self.dialect))
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except self.errors:
                self._drop(conn)
            raise
        conn.execute("COMMIT")
        return result

    def _drop(self, conn: Any) -> None:
        """A connection in doubt is closed, never reused."""
        if conn is self._conn:
            self._conn = None
        with contextlib.suppress(*self.errors):
            conn.close()

    async def _run(self, now: float, body: Callable[[Tx], T]) -> T:
        self.round_trips += 1
        try:
            return await self._thread.run(self._tx, now, body)
        except self.errors as exc:
            if self._conn is not None:
                await self._thread.run(self._drop, self._conn)
            raise GuardUnavailable(f"{self.what}: {type(exc).__name__}") from None

    # -- reservations -----------------------------------------------------------------------
    async def reserve(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        ticket = Ticket(uuid.uuid4().hex, barcode, source, now + self.rules.reservation_ttl)

        def body(tx: Tx) -> Refusal | None:
            refusal = tx.card_refusal(barcode) or tx.source_refusal(source)
            if refusal is None:
                tx.reserve(ticket)
            return refusal

        refusal = await self._run(now, body)
        if refusal is not None:
            self._remember(barcode, source, refusal, now)
            return refusal
        return ticket

    async def settle(self, ticket: Ticket, result: Result, now: float) -> Settled:
        def body(tx: Tx) -> bool:
            tx.unreserve(ticket.id)
            if result is Result.FAILURE:
                return tx.fail(ticket.barcode, ticket.source, count_global=True)
            if result is Result.SUCCESS:
                tx.delete(CARD + ticket.barcode)
            return False

        # Shielded: the core settles on its way out of a cancelled check.
        locked = await asyncio.shield(self._run(now, body))
        if locked:
            self._remember(ticket.barcode, ticket.source, Refusal("card", _CARD_LOCKED, None), now)
        return Settled(locked)

    # -- the synchronous view ---------------------------------------------------------------
    def _remember(self, barcode: str, source: str, refusal: Refusal, now: float) -> None:
        if refusal.busy or refusal.scope == "global" or refusal.reason == _CARD_BUSY:
            return
        until = math.inf if refusal.retry_after is None else now + refusal.retry_after
        table, name = (self._cards, barcode) if refusal.scope == "card" else (self._sources, source)
        table[name] = (until, refusal)
        while len(table) > MAX_MIRROR:
            table.popitem(last=False)

    @staticmethod
    def _mirrored(
        table: OrderedDict[str, tuple[float, Refusal]], name: str, now: float
    ) -> Refusal | None:
        entry = table.get(name)
        if entry is None:
            return None
        until, refusal = entry
        if until <= now:
            del table[name]
            return None
        return Refusal(
            refusal.scope, refusal.reason, None if math.isinf(until) else until - now, refusal.busy
        )

    def check(self, barcode: str, source: str, now: float) -> Refusal | None:
        return self._mirrored(self._cards, barcode, now) or self.check_source(source, now)

    def check_source(self, source: str, now: float) -> Refusal | None:
        return self._mirrored(self._sources, source, now)

    def card_locked(self, barcode: str, now: float) -> bool:
        refusal = self._mirrored(self._cards, barcode, now)
        return refusal is not None and refusal.reason == _CARD_LOCKED

    def failures(self, barcode: str, now: float) -> int:
        def body(tx: Tx) -> int:
            card = tx.counter(CARD, barcode, self.rules.card_forget_after)[0]
            return 0 if card is None else card.failures

        return self._thread_call(now, body)

    def counter_now(self, barcode: str, now: float) -> Counter | None:
        """The card's counter as the shared file or database has it, with the end of its lock
        or delay (the staff desk's standing panel; synchronous: callers use a thread)."""

        def body(tx: Tx) -> Counter | None:
            return tx.counter(CARD, barcode, self.rules.card_forget_after)[0]

        return self._thread_call(now, body)

    def locked_now(self, barcode: str, now: float) -> bool:
        """The file's answer (the CLI: `patron show`)."""

        def body(tx: Tx) -> bool:
            card = tx.counter(CARD, barcode, self.rules.card_forget_after)[0]
            return card is not None and card.locked and card.blocked_until > now

        return self._thread_call(now, body)

    def _thread_call(self, now: float, body: Callable[[Tx], T]) -> T:
        """A blocking call for the CLI (never on the daemon's request path)."""
        conn = self._connect()
        try:
            return self._tx(now, body, conn)
        finally:
            conn.close()

    # -- writes nobody awaits -----------------------------------------------------------------
    def record_failure(self, barcode: str | None, source: str, now: float) -> None:
        self._spawn(self._run(now, lambda tx: tx.fail(barcode, source, count_global=True)))

    def record_bad_input(self, source: str, now: float) -> None:
        self._spawn(self._run(now, lambda tx: tx.fail(None, source, count_global=False)))

    def clear(self, barcode: str) -> bool:
        self.forget(barcode)
        self._spawn(self.clear_async(barcode))
        return True

    async def clear_async(self, barcode: str) -> bool:
        def body(tx: Tx) -> bool:
            return tx.delete(CARD + barcode)

        existed = await self._run(0.0, body)
        self.bus.publish("clear_lock", barcode)
        return existed

    def forget(self, barcode: str) -> None:
        self._cards.pop(barcode, None)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        await self.settled()
        await self._thread.run(self._close_conn)
        self._thread.close()

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class SqliteGuard(SqlGuard):
    """One host's workers on one SQLite file: BEGIN IMMEDIATE takes the file's write lock."""

    def __init__(self, rules: ThrottleRules, path: Path, *, bus: Bus) -> None:
        super().__init__(rules, bus=bus)
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        # Switching a new file to WAL takes an exclusive lock without waiting on the busy
        # handler: two workers opening the file at once could see "database is locked" here
        # (about 2 % of simultaneous first opens). This runs on the guard's own thread, so it
        # may wait and try again; the switch is done once per file, then it is a no-op.
        for attempt in range(100):
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 99:
                    conn.close()
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            conn.execute(statement)
        return conn

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")
