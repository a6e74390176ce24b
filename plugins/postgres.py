"""The bridge's own store on PostgreSQL, so several bridge hosts can share one patron store.

Same features as the embedded SQLite store (patrons, PIN hashes, reset tokens), with these
PostgreSQL-specific choices:

- psycopg 3 async with a `psycopg_pool` pool; the event loop never waits on a socket.
- Every call is bounded by `query_timeout` on the caller's side: the database work runs as its
  own task and the caller stops waiting at the deadline, raising `StoreUnavailable`. (Cancelling
  psycopg in place is not enough: on cancellation it spends up to ten more seconds asking the
  server to cancel.) The server also gets `statement_timeout`/`lock_timeout`, so abandoned work
  stops there too. A connection that failed or timed out is closed, never reused; the pool
  replaces it, so a restarted database is used again without restarting the bridge.
- A PIN change is one UPDATE in one transaction: a backend killed at any instant leaves the old
  or the new hash, never neither, and the tests prove it with `pg_terminate_backend`.
- Schema changes are numbered migrations in `patron_bridge_migrations`, applied under an
  advisory lock so two bridge hosts starting together do not race, and only after the pepper
  check (`bridge.core.pepper`): a refused start writes nothing.
- Barcodes and every other value are bound parameters; SQL text is constant.

Stores never hash: the core's `PinHasher` arrives in `StoreServices`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import msgspec
import psycopg
import psycopg.conninfo
import psycopg_pool
import structlog
from psycopg import sql

from bridge.core import pepper as pepper_check
from bridge.core.admin import (
    Listing,
    PatronDetails,
    PatronInsert,
    PatronUpdate,
    update_params,
    update_sql,
    update_types,
)
from bridge.core.patron import Patron
from bridge.core.pepper import Pepper, StoredPepper
from bridge.core.pin import PinHasher
from bridge.core.secret import Secret
from bridge.core.store import (
    Health,
    NewPatron,
    StoreError,
    StorePlugin,
    StoreServices,
    StoreUnavailable,
    UnknownPatron,
    Verification,
    same_barcode,
)
from bridge.core.throttle import Counter, ThrottleRules
from bridge.records import (
    OWN_STORE_CAPABILITIES,
    hash_of,
    load_demo,
    one_time_since,
    verify_found,
)
from bridge.settings import Port, Section

T = TypeVar("T")
log = structlog.get_logger("plugins.postgres")
Conn = psycopg.AsyncConnection[tuple[Any, ...]]

Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]


class PgConnectSettings(Section, frozen=True):
    """Connection keys shared by every PostgreSQL-backed plugin (`postgres`, `evergreen-sql`).

    Either `dsn` (a libpq conninfo string or URI, without the password) or the separate keys
    (`host`, `port`, `dbname`, `user`, `sslmode`), not both: with a DSN those are not used. The
    password comes from `password`, `password_file` or `password_env`; timeouts and pool keys
    apply either way.
    """

    dsn: str | None = None
    host: str = "127.0.0.1"
    port: Port = 5432
    dbname: str = "patron_bridge"
    user: str = "patron_bridge"
    password: str | None = None
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    application_name: str = "patron-bridge"
    pool_min: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    pool_max: Annotated[int, msgspec.Meta(ge=1, le=200)] = 10
    connect_timeout: Seconds = 5.0
    query_timeout: Seconds = 5.0
    # How long the pool keeps trying to re-open a lost connection slot before giving it up
    # (a given-up slot is re-created on the next demand, so this never needs a restart).
    reconnect_timeout: Seconds = 300.0


def conninfo(s: PgConnectSettings, base_dir: str, *, read_only: bool = False) -> str:
    """The libpq connection string (the DSN, or one built from the keys), with timeouts set.

    `statement_timeout` and `lock_timeout` make the server stop work the bridge has stopped
    waiting for; `read_only` makes every transaction read-only (the ILS connectors).
    """
    timeout_ms = int(s.query_timeout * 1000)
    options = f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
    options += f" -c idle_in_transaction_session_timeout={max(timeout_ms * 2, 1000)}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    params: dict[str, Any] = {
        "connect_timeout": max(1, round(s.connect_timeout)),
        "application_name": s.application_name,
        "options": options,
    }
    if s.dsn is None:
        params.update(host=s.host, port=s.port, dbname=s.dbname, user=s.user, sslmode=s.sslmode)
    if s.password is not None:
        params["password"] = s.password
    if s.sslrootcert is not None:
        root = Path(s.sslrootcert)
        params["sslrootcert"] = str(root if root.is_absolute() else Path(base_dir) / root)
    return psycopg.conninfo.make_conninfo(s.dsn or "", **params)


class PgPool:
    """A psycopg pool with caller-side deadlines and no reuse of a connection in doubt.

    `run(op)` hands `op` a connection and returns its result, or raises `StoreUnavailable`
    within `query_timeout` (pool exhausted, server down, network stalled, query slow).
    """

    def __init__(self, name: str, settings: PgConnectSettings, dsn: str) -> None:
        self.name = name
        self.timeout = settings.query_timeout
        self.connect_timeout = settings.connect_timeout
        self.pool: psycopg_pool.AsyncConnectionPool[Conn] = psycopg_pool.AsyncConnectionPool(
            dsn,
            kwargs={"autocommit": True},
            min_size=settings.pool_min,
            max_size=max(settings.pool_max, settings.pool_min, 1),
            timeout=settings.query_timeout,
            reconnect_timeout=settings.reconnect_timeout,
            name=f"patron-bridge-{name}",
            open=False,
        )
        # Work abandoned at its deadline keeps running until psycopg lets go of it.
        self._abandoned: set[asyncio.Task[Any]] = set()

    async def open(self) -> None:
        try:
            await self.pool.open(wait=True, timeout=self.connect_timeout)
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
            await self.pool.close()
            raise StoreUnavailable(f"{self.name}: cannot connect: {_short(exc)}") from None

    async def run(
        self, op: Callable[[Conn], Awaitable[T]], what: str = "query", *, retry: bool = True
    ) -> T:
        """Run `op` on a pooled connection within the deadline.

        `retry`: when the connection turns out to be dead (the server restarted, or an admin
        ended the backend), check the pool and run `op` once more on a live connection. Only
        for reads: a write whose connection died may or may not have committed, so the caller
        is told "store unavailable" and decides (a PIN change is simply tried again).
        """
        task = asyncio.ensure_future(self._attempts(op, retry))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.timeout)
        except asyncio.CancelledError:
            self._abandon(task)
            raise
        if not done:
            self._abandon(task)
            raise StoreUnavailable(f"{self.name}: {what} timed out after {self.timeout:g}s")
        return task.result()

    def _abandon(self, task: asyncio.Task[Any]) -> None:
        task.cancel()
        self._abandoned.add(task)
        task.add_done_callback(_reap(self._abandoned))

    async def _attempts(self, op: Callable[[Conn], Awaitable[T]], retry: bool) -> T:
        try:
            return await self._with_conn(op)
        except _Lost:
            if not retry:
                raise
        await self.pool.check()  # drop every other dead idle connection too
        return await self._with_conn(op)

    async def _with_conn(self, op: Callable[[Conn], Awaitable[T]]) -> T:
        try:
            conn = await self.pool.getconn()
        except psycopg_pool.PoolTimeout:
            raise StoreUnavailable(f"{self.name}: no database connection available") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"{self.name}: {_short(exc)}") from None
        clean = False
        try:
            result = await op(conn)
            clean = True
            return result
        except psycopg.OperationalError as exc:
            lost = conn.broken or conn.closed
            raise (_Lost if lost else StoreUnavailable)(f"{self.name}: {_short(exc)}") from None
        except Exception:
            # A constraint error, or the operation's own refusal (UnknownPatron): the
            # transaction block already rolled back, so an idle connection can be reused.
            clean = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            raise
        finally:
            if not clean and not conn.closed:
                # Timed out, cancelled or lost: its state is unknown, so it is never reused.
                # close() only drops the socket; it does not wait on the network.
                await conn.close()
            await self.pool.putconn(conn)

    async def health(self) -> Health:
        async def probe(conn: Conn) -> None:
            await conn.execute("SELECT 1")

        await self.run(probe, "health check")
        stats = self.pool.get_stats()
        size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
        return Health(True, f"{self.name} ok (pool {size}, idle {idle})")

    async def close(self) -> None:
        for task in list(self._abandoned):
            task.cancel()
        if self._abandoned:
            await asyncio.gather(*self._abandoned, return_exceptions=True)
        await self.pool.close(timeout=self.connect_timeout)


class _Lost(StoreUnavailable):
    """The connection died under the operation (not a timeout): worth one retry."""


def _reap(tasks: set[asyncio.Task[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log "never retrieved"

    return done


def _short(exc: BaseException) -> str:
    """The first line of a driver error: enough to act on, no connection string."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class PostgresSettings(PgConnectSettings, frozen=True):
    migrate: bool = True  # apply pending migrations at open (needs CREATE on the schema)
    demo: bool = False
    demo_file: str = "demo-patrons.csv"


MIGRATIONS: list[str] = [
    # 1: patrons and reset tokens
    """
    CREATE TABLE patrons (
        barcode        text PRIMARY KEY,
        record_id      text NOT NULL UNIQUE,
        name           text NOT NULL DEFAULT '',
        email          text,
        category       text NOT NULL DEFAULT '',
        expires        date,
        blocked        boolean NOT NULL DEFAULT false,
        blocked_reason text,
        fines          numeric(12, 2) NOT NULL DEFAULT 0,
        home_library   text,
        pin_hash       text,
        pin_changed_at timestamptz,
        updated_at     timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX patrons_email ON patrons (lower(email));
    CREATE TABLE reset_tokens (
        token_hash bytea PRIMARY KEY,
        barcode    text NOT NULL,
        expires_at timestamptz NOT NULL,
        used_at    timestamptz
    );
    CREATE INDEX reset_tokens_barcode ON reset_tokens (barcode);
    """,
    # 2: throttle counters, for `[throttle] state = "store"` (shared by every bridge host)
    """
    CREATE TABLE throttle_counters (
        key           text PRIMARY KEY,
        failures      integer NOT NULL,
        last_failure  double precision NOT NULL,
        blocked_until double precision NOT NULL,
        locked        boolean NOT NULL
    );
    """,
    # 3: patrons an import left without a PIN (policy) await a reset; the pepper's fingerprint
    """
    ALTER TABLE patrons ADD COLUMN needs_reset boolean NOT NULL DEFAULT false;
    CREATE TABLE bridge_meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );
    """,
    # 4: the live shared throttle (bridge.state.postgres_guard): reservations in flight and the
    # global guard's window, next to the counters
    """
    CREATE TABLE throttle_reservations (
        id      text PRIMARY KEY,
        barcode text NOT NULL,
        source  text NOT NULL,
        expires double precision NOT NULL
    );
    CREATE INDEX throttle_reservations_barcode ON throttle_reservations (barcode);
    CREATE INDEX throttle_reservations_source ON throttle_reservations (source);
    CREATE INDEX throttle_reservations_expires ON throttle_reservations (expires);
    CREATE TABLE throttle_global_failures (at double precision NOT NULL);
    CREATE INDEX throttle_global_failures_at ON throttle_global_failures (at);
    """,
]

# Any fixed 64-bit number; every bridge host agrees on it.
_MIGRATION_LOCK = 0x7061_7472_6F6E_0001

_COLUMNS = (
    "barcode, record_id, name, email, category, expires, blocked, blocked_reason, fines, "
    "home_library"
)
# Every statement is a constant; values are always bound parameters.
_BY_BARCODE = (
    f"SELECT {_COLUMNS}, pin_hash, needs_reset, pin_changed_at FROM patrons WHERE barcode = %s"  # noqa: S608
)
_BY_EMAIL = f"SELECT {_COLUMNS} FROM patrons WHERE lower(email) = lower(%s) LIMIT 50"  # noqa: S608
_BY_RECORD = f"SELECT {_COLUMNS} FROM patrons WHERE record_id = %s"  # noqa: S608
_PAGE = f"SELECT {_COLUMNS} FROM patrons WHERE barcode > %s ORDER BY barcode LIMIT 500"  # noqa: S608
_SET_HASH = (
    "UPDATE patrons SET pin_hash = %s, pin_changed_at = now(), updated_at = now(), "
    "needs_reset = %s WHERE barcode = %s"
)
_DETAILS = f"{_COLUMNS}, coalesce(pin_hash, '') <> '', needs_reset"
_BY_BARCODES = f"SELECT {_DETAILS} FROM patrons WHERE barcode = ANY(%s)"  # noqa: S608
_LISTINGS = {
    Listing.ALL: "",
    Listing.BLOCKED: "AND blocked ",
    Listing.EXPIRED: "AND expires IS NOT NULL AND expires < %(today)s ",
    Listing.NO_PIN: "AND coalesce(pin_hash, '') = '' ",
}
_LIST = {
    which: f"SELECT {_DETAILS} FROM patrons WHERE barcode > %(after)s {cond}"  # noqa: S608
    "ORDER BY barcode LIMIT %(limit)s"
    for which, cond in _LISTINGS.items()
}
_UPDATE = update_sql("%s", "true", "false")
# `patron import` loads a batch with COPY (one stream, no per-row statement): new patrons
# straight into the table, updates into a temporary table that one UPDATE ... FROM applies.
_COPY_NEW = (
    f"COPY patrons ({_COLUMNS}, pin_hash, pin_changed_at, needs_reset, updated_at) FROM STDIN"
)
_UPDATE_TYPES = update_types(
    {
        "record_id": "text",
        "name": "text",
        "email": "text",
        "category": "text",
        "expires": "date",
        "fines": "numeric(12, 2)",
        "home_library": "text",
    },
    "boolean",
    "text",
    "timestamptz",
)
_CREATE_UPDATES = (
    "CREATE TEMP TABLE import_updates ("
    + ", ".join(f"c{i} {t}" for i, t in enumerate(_UPDATE_TYPES))
    + ") ON COMMIT DROP"
)
_COPY_UPDATES = "COPY import_updates FROM STDIN"


def _update_from_copy() -> str:
    """`_UPDATE` with each bound value read from the temporary table's matching column."""
    parts = _UPDATE.replace(
        " WHERE barcode = %s", " FROM import_updates u WHERE patrons.barcode = %s"
    ).split("%s")
    if len(parts) != len(_UPDATE_TYPES) + 1:  # update_sql and update_types disagree
        raise RuntimeError("import update columns out of step")
    out = [parts[0]]
    for i, part in enumerate(parts[1:]):
        out += [f"u.c{i}", part]
    return "".join(out)


_UPDATE_FROM_COPY = _update_from_copy()
_PEPPERED = (
    "SELECT EXISTS (SELECT 1 FROM patrons "
    "WHERE pin_hash LIKE '$argon2id$%%' OR pin_hash LIKE '$scrypt$%%')"
)
_SET_BLOCKED = (
    "UPDATE patrons SET blocked = %s, blocked_reason = %s, updated_at = now() "  # noqa: S608
    f"WHERE barcode = %s RETURNING {_COLUMNS}"
)
_INSERT = (
    f"INSERT INTO patrons ({_COLUMNS}, pin_hash, pin_changed_at, updated_at) "  # noqa: S608
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now())"
)
_UPSERT = (
    _INSERT + " ON CONFLICT (barcode) DO UPDATE SET record_id = EXCLUDED.record_id, "
    "name = EXCLUDED.name, email = EXCLUDED.email, category = EXCLUDED.category, "
    "expires = EXCLUDED.expires, blocked = EXCLUDED.blocked, "
    "blocked_reason = EXCLUDED.blocked_reason, fines = EXCLUDED.fines, "
    "home_library = EXCLUDED.home_library, pin_hash = EXCLUDED.pin_hash, "
    "pin_changed_at = EXCLUDED.pin_changed_at, updated_at = now()"
)


def _patron(row: Sequence[Any]) -> Patron:
    return Patron(
        barcode=row[0],
        record_id=row[1],
        name=row[2],
        email=row[3],
        category=row[4],
        expires=row[5],
        blocked=bool(row[6]),
        blocked_reason=row[7],
        fines=Decimal(row[8]).quantize(Decimal("0.01")),
        home_library=row[9],
    )


def _details(row: Sequence[Any]) -> PatronDetails:
    return PatronDetails(_patron(row), bool(row[10]), bool(row[11]))


def _convert(name: str, value: Any) -> Any:
    return value


async def inspect_pepper_conn(conn: Conn) -> StoredPepper:
    """The recorded fingerprints and whether peppered hashes exist, read without writing
    (the tables may not exist yet: a new database, or one from before the meta table)."""
    cur = await conn.execute(
        "SELECT to_regclass('patrons') IS NOT NULL, to_regclass('bridge_meta') IS NOT NULL"
    )
    row = await cur.fetchone()
    has_patrons, has_meta = (bool(row[0]), bool(row[1])) if row else (False, False)
    fingerprints: dict[str, str] = {}
    if has_meta:
        cur = await conn.execute(
            "SELECT key, value FROM bridge_meta WHERE key LIKE 'pepper.%%.fingerprint'"
        )
        for key, value in await cur.fetchall():
            fingerprints[str(key).split(".")[1]] = str(value)
    has_hashes = False
    if has_patrons:
        cur = await conn.execute(_PEPPERED)
        found = await cur.fetchone()
        has_hashes = bool(found and found[0])
    return StoredPepper(fingerprints, has_hashes)


async def record_fingerprint(conn: Conn, pepper: Pepper) -> str:
    """Insert this pepper's fingerprint unless one is there; return what the store holds."""
    key = pepper_check.meta_key(pepper.id)
    await conn.execute(
        "INSERT INTO bridge_meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING",
        (key, pepper.fingerprint),
    )
    cur = await conn.execute("SELECT value FROM bridge_meta WHERE key = %s", (key,))
    row = await cur.fetchone()
    return str(row[0]) if row else ""


def _values(p: Patron) -> tuple[Any, ...]:
    return (
        p.barcode,
        p.record_id,
        p.name,
        p.email,
        p.category,
        p.expires,
        p.blocked,
        p.blocked_reason,
        p.fines,
        p.home_library,
    )


async def migrate(conn: Conn) -> int:
    """Apply pending migrations, each in its own transaction; return the schema version."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS patron_bridge_migrations ("
            " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT coalesce(max(version), 0) FROM patron_bridge_migrations")
        row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with conn.transaction():  # a savepoint: one migration, all or nothing
                for statement in script.split(";"):
                    if statement.strip():
                        await conn.execute(sql.SQL(statement.strip()))
                await conn.execute(
                    "INSERT INTO patron_bridge_migrations (version) VALUES (%s)", (number,)
                )
    return len(MIGRATIONS)


class PostgresStore:
    """Patrons, PIN hashes and reset tokens in PostgreSQL."""

    capabilities = OWN_STORE_CAPABILITIES
    # `barcode = %s` on a text key with the database's deterministic collation: exact.
    canonical_barcode = staticmethod(same_barcode)

    def __init__(self, db: PgPool, hasher: PinHasher, dsn: str = "") -> None:
        self.db = db
        self.hasher = hasher
        self._dsn = dsn

    def throttle_backend(self) -> PostgresThrottleBackend:
        """Throttle counters written behind to this database (one process's memory is the
        authority; kept for tools and tests: the daemon uses `shared_throttle`)."""
        return PostgresThrottleBackend(self._dsn)

    def shared_throttle(self, rules: ThrottleRules, retry_seconds: float) -> tuple[Any, Any]:
        """`[throttle] state = "store"`: the guessing limits decided live in this database by
        every host (one locked transaction per decision), and invalidations by NOTIFY."""
        from bridge.state.postgres_guard import PostgresBus, PostgresGuard

        bus = PostgresBus(self._dsn, retry_seconds)
        return PostgresGuard(rules, self._dsn, bus=bus), bus

    # -- Store ------------------------------------------------------------------------------
    async def _lookup_row(
        self, barcode: str
    ) -> tuple[Patron, str | None, dt.datetime | None] | None:
        """(patron, stored hash, when its one-time PIN was set if it is one)."""

        async def query(conn: Conn) -> tuple[Patron, str | None, dt.datetime | None] | None:
            cur = await conn.execute(_BY_BARCODE, (barcode,))
            row = await cur.fetchone()
            if row is None:
                return None
            # an empty hash is a card with no PIN set, as NULL is
            return _patron(row), row[10] or None, one_time_since(row[11] and row[10], row[12])

        return await self.db.run(query, "lookup")

    async def lookup(self, barcode: str) -> Patron | None:
        found = await self._lookup_row(barcode)
        return None if found is None else found[0]

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        found = await self._lookup_row(barcode)
        if found is None:
            return await verify_found(self.hasher, None, pin)
        return await verify_found(self.hasher, found[:2], pin, found[2])

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        await self._set_hash(patron, new_pin, one_time=False)

    async def set_one_time_pin(self, patron: Patron, pin: Secret) -> None:
        await self._set_hash(patron, pin, one_time=True)

    async def _set_hash(self, patron: Patron, new_pin: Secret, *, one_time: bool) -> None:
        """Hash first (in the KDF pool), then one single-statement transaction."""
        pin_hash = await self.hasher.hash(new_pin)

        async def update(conn: Conn) -> None:
            async with conn.transaction():
                cur = await conn.execute(_SET_HASH, (pin_hash, one_time, patron.barcode))
                if cur.rowcount != 1:
                    raise UnknownPatron(patron.barcode)

        await self.db.run(update, "PIN change", retry=False)

    async def health(self) -> Health:
        return await self.db.health()

    async def aclose(self) -> None:
        await self.db.close()

    # -- SearchableStore --------------------------------------------------------------------
    async def lookup_by_email(self, email: str) -> list[Patron]:
        async def query(conn: Conn) -> list[Patron]:
            cur = await conn.execute(_BY_EMAIL, (email,))
            return [_patron(r) for r in await cur.fetchall()]

        return await self.db.run(query, "lookup by email")

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        async def query(conn: Conn) -> Patron | None:
            cur = await conn.execute(_BY_RECORD, (record_id,))
            row = await cur.fetchone()
            return None if row is None else _patron(row)

        return await self.db.run(query, "lookup by record id")

    # -- WritableStore ----------------------------------------------------------------------

    def _row(self, new: NewPatron, pin_hash: str | None, now: dt.datetime) -> tuple[Any, ...]:
        return (*_values(new.patron), pin_hash, now if pin_hash else None)

    async def add_patron(self, new: NewPatron, *, replace: bool = False) -> None:
        row = self._row(new, await hash_of(self.hasher, new), dt.datetime.now(dt.UTC))

        async def insert(conn: Conn) -> None:
            async with conn.transaction():
                await conn.execute(_UPSERT if replace else _INSERT, row)

        try:
            await self.db.run(insert, "add patron", retry=replace)
        except psycopg.errors.UniqueViolation as exc:
            which = exc.diag.constraint_name or ""
            if "record_id" in which:
                raise ValueError(f"record id {new.patron.record_id} is already used") from None
            raise ValueError(f"card {new.patron.barcode} already exists") from None

    async def add_patrons(self, batch: Iterable[NewPatron]) -> int:
        """Insert or replace a batch in one transaction (PINs hashed in parallel first).

        `patron import` calls this with 200 rows at a time, so a failed batch leaves the
        earlier ones imported and none of its own rows.
        """
        items = list(batch)
        if not items:
            return 0
        hashes = await asyncio.gather(*(hash_of(self.hasher, n) for n in items))
        now = dt.datetime.now(dt.UTC)
        rows = [self._row(n, h, now) for n, h in zip(items, hashes, strict=True)]

        async def insert(conn: Conn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                await cur.executemany(_UPSERT, rows)

        try:
            await self.db.run(insert, "import batch")
        except psycopg.errors.UniqueViolation as exc:
            raise StoreError(
                f"import batch refused: {_short(exc)} (a record_id used by two cards?)"
            ) from None
        return len(rows)

    async def set_blocked(self, barcode: str, reason: str | None) -> Patron:
        async def update(conn: Conn) -> Patron | None:
            async with conn.transaction():
                cur = await conn.execute(_SET_BLOCKED, (reason is not None, reason, barcode))
                row = await cur.fetchone()
            return None if row is None else _patron(row)

        patron = await self.db.run(update, "block", retry=False)
        if patron is None:
            raise LookupError(barcode)
        return patron

    async def count(self) -> int:
        async def query(conn: Conn) -> int:
            cur = await conn.execute("SELECT count(*) FROM patrons")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self.db.run(query, "count")

    # -- pepper rotation (bridge.pepper_admin) ----------------------------------------------
    async def pin_hashes(self) -> list[str]:
        """Every stored PIN hash, for `pepper status`'s counts (never printed)."""

        async def query(conn: Conn) -> list[str]:
            cur = await conn.execute(
                "SELECT pin_hash FROM patrons WHERE coalesce(pin_hash, '') <> ''"
            )
            return [str(row[0]) for row in await cur.fetchall()]

        return await self.db.run(query, "pin hashes")

    async def forget_pepper(self, pepper_id: str) -> None:
        """Remove a retired pepper's fingerprint."""

        async def delete(conn: Conn) -> None:
            key = pepper_check.meta_key(pepper_id)
            await conn.execute("DELETE FROM bridge_meta WHERE key = %s", (key,))

        await self.db.run(delete, "forget pepper")

    async def pepper_meta(self) -> dict[str, str]:
        """The rotation records: fingerprints, `pepper-active`, `pepper-host.*`."""

        async def query(conn: Conn) -> dict[str, str]:
            cur = await conn.execute("SELECT key, value FROM bridge_meta WHERE key LIKE 'pepper%%'")
            return {str(k): str(v) for k, v in await cur.fetchall()}

        return await self.db.run(query, "pepper records")

    async def put_pepper_meta(self, key: str, value: str | None) -> None:
        """Write one rotation record (None: remove it)."""

        async def write(conn: Conn) -> None:
            if value is None:
                await conn.execute("DELETE FROM bridge_meta WHERE key = %s", (key,))
            else:
                await conn.execute(
                    "INSERT INTO bridge_meta (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

        await self.db.run(write, "pepper record")

    async def iter_patrons(self) -> AsyncIterator[Patron]:
        """Keyset pages of 500, so no cursor or transaction stays open between pages."""
        last = ""
        while True:

            async def page(conn: Conn, after: str = last) -> list[Patron]:
                cur = await conn.execute(_PAGE, (after,))
                return [_patron(r) for r in await cur.fetchall()]

            batch = await self.db.run(page, "list patrons")
            if not batch:
                return
            for patron in batch:
                yield patron
            last = batch[-1].barcode

    # -- AdminStore -------------------------------------------------------------------------
    async def details(self, barcodes: Sequence[str]) -> dict[str, PatronDetails]:
        async def query(conn: Conn) -> dict[str, PatronDetails]:
            cur = await conn.execute(_BY_BARCODES, (list(barcodes),))
            return {r[0]: _details(r) for r in await cur.fetchall()}

        return await self.db.run(query, "patron details")

    async def write_patrons(
        self, inserts: Sequence[PatronInsert], updates: Sequence[PatronUpdate]
    ) -> None:
        """One transaction; an import batch is repeat-safe, so a dead connection is retried."""
        now = dt.datetime.now(dt.UTC)
        new_rows = [
            (*_values(i.patron), i.pin_hash, now if i.pin_hash else None, i.needs_pin_reset, now)
            for i in inserts
        ]
        changes = [update_params(u, now, _convert) for u in updates]

        async def write(conn: Conn) -> None:
            async with conn.transaction(), conn.cursor() as cur:
                if new_rows:
                    async with cur.copy(_COPY_NEW) as copy:
                        for row in new_rows:
                            await copy.write_row(row)
                if changes:
                    await cur.execute(_CREATE_UPDATES)
                    async with cur.copy(_COPY_UPDATES) as copy:
                        for change in changes:
                            await copy.write_row(change)
                    await cur.execute(_UPDATE_FROM_COPY)

        try:
            await self.db.run(write, "import batch")
        except psycopg.errors.UniqueViolation as exc:
            raise StoreError(
                f"batch refused: {_short(exc)} (a record_id used by two cards?)"
            ) from None

    async def delete_patron(self, barcode: str) -> bool:
        async def delete(conn: Conn) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM reset_tokens WHERE barcode = %s", (barcode,))
                cur = await conn.execute("DELETE FROM patrons WHERE barcode = %s", (barcode,))
                return cur.rowcount == 1

        return await self.db.run(delete, "delete patron", retry=False)

    async def list_page(
        self, which: Listing, after: str, today: dt.date, limit: int = 500
    ) -> list[PatronDetails]:
        async def query(conn: Conn) -> list[PatronDetails]:
            cur = await conn.execute(_LIST[which], {"after": after, "today": today, "limit": limit})
            return [_details(r) for r in await cur.fetchall()]

        return await self.db.run(query, "list patrons")

    # -- TokenStore -------------------------------------------------------------------------
    async def put_token(self, token_hash: bytes, barcode: str, expires_at: dt.datetime) -> None:
        async def insert(conn: Conn) -> None:
            async with conn.transaction():
                # A new token voids the older ones for this card.
                await conn.execute("DELETE FROM reset_tokens WHERE barcode = %s", (barcode,))
                await conn.execute(
                    "INSERT INTO reset_tokens (token_hash, barcode, expires_at) "
                    "VALUES (%s, %s, %s)",
                    (token_hash, barcode, _aware(expires_at)),
                )

        await self.db.run(insert, "store token")

    async def take_token(self, token_hash: bytes, now: dt.datetime) -> str | None:
        """One UPDATE ... RETURNING: two hosts racing for one token cannot both win."""

        async def take(conn: Conn) -> str | None:
            cur = await conn.execute(
                "UPDATE reset_tokens SET used_at = %s WHERE token_hash = %s "
                "AND used_at IS NULL AND expires_at > %s RETURNING barcode",
                (_aware(now), token_hash, _aware(now)),
            )
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        return await self.db.run(take, "take token", retry=False)

    async def peek_token(self, token_hash: bytes, now: dt.datetime) -> str | None:
        async def peek(conn: Conn) -> str | None:
            cur = await conn.execute(
                "SELECT barcode FROM reset_tokens WHERE token_hash = %s AND used_at IS NULL "
                "AND expires_at > %s",
                (token_hash, _aware(now)),
            )
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        return await self.db.run(peek, "peek token")


class PostgresThrottleBackend:
    """Throttle counters kept in the store's database, written behind on one thread.

    The core keeps counters in memory (a check is a dict lookup) and hands every change to
    `save`, which queues it for a single writer thread with its own blocking connection, so the
    event loop never waits and writes stay ordered. `load` reads every counter once at start:
    a card locked on any bridge host is still locked after a restart of any host. Counters are
    not read live across hosts (each host's memory is authoritative between starts).

    A write that fails (database down) is logged and dropped; the in-memory counter still
    holds. Writes queued in the next few seconds are dropped without trying (so a dead database
    cannot stall shutdown behind a queue of connection timeouts); then the next write
    reconnects.
    """

    RETRY_AFTER = 5.0

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="throttle-pg")
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._closed = False
        self._retry_at = 0.0
        self.dropped = 0

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._dsn, autocommit=True)
        return self._conn

    def load(self) -> dict[str, Counter]:
        def read() -> dict[str, Counter]:
            rows = (
                self._connection()
                .execute(
                    "SELECT key, failures, last_failure, blocked_until, locked "
                    "FROM throttle_counters"
                )
                .fetchall()
            )
            return {r[0]: Counter(r[1], r[2], r[3], bool(r[4])) for r in rows}

        try:
            return self._writer.submit(read).result()
        except psycopg.Error as exc:
            raise StoreUnavailable(
                f"postgres: cannot read throttle counters: {_short(exc)}"
            ) from None

    def save(self, key: str, counter: Counter | None) -> None:
        if self._closed:
            return
        snapshot = None if counter is None else dataclasses.replace(counter)
        self._writer.submit(self._save, key, snapshot)

    def _save(self, key: str, counter: Counter | None) -> None:
        if time.monotonic() < self._retry_at:
            self.dropped += 1
            return
        try:
            conn = self._connection()
            if counter is None:
                conn.execute("DELETE FROM throttle_counters WHERE key = %s", (key,))
                return
            conn.execute(
                "INSERT INTO throttle_counters (key, failures, last_failure, blocked_until, "
                "locked) VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET "
                "failures = EXCLUDED.failures, last_failure = EXCLUDED.last_failure, "
                "blocked_until = EXCLUDED.blocked_until, locked = EXCLUDED.locked",
                (
                    key,
                    counter.failures,
                    counter.last_failure,
                    counter.blocked_until,
                    counter.locked,
                ),
            )
        except psycopg.Error as exc:
            self.dropped += 1
            self._retry_at = time.monotonic() + self.RETRY_AFTER
            log.warning("throttle_write_failed", error=_short(exc))
            if self._conn is not None and not self._conn.closed:
                self._conn.close()

    def flush(self) -> None:
        """Wait until every queued write has been tried."""
        self._writer.submit(lambda: None).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.flush()
        if self._conn is not None:
            self._writer.submit(self._conn.close).result()
        self._writer.shutdown(wait=True)


def _aware(value: dt.datetime) -> dt.datetime:
    """Naive datetimes from callers are UTC (as the SQLite store stores them)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


async def open_store(settings: PostgresSettings, services: StoreServices) -> PostgresStore:
    dsn = conninfo(settings, services.base_dir)
    db = PgPool("postgres", settings, dsn)
    await db.open()
    store = PostgresStore(db, services.hasher, dsn)
    pepper: Pepper | None = services.pepper
    try:
        record = False
        more: list[Pepper] = []
        if pepper is not None:

            async def inspect(conn: Conn) -> StoredPepper:
                return await inspect_pepper_conn(conn)

            # judged before any write: a refused start leaves the database as it was
            stored = await db.run(inspect, "pepper check")
            record = pepper_check.judge(pepper, stored)
            more = pepper_check.judge_rotated(pepper.path, list(services.rotated), stored)
        if settings.migrate:

            async def run_migrations(conn: Conn) -> int:
                return await migrate(conn)

            await db.run(run_migrations, "migration")
        if pepper is not None:
            await asyncio.to_thread(pepper.persist)
            if record:

                async def put(conn: Conn) -> str:
                    return await record_fingerprint(conn, pepper)

                pepper_check.confirm(pepper, await db.run(put, "pepper fingerprint"))
            for rotated in more:

                async def put_rotated(conn: Conn, rotated: Pepper = rotated) -> str:
                    return await record_fingerprint(conn, rotated)

                pepper_check.confirm(rotated, await db.run(put_rotated, "pepper fingerprint"))
        if settings.demo and await store.count() == 0:
            await load_demo(store, Path(services.base_dir) / settings.demo_file)
    except BaseException:
        await db.close()
        raise
    return store


async def inspect_pepper(settings: PostgresSettings, base_dir: str) -> StoredPepper | None:
    """What the database records of the pepper, read without writing (`check-config`)."""
    db = PgPool("postgres", settings, conninfo(settings, base_dir))
    await db.open()
    try:

        async def inspect(conn: Conn) -> StoredPepper:
            return await inspect_pepper_conn(conn)

        return await db.run(inspect, "pepper check")
    finally:
        await db.close()


PLUGIN = StorePlugin(
    name="postgres",
    settings=PostgresSettings,
    open=open_store,
    inspect_pepper=inspect_pepper,
    description="the bridge's own store on PostgreSQL (shared by several bridge hosts)",
)
