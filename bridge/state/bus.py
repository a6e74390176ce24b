"""Cache invalidation between workers and hosts.

Each process keeps its verified-credential cache in its own memory (a hit costs no network
round trip). When any process changes what a cached entry vouches for (a PIN change or reset,
a block, a lock, a lock cleared) it publishes the barcode; every other process drops its entry
(and the card's portal sessions, and any local copy of the card's throttle state) on receipt.

- `LocalBus`: one process; nothing to tell.
- `SqliteBus`: the workers of one host share the state file; a publish is a row in
  `invalidations`, each process polls for rows newer than the last it saw every
  `poll_seconds` (0.2 s by default, well inside the one-second bound) on its own thread.
- `RedisBus`: PUBLISH on `<prefix>invalidate`; one subscriber connection per process.

While a bus cannot deliver (Redis down, the subscription lost), invalidations may be missed, so
the process is told (`on_deaf`) and drops its whole cache and stops filling it until the bus is
back (`on_hearing`): every request then goes to the store and the shared throttle, which answer
for themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import redis.asyncio as aioredis
import structlog

from bridge.state.redis_client import UNAVAILABLE

log = structlog.get_logger("bridge.state")

Handler = Callable[[str, str], None]  # (op, barcode)
OPS = frozenset({"invalidate", "clear_lock"})
SEP = "\t"  # never in a barcode (printable, no spaces), allowed in a NOTIFY payload
MAX_BARCODE = 64


def encode(op: str, barcode: str) -> bytes:
    return f"{op}{SEP}{barcode}".encode()


def decode(data: bytes) -> tuple[str, str] | None:
    """(op, barcode) from a message, or None for anything not shaped like ours."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    op, sep, barcode = text.partition(SEP)
    if not sep or op not in OPS or not 0 < len(barcode) <= MAX_BARCODE:
        return None
    if not barcode.isascii() or not barcode.isprintable() or " " in barcode:
        return None
    return op, barcode


class Bus(Protocol):
    async def start(
        self, handler: Handler, on_deaf: Callable[[], None], on_hearing: Callable[[], None]
    ) -> None:
        """Begin delivering other processes' messages to `handler` (on the event loop)."""
        ...

    def publish(self, op: str, barcode: str) -> None:
        """Tell every other process, without blocking the caller."""
        ...

    async def flush(self) -> None:
        """Wait until everything published so far has left (the CLI exits right after)."""
        ...

    async def aclose(self) -> None: ...


class LocalBus:
    """One process: nobody else to tell."""

    async def start(
        self, handler: Handler, on_deaf: Callable[[], None], on_hearing: Callable[[], None]
    ) -> None:
        return None

    def publish(self, op: str, barcode: str) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS invalidations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    op TEXT NOT NULL,
    barcode TEXT NOT NULL,
    at REAL NOT NULL
)
"""
KEEP_ROWS_SECONDS = 600  # rows older than this are deleted by whoever publishes


class SqliteBus:
    """Rows in the shared state file, polled by every process on its own thread."""

    def __init__(self, path: Path, poll_seconds: float) -> None:
        self.path = path
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._pending: list[asyncio.Future[None]] = []

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(_SQLITE_SCHEMA)
        return conn

    async def start(
        self, handler: Handler, on_deaf: Callable[[], None], on_hearing: Callable[[], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        reader = await asyncio.to_thread(self._connect)
        last = (
            await asyncio.to_thread(
                lambda: reader.execute("SELECT max(id) FROM invalidations").fetchone()
            )
        )[0] or 0

        def poll() -> None:
            nonlocal last
            try:
                while not self._stop.wait(self.poll_seconds):
                    try:
                        rows = reader.execute(
                            "SELECT id, op, barcode FROM invalidations WHERE id > ? ORDER BY id",
                            (last,),
                        ).fetchall()
                    except sqlite3.Error as exc:
                        log.warning("state_poll_failed", error=str(exc)[:200])
                        continue
                    for row_id, op, barcode in rows:
                        last = row_id
                        if op in OPS:
                            with contextlib.suppress(RuntimeError):  # loop closed: stopping
                                loop.call_soon_threadsafe(handler, op, barcode)
            finally:
                reader.close()

        self._thread = threading.Thread(target=poll, name="state-bus", daemon=True)
        self._thread.start()

    def _insert(self, op: str, barcode: str) -> None:
        with self._write_lock:
            if self._writer is None:
                self._writer = self._connect()
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                now = time.time()
                self._writer.execute(
                    "INSERT INTO invalidations (op, barcode, at) VALUES (?, ?, ?)",
                    (op, barcode, now),
                )
                self._writer.execute(
                    "DELETE FROM invalidations WHERE at < ?", (now - KEEP_ROWS_SECONDS,)
                )
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise

    def publish(self, op: str, barcode: str) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, self._insert, op, barcode)
        self._pending.append(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):
            self._pending.remove(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("state_publish_failed", error=str(future.exception())[:200])

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        self._stop.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None


class RedisBus:
    """PUBLISH / SUBSCRIBE on one channel; resubscribes after Redis comes back."""

    def __init__(self, client: aioredis.Redis, prefix: str, retry_seconds: float) -> None:
        self.client = client
        self.channel = f"{prefix}invalidate".encode()
        self.retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.listening = asyncio.Event()

    async def start(
        self, handler: Handler, on_deaf: Callable[[], None], on_hearing: Callable[[], None]
    ) -> None:
        self._task = asyncio.create_task(
            self._listen(handler, on_deaf, on_hearing), name="state-bus"
        )

    async def _listen(
        self, handler: Handler, on_deaf: Callable[[], None], on_hearing: Callable[[], None]
    ) -> None:
        deaf = False
        while True:
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                if deaf:
                    deaf = False
                    on_hearing()
                self.listening.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None or message.get("type") != "message":
                        continue
                    parsed = decode(message["data"])
                    if parsed is not None:
                        handler(*parsed)
            except UNAVAILABLE as exc:
                self.listening.clear()
                if not deaf:
                    deaf = True
                    log.error("state_bus_lost", error=type(exc).__name__)
                    on_deaf()
            finally:
                with contextlib.suppress(*UNAVAILABLE):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]
            await asyncio.sleep(self.retry_seconds)

    def publish(self, op: str, barcode: str) -> None:
        task = asyncio.ensure_future(self._publish(op, barcode))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, op: str, barcode: str) -> None:
        try:
            await self.client.publish(self.channel, encode(op, barcode))
        except UNAVAILABLE as exc:
            # Nobody else can hear either while Redis is down: they went deaf and dropped
            # their caches, so nothing stale survives this loss.
            log.error("state_publish_failed", error=type(exc).__name__)

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
