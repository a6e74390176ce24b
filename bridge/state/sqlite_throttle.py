"""Throttle counters persisted in a SQLite file, written behind on one thread.

The core keeps counters in memory (a check costs a dict lookup); every change is queued to a
single writer thread, so the event loop never waits on a disk write and writes stay ordered.
On start the file is read once, so a lock set before a restart still holds after it.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bridge.core.throttle import Counter
from bridge.files import create_private

_SCHEMA = """
CREATE TABLE IF NOT EXISTS throttle (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_failure REAL NOT NULL,
    blocked_until REAL NOT NULL,
    locked INTEGER NOT NULL
)
"""


class SqliteThrottleBackend:
    def __init__(self, path: Path) -> None:
        self.path = path
        create_private(path)  # 0600 (and its -wal/-shm), in a 0700 directory if new
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="throttle-db")
        self._conn: sqlite3.Connection | None = None
        self._writer.submit(self._open).result()

    def _open(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute(_SCHEMA)
        self._conn = conn

    def load(self) -> dict[str, Counter]:
        return self._writer.submit(self._load).result()

    def _load(self) -> dict[str, Counter]:
        assert self._conn is not None
        rows = self._conn.execute(
            "SELECT key, failures, last_failure, blocked_until, locked FROM throttle"
        ).fetchall()
        return {row[0]: Counter(row[1], row[2], row[3], bool(row[4])) for row in rows}

    def get(self, key: str) -> Counter | None:
        """Read one key from disk (the CLI uses it; the daemon reads its memory)."""
        return self._writer.submit(self._get, key).result()

    def _get(self, key: str) -> Counter | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT failures, last_failure, blocked_until, locked FROM throttle WHERE key = ?",
            (key,),
        ).fetchone()
        return None if row is None else Counter(row[0], row[1], row[2], bool(row[3]))

    def save(self, key: str, counter: Counter | None) -> None:
        snapshot = None if counter is None else dataclasses.replace(counter)
        self._writer.submit(self._save, key, snapshot)

    def _save(self, key: str, counter: Counter | None) -> None:
        assert self._conn is not None
        if counter is None:
            self._conn.execute("DELETE FROM throttle WHERE key = ?", (key,))
        else:
            self._conn.execute(
                "INSERT INTO throttle (key, failures, last_failure, blocked_until, locked) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET failures=excluded.failures,"
                " last_failure=excluded.last_failure, blocked_until=excluded.blocked_until,"
                " locked=excluded.locked",
                (
                    key,
                    counter.failures,
                    counter.last_failure,
                    counter.blocked_until,
                    counter.locked,
                ),
            )

    def flush(self) -> None:
        """Wait until every queued write is on disk."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        if self._conn is None:  # already closed (`lockout clear` closes early to flush)
            return
        self.flush()
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._writer.submit(conn.close).result()
        self._writer.shutdown(wait=True)
