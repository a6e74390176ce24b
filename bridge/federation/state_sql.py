"""`FederationState` in one SQL table: the SQLite state file (the workers of one host, and what
survives a restart of one process) or the postgres store's database (every host).

Table `oidc_state (key, value, expires, tag, used)`. Every call runs on one thread of its own
(`bridge.workers.Workers`), so the event loop never waits on the disk or the network and the one
connection is only ever used by that thread.

`redeem` is one transaction: `UPDATE ... SET used = token WHERE key = code AND used IS NULL
RETURNING value` takes the code (PostgreSQL's row lock makes a concurrent second UPDATE wait and
then match nothing; SQLite's `BEGIN IMMEDIATE` serialises writers outright), and the token row
is inserted in the same transaction, so a replay that finds the code used always finds the token
to delete.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bridge.federation.state import Redeemed, StateUnavailable, Taken
from bridge.workers import Workers

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS oidc_state (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
    " expires DOUBLE PRECISION NOT NULL, tag TEXT, used TEXT)",
    "CREATE INDEX IF NOT EXISTS oidc_state_tag ON oidc_state (tag)",
    "CREATE INDEX IF NOT EXISTS oidc_state_expires ON oidc_state (expires)",
)
SWEEP_EVERY = 200  # writes between deletions of expired rows


@dataclass(slots=True)
class SqlState:
    connect: Callable[[], Any]
    p: str  # the driver's placeholder
    begin: str  # the statement that opens a writing transaction
    errors: tuple[type[BaseException], ...]
    clock: Callable[[], float] = time.time
    shared: bool = True
    _conn: Any = None
    _writes: int = 0
    _thread: Workers = field(default_factory=lambda: Workers(1, "oidc-state"))

    def _db(self) -> Any:
        if self._conn is None:
            conn = self.connect()
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def guarded() -> T:
            try:
                return fn(self._db(), *args)
            except self.errors as exc:
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                raise StateUnavailable(type(exc).__name__) from exc

        return await self._thread.run(guarded)

    def _sweep(self, db: Any) -> None:
        self._writes += 1
        if self._writes % SWEEP_EVERY == 1:
            db.execute(f"DELETE FROM oidc_state WHERE expires <= {self.p}", (self.clock(),))  # noqa: S608

    def _upsert(self, db: Any, key: str, value: str, ttl: float, tag: str | None) -> None:
        p = self.p
        db.execute(
            f"INSERT INTO oidc_state (key, value, expires, tag) VALUES ({p}, {p}, {p}, {p})"  # noqa: S608
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " expires = excluded.expires, tag = excluded.tag, used = NULL",
            (key, value, self.clock() + ttl, tag),
        )

    async def put(self, key: str, value: str, ttl: float, *, tag: str | None = None) -> None:
        def write(db: Any) -> None:
            self._upsert(db, key, value, ttl, tag)
            self._sweep(db)

        await self._run(write)

    async def get(self, key: str) -> str | None:
        def read(db: Any) -> str | None:
            row = db.execute(
                f"SELECT value FROM oidc_state WHERE key = {self.p} AND expires > {self.p}"  # noqa: S608
                " AND used IS NULL",
                (key, self.clock()),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def delete(self, key: str) -> None:
        await self._run(
            lambda db: db.execute(f"DELETE FROM oidc_state WHERE key = {self.p}", (key,))  # noqa: S608
        )

    async def delete_tagged(self, tag: str) -> None:
        await self._run(
            lambda db: db.execute(f"DELETE FROM oidc_state WHERE tag = {self.p}", (tag,))  # noqa: S608
        )

    async def put_new(self, key: str, value: str, ttl: float) -> str:
        p = self.p

        def once(db: Any) -> str:
            db.execute(
                f"INSERT INTO oidc_state (key, value, expires) VALUES ({p}, {p}, {p})"  # noqa: S608
                " ON CONFLICT (key) DO NOTHING",
                (key, value, self.clock() + ttl),
            )
            row = db.execute(f"SELECT value FROM oidc_state WHERE key = {p}", (key,)).fetchone()  # noqa: S608
            return str(row[0])

        return await self._run(once)

    async def redeem(self, code: str, token: str, token_ttl: float) -> Redeemed:
        p = self.p

        def take(db: Any) -> Redeemed:
            db.execute(self.begin)
            try:
                row = db.execute(
                    f"UPDATE oidc_state SET used = {p} WHERE key = {p} AND used IS NULL"  # noqa: S608
                    f" AND expires > {p} RETURNING value",
                    (token, code, self.clock()),
                ).fetchone()
                if row is not None:
                    self._upsert(db, token, str(row[0]), token_ttl, None)
                    found = Redeemed(Taken.TAKEN, str(row[0]))
                else:
                    used = db.execute(
                        f"SELECT used FROM oidc_state WHERE key = {p}",  # noqa: S608
                        (code,),
                    ).fetchone()
                    if used is not None and used[0] is not None:
                        db.execute(f"DELETE FROM oidc_state WHERE key = {p}", (used[0],))  # noqa: S608
                        found = Redeemed(Taken.REPLAYED)
                    else:
                        found = Redeemed(Taken.UNKNOWN)
                db.execute("COMMIT")
                return found
            except BaseException:
                with contextlib.suppress(Exception):
                    db.execute("ROLLBACK")
                raise

        return await self._run(take)

    async def aclose(self) -> None:
        def close(db: Any) -> None:
            db.close()
            self._conn = None

        if self._conn is not None:
            with contextlib.suppress(StateUnavailable):
                await self._run(close)
        self._thread.close()


def sqlite_state(path: Path) -> SqlState:
    """The `[state]` SQLite file. WAL, and `synchronous=NORMAL` on this connection: a commit
    is not an fsync (measured: 21 ms per code flow with the default rollback journal under
    load, see docs/federation.md); a power cut may lose the last codes and sign-ons, which
    only means signing in again. A busy file is waited for up to 10 s."""

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return SqlState(connect, "?", "BEGIN IMMEDIATE", (sqlite3.Error,))


def postgres_state(dsn: str) -> SqlState:
    import psycopg

    def connect() -> Any:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)

    return SqlState(connect, "%s", "BEGIN", (psycopg.Error,))
