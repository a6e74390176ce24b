"""The per-card decision history the desk shows: the last decisions for one card, from the
bridge's own SQLite file, never from log files.

The hot path pays one `deque.append` per decision (`Audit.taps`): no hashing, no I/O, no lock
shared with a writer. A background task takes what queued up about once a second and writes it
in one transaction in a worker thread; the card is stored as a keyed hash (HMAC under a key
derived from the pepper), so the table lists no card numbers. Rows older than `history_days`
are deleted by the same task once an hour. The queue is bounded: under a flood, the oldest
unwritten entries are dropped rather than memory growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from bridge import logs
from bridge.core.auth import valid_barcode
from bridge.core.patron import Context, Decision

log = structlog.get_logger("bridge.staff")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    card BLOB NOT NULL,
    at REAL NOT NULL,
    protocol TEXT NOT NULL,
    client TEXT NOT NULL,
    source TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_card_at ON decisions (card, at);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
"""

FIELD = 128
Pending = tuple[float, str, str, str, str, str, str]  # at, barcode, protocol, client, source, ...


@dataclass(frozen=True, slots=True)
class Entry:
    at: float
    protocol: str
    client: str
    source: str
    outcome: str
    reason: str


class DecisionHistory:
    def __init__(
        self,
        path: Path,
        key: bytes,
        *,
        keep_days: int = 90,
        max_queue: int = 50_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._key = key
        self.keep_seconds = keep_days * 86400.0
        self.clock = clock
        self._queue: deque[Pending] = deque(maxlen=max_queue)
        self._task: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._last_purge = 0.0
        self._init()

    def _init(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def card_key(self, barcode: str) -> bytes:
        return hmac.new(self._key, barcode.encode(), hashlib.sha256).digest()[:16]

    # -- the hot path ---------------------------------------------------------------------
    def tap(self, barcode: str, ctx: Context, decision: Decision) -> None:
        """`Audit.taps` hook: queue the decision (malformed barcodes are not kept)."""
        if valid_barcode(barcode):
            self._queue.append(
                (
                    self.clock(),
                    barcode,
                    ctx.protocol,
                    ctx.client,
                    ctx.source,
                    decision.outcome.value,
                    decision.reason,
                )
            )

    # -- write-behind ---------------------------------------------------------------------
    def start(self, interval: float = 1.0) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(interval), name="history")

    async def _run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
                if self.clock() - self._last_purge > 3600:
                    await self.purge()
            except sqlite3.Error as exc:
                log.error("history_write_failed", error=type(exc).__name__)

    async def flush(self) -> int:
        """Write what is queued (in a worker thread). Returns how many rows were written."""
        async with self._write_lock:
            batch: list[Pending] = []
            while self._queue:
                batch.append(self._queue.popleft())
            if batch:
                await asyncio.to_thread(self._write, batch)
            return len(batch)

    def _write(self, batch: list[Pending]) -> None:
        rows = [
            (
                self.card_key(barcode),
                at,
                logs.clip(protocol, FIELD),
                logs.clip(client, FIELD),
                logs.clip(source, FIELD),
                outcome,
                logs.clip(reason, FIELD),
            )
            for at, barcode, protocol, client, source, outcome, reason in batch
        ]
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            conn.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?)", rows)

    async def purge(self) -> int:
        self._last_purge = self.clock()
        horizon = self._last_purge - self.keep_seconds
        return await asyncio.to_thread(self._purge, horizon)

    def _purge(self, horizon: float) -> int:
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn, conn:
            return conn.execute("DELETE FROM decisions WHERE at < ?", (horizon,)).rowcount

    # -- the desk -------------------------------------------------------------------------
    async def recent(self, barcode: str, limit: int = 20) -> list[Entry]:
        await self.flush()
        return await asyncio.to_thread(self._recent, self.card_key(barcode), limit)

    def _recent(self, card: bytes, limit: int) -> list[Entry]:
        horizon = self.clock() - self.keep_seconds
        with contextlib.closing(sqlite3.connect(self.path, timeout=10)) as conn:
            rows = conn.execute(
                "SELECT at, protocol, client, source, outcome, reason FROM decisions "
                "WHERE card = ? AND at >= ? ORDER BY at DESC, rowid DESC LIMIT ?",
                (card, horizon, limit),
            ).fetchall()
        return [Entry(*row) for row in rows]

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(sqlite3.Error):
            await self.flush()
