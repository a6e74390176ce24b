"""PIN-page sessions shared by every worker and host (a load balancer may send a patron's next
page to another process), kept in the `[state]` backend: Redis, or the SQL state (the SQLite
file of one host's workers, the postgres store's database with `throttle.state = "store"`).

The `SessionStore` stays the pages' synchronous view; `SharedSessions` (an ASGI wrapper) makes
it follow the shared copy around each request: before the page runs, the cookie's session is
read from the shared store (the authority: a logout or PIN change on another host has removed
it there); what the page changed (a sign-in, a sign-out) is written back before the response
starts, so a redirect that lands on another host finds it. A patron's sessions ended by an
invalidation (PIN change, block, lock: the core's `on_invalidate`, on every host through the
bus) are deleted from the shared store too. The CSRF key is shared the same way (created once,
read by every process), so a form rendered by one host is accepted by another.

Without shared state (one process) nothing here runs: `local()` returns None.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.portal.sessions import Session, SessionStore, plausible_id

if TYPE_CHECKING:
    from bridge.config import Config

log = structlog.get_logger("bridge.portal")

Change = tuple[str, str, Session | None]  # ("put", sid, session) | ("end", sid, None)
_CHANGES: contextvars.ContextVar[list[Change] | None] = contextvars.ContextVar(
    "portal_session_changes", default=None
)


class Shared(Protocol):
    async def load(self, sid: str) -> Session | None: ...
    async def apply(self, changes: list[Change], ttl: float) -> None: ...
    async def end_patron(self, barcode: str) -> None: ...
    async def csrf_key(self) -> bytes: ...
    async def aclose(self) -> None: ...


class RedisSessions:
    """`<prefix>sess:<id>` hash (barcode, created, last_seen) expiring after the idle time;
    `<prefix>psess:<barcode>` the set of a patron's ids (so all can be ended at once)."""

    END_PATRON = """
    local sids = redis.call('SMEMBERS', KEYS[1])
    for _, sid in ipairs(sids) do redis.call('DEL', ARGV[1] .. sid) end
    redis.call('DEL', KEYS[1])
    return #sids
    """

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._end = client.register_script(self.END_PATRON)

    async def load(self, sid: str) -> Session | None:
        row = await self.client.hgetall(f"{self.prefix}sess:{sid}")
        if not row:
            return None
        return Session(row[b"barcode"].decode(), float(row[b"created"]), float(row[b"last_seen"]))

    async def apply(self, changes: list[Change], ttl: float) -> None:
        pipe = self.client.pipeline(transaction=True)
        for op, sid, session in changes:
            key = f"{self.prefix}sess:{sid}"
            if op == "put" and session is not None:
                pipe.hset(
                    key,
                    mapping={
                        "barcode": session.barcode,
                        "created": session.created,
                        "last_seen": session.last_seen,
                    },
                )
                pipe.expire(key, max(1, int(ttl)))
                pipe.sadd(f"{self.prefix}psess:{session.barcode}", sid)
                pipe.expire(f"{self.prefix}psess:{session.barcode}", max(1, int(ttl)) * 48)
            elif op == "end":
                pipe.delete(key)
        await pipe.execute()

    async def end_patron(self, barcode: str) -> None:
        await self._end(keys=[f"{self.prefix}psess:{barcode}"], args=[f"{self.prefix}sess:"])

    async def csrf_key(self) -> bytes:
        key = f"{self.prefix}csrf-key"
        await self.client.set(key, secrets.token_bytes(32), nx=True)
        value: bytes = await self.client.get(key)
        return value

    async def aclose(self) -> None:
        await self.client.aclose()


_SQL_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS portal_sessions (sid TEXT PRIMARY KEY, barcode TEXT NOT NULL,"
    " created DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS portal_sessions_barcode ON portal_sessions (barcode)",
    "CREATE TABLE IF NOT EXISTS portal_keys (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class SqlSessions:
    """The same in two tables of the SQLite state file or the postgres store's database, on
    one thread of its own (the event loop never waits on it)."""

    def __init__(self, connect: Any, p: str) -> None:
        self.connect = connect
        self.p = p
        self._conn: Any = None
        self._lock = asyncio.Lock()

    def _db(self) -> Any:
        if self._conn is None:
            conn = self.connect()
            for statement in _SQL_SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:  # one statement at a time on the one connection
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception:
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                raise

    async def load(self, sid: str) -> Session | None:
        def read() -> Session | None:
            row = (
                self._db()
                .execute(
                    f"SELECT barcode, created, last_seen FROM portal_sessions WHERE sid = {self.p}",  # noqa: S608
                    (sid,),
                )
                .fetchone()
            )
            return None if row is None else Session(row[0], row[1], row[2])

        session: Session | None = await self._run(read)
        return session

    async def apply(self, changes: list[Change], ttl: float) -> None:
        p = self.p

        def write() -> None:
            db = self._db()
            for op, sid, session in changes:
                if op == "put" and session is not None:
                    db.execute(
                        "INSERT INTO portal_sessions (sid, barcode, created, last_seen)"  # noqa: S608
                        f" VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (sid) DO UPDATE SET"
                        " last_seen = excluded.last_seen",
                        (sid, session.barcode, session.created, session.last_seen),
                    )
                    db.execute(
                        f"DELETE FROM portal_sessions WHERE last_seen < {p}",  # noqa: S608
                        (session.last_seen - ttl,),
                    )
                elif op == "end":
                    db.execute(f"DELETE FROM portal_sessions WHERE sid = {p}", (sid,))  # noqa: S608

        await self._run(write)

    async def end_patron(self, barcode: str) -> None:
        def delete() -> None:
            self._db().execute(
                f"DELETE FROM portal_sessions WHERE barcode = {self.p}",  # noqa: S608
                (barcode,),
            )

        await self._run(delete)

    async def csrf_key(self) -> bytes:
        p = self.p

        def key() -> bytes:
            db = self._db()
            db.execute(
                f"INSERT INTO portal_keys (name, value) VALUES ('csrf', {p})"  # noqa: S608
                " ON CONFLICT (name) DO NOTHING",
                (secrets.token_hex(32),),
            )
            row = db.execute("SELECT value FROM portal_keys WHERE name = 'csrf'").fetchone()
            return bytes.fromhex(row[0])

        value: bytes = await self._run(key)
        return value

    async def aclose(self) -> None:
        if self._conn is not None:
            await asyncio.to_thread(self._conn.close)
            self._conn = None


def from_config(config: Config, store: Any) -> Shared | None:
    """The shared session store `[state]` implies, or None for one process."""
    backend = config.state_backend
    if backend == "redis":
        from bridge.state.redis_client import connect
        from bridge.state.shared import redis_ca

        return RedisSessions(connect(config.state, redis_ca(config)), config.state.key_prefix)
    if backend == "sqlite" and config.server.worker_count() > 1:
        path: Path = config.state_path

        def sqlite_connect() -> sqlite3.Connection:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=10000")
            return conn

        return SqlSessions(sqlite_connect, "?")
    if backend == "store":
        dsn = getattr(store, "_dsn", "")
        if dsn:
            import psycopg

            return SqlSessions(lambda: psycopg.connect(dsn, autocommit=True), "%s")
    return None


async def recording_sessions(
    old: SessionStore, config: Config, store: Any, shared: Shared | None = None
) -> RecordingSessions | None:
    """With shared state: a `RecordingSessions` like `old` (same time-outs) on the shared store
    (or on `shared`, e.g. the OIDC provider's single sign-on sessions), with the shared CSRF key;
    None for one process. Used by the PIN pages, the staff desk (whose session keys start
    `staff `, with a space, so they never name a patron) and the OIDC provider."""
    if shared is None:
        shared = from_config(config, store)
    if shared is None:
        return None
    try:
        key: bytes | None = await shared.csrf_key()
    except Exception as exc:  # noqa: BLE001 - any backend's error: the state is away
        # Forms then only work on the host that rendered them, until a restart with the
        # state reachable; sessions themselves are still read from the shared state.
        log.error("portal_csrf_key_unshared", error=type(exc).__name__)
        key = None
    sessions = RecordingSessions(
        old.clock,
        idle_seconds=old.idle_seconds,
        max_seconds=old.max_seconds,
        max_sessions=old.max_sessions,
        csrf_key=key,
    )
    sessions.shared = shared
    sessions._tasks = set()
    return sessions


class RecordingSessions(SessionStore):
    """A `SessionStore` that notes what a request changed (for `SharedSessions` to write back),
    and mirrors every ending of a patron's sessions to the shared store."""

    shared: Shared | None = None
    _tasks: set[asyncio.Task[None]]

    def create(self, barcode: str) -> str:
        sid = super().create(barcode)
        changes = _CHANGES.get()
        if changes is not None:
            changes.append(("put", sid, self._sessions[sid]))
        return sid

    def end(self, sid: str | None) -> None:
        super().end(sid)
        changes = _CHANGES.get()
        if changes is not None and sid is not None:
            changes.append(("end", sid, None))

    def end_patron(self, barcode: str) -> asyncio.Future[None] | None:
        super().end_patron(barcode)
        if self.shared is None:
            return None
        try:
            task = asyncio.get_running_loop().create_task(self._end_shared(barcode))
        except RuntimeError:  # no loop: nothing shared to tell
            return None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _end_shared(self, barcode: str) -> None:
        assert self.shared is not None
        try:
            await self.shared.end_patron(barcode)
        except Exception as exc:  # noqa: BLE001 - logged; the local sessions are gone anyway
            log.error("portal_session_end_failed", error=type(exc).__name__)

    def adopt(self, sid: str, session: Session | None) -> None:
        """Make the local view of one id what the shared store says."""
        if session is None:
            self._sessions.pop(sid, None)
        else:
            self._sessions[sid] = session


class SharedSessions:
    """ASGI wrapper: the cookie's session read from the shared store before the page, changes
    written back before the response starts."""

    def __init__(self, app: ASGIApp, sessions: RecordingSessions, cookie: str) -> None:
        self.app = app
        self.sessions = sessions
        self.cookie = cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        shared = self.sessions.shared
        if scope["type"] != "http" or shared is None:
            await self.app(scope, receive, send)
            return
        sid = _cookie(scope, self.cookie)
        if sid is not None:
            try:
                self.sessions.adopt(sid, await shared.load(sid))
            except Exception as exc:  # noqa: BLE001 - any backend's error: the state is away
                log.error("portal_sessions_unavailable", error=type(exc).__name__)
                await _unavailable(send)
                return
        changes: list[Change] = []
        token = _CHANGES.set(changes)
        ttl = self.sessions.idle_seconds

        async def send_after_writing(message: Message) -> None:
            if message["type"] == "http.response.start":
                touched = list(changes)
                if sid is not None and not any(c[1] == sid for c in changes):
                    session = self.sessions._sessions.get(sid)
                    if session is not None:
                        touched.append(("put", sid, session))
                if touched:
                    try:
                        await shared.apply(touched, ttl)
                    except Exception as exc:  # noqa: BLE001 - logged; this host still knows
                        log.error("portal_sessions_unwritten", error=type(exc).__name__)
            await send(message)

        try:
            await self.app(scope, receive, send_after_writing)
        finally:
            _CHANGES.reset(token)


async def _unavailable(send: Send) -> None:
    """503 while the shared sessions cannot be read (a session we cannot check is no session,
    and sending the patron to the login page would not help either)."""
    body = b"The PIN pages are unavailable for a moment. Please try again shortly.\n"
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"5"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            text: str = bytes(value).decode("latin-1")
            for part in text.split(";"):
                k, _, v = part.strip().partition("=")
                if k == name and plausible_id(v):
                    return v
    return None
