"""The guessing limits and cache invalidation shared by every host through the PostgreSQL
database of the `postgres` store (`[throttle] state = "store"`), for sites with no Redis.

The same rules and rows as the SQLite guard (`bridge.state.sqlite_guard.Tx`), with each
decision one transaction that first takes a transaction-scoped advisory lock
(`pg_advisory_xact_lock`), so decisions from every host are serialised by the database; the
tables are the store's (`throttle_counters`, `throttle_reservations`,
`throttle_global_failures`, created by the plugin's migrations). Invalidations travel by
LISTEN/NOTIFY on `patron_bridge_invalidate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import structlog

from bridge.core.throttle import ThrottleRules
from bridge.state.bus import Bus, Handler, decode, encode
from bridge.state.sqlite_guard import Dialect, SqlGuard

log = structlog.get_logger("bridge.state")

# Any fixed 64-bit number every bridge host agrees on (not the migration lock's).
THROTTLE_LOCK = 0x7061_7472_6F6E_0002
CHANNEL = "patron_bridge_invalidate"
POSTGRES = Dialect(
    p="%s",
    counters="throttle_counters",
    reservations="throttle_reservations",
    failures="throttle_global_failures",
)


class PostgresGuard(SqlGuard):
    dialect = POSTGRES
    errors = (psycopg.Error,)
    what = "postgres throttle"

    def __init__(self, rules: ThrottleRules, dsn: str, *, bus: Bus) -> None:
        super().__init__(rules, bus=bus)
        self.dsn = dsn

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN")
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (THROTTLE_LOCK,))


class PostgresBus:
    """LISTEN on one connection (its own thread), NOTIFY from another."""

    def __init__(self, dsn: str, retry_seconds: float) -> None:
        self.dsn = dsn
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sender: psycopg.Connection[Any] | None = None
        self._send_lock = threading.Lock()
        self._pending: set[asyncio.Future[None]] = set()

    async def start(
        self, handler: Handler, on_deaf: Callable[[], None], on_hearing: Callable[[], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        started = threading.Event()

        def call(fn: Callable[..., None], *args: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: stopping
                loop.call_soon_threadsafe(fn, *args)

        def listen() -> None:
            deaf = False
            while not self._stop.is_set():
                try:
                    with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
                        conn.execute(f"LISTEN {CHANNEL}")
                        started.set()
                        if deaf:
                            deaf = False
                            call(on_hearing)
                        while not self._stop.is_set():
                            for note in conn.notifies(timeout=0.5):
                                parsed = decode(note.payload.encode())
                                if parsed is not None:
                                    call(handler, *parsed)
                except psycopg.Error as exc:
                    started.set()
                    if not deaf:
                        deaf = True
                        log.error("state_bus_lost", error=type(exc).__name__)
                        call(on_deaf)
                    self._stop.wait(self.retry_seconds)

        self._thread = threading.Thread(target=listen, name="state-bus", daemon=True)
        self._thread.start()
        await asyncio.to_thread(started.wait, 10)

    def _notify(self, payload: str) -> None:
        with self._send_lock:
            try:
                if self._sender is None or self._sender.closed:
                    self._sender = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
                self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except psycopg.Error as exc:
                log.error("state_publish_failed", error=type(exc).__name__)
                if self._sender is not None:
                    self._sender.close()
                self._sender = None

    def publish(self, op: str, barcode: str) -> None:
        future = asyncio.get_running_loop().run_in_executor(
            None, self._notify, encode(op, barcode).decode()
        )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        with self._send_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
