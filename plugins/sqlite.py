"""The embedded store: patrons and PIN hashes in one SQLite file.

WAL mode; reads run on a small thread pool with one connection per thread; a PIN change is one
transaction committed with `synchronous=FULL`, so it is durable when the call returns and a
crash at any instant leaves the old or the new hash, never neither. Lookups by barcode use the
primary key, so they stay flat from a thousand to a million patrons. Schema changes are
numbered migrations recorded in `PRAGMA user_version`, applied at open after the pepper check
(`bridge.core.pepper`), so a refused start leaves the file as it was. The file is created mode
0600 (SQLite gives its -wal and -shm files the same mode).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from bridge.core import pepper as pepper_check
from bridge.core.admin import (
    Listing,
    PatronDetails,
    PatronInsert,
    PatronUpdate,
    update_params,
    update_sql,
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
from bridge.files import create_private
from bridge.records import (
    OWN_STORE_CAPABILITIES,
    hash_of,
    load_demo,
    one_time_since,
    verify_found,
)
from bridge.settings import Section
from bridge.workers import Workers

T = TypeVar("T")


class SqliteSettings(Section, frozen=True):
    path: str = "var/patrons.db"
    demo: bool = False
    demo_file: str = "demo-patrons.csv"
    readers: int = msgspec.field(default=4)
    busy_timeout_ms: int = 5000


MIGRATIONS: list[str] = [
    # 1: patrons and reset tokens
    """
    CREATE TABLE patrons (
        barcode        TEXT PRIMARY KEY,
        record_id      TEXT NOT NULL UNIQUE,
        name           TEXT NOT NULL DEFAULT '',
        email          TEXT,
        category       TEXT NOT NULL DEFAULT '',
        expires        TEXT,
        blocked        INTEGER NOT NULL DEFAULT 0,
        blocked_reason TEXT,
        fines          TEXT NOT NULL DEFAULT '0.00',
        home_library   TEXT,
        pin_hash       TEXT,
        pin_changed_at TEXT,
        updated_at     TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX patrons_email ON patrons (email COLLATE NOCASE);
    CREATE TABLE reset_tokens (
        token_hash BLOB PRIMARY KEY,
        barcode    TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at    TEXT
    );
    CREATE INDEX reset_tokens_barcode ON reset_tokens (barcode);
    """,
    # 2: patrons an import left without a PIN (policy) await a reset; the pepper's fingerprint
    """
    ALTER TABLE patrons ADD COLUMN needs_reset INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE bridge_meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
]

_COLUMNS = (
    "barcode, record_id, name, email, category, expires, blocked, blocked_reason, fines, "
    "home_library"
)
# Every query is a constant; values are always bound parameters.
_BY_BARCODE = (
    f"SELECT {_COLUMNS}, pin_hash, needs_reset, pin_changed_at FROM patrons WHERE barcode = ?"  # noqa: S608
)
_BY_EMAIL = f"SELECT {_COLUMNS} FROM patrons WHERE email = ? COLLATE NOCASE LIMIT 50"  # noqa: S608
_BY_RECORD = f"SELECT {_COLUMNS} FROM patrons WHERE record_id = ?"  # noqa: S608
# Name search for the staff desk: a prefix of the surname or of any word, escaped, bounded.
_BY_NAME = (
    f"SELECT {_COLUMNS} FROM patrons WHERE name LIKE ? ESCAPE '\\' OR name LIKE ? ESCAPE '\\' "  # noqa: S608
    "ORDER BY name LIMIT ?"
)
_PAGE = f"SELECT {_COLUMNS} FROM patrons WHERE barcode > ? ORDER BY barcode LIMIT 500"  # noqa: S608
_DETAILS = f"{_COLUMNS}, coalesce(pin_hash, '') <> '', needs_reset"
_BY_BARCODES = f"SELECT {_DETAILS} FROM patrons WHERE barcode IN (SELECT value FROM json_each(?))"  # noqa: S608
_LISTINGS = {
    Listing.ALL: "",
    Listing.BLOCKED: "AND blocked ",
    Listing.EXPIRED: "AND expires IS NOT NULL AND expires < :today ",
    Listing.NO_PIN: "AND coalesce(pin_hash, '') = '' ",
}
_LIST = {
    which: f"SELECT {_DETAILS} FROM patrons WHERE barcode > :after {cond}"  # noqa: S608
    "ORDER BY barcode LIMIT :limit"
    for which, cond in _LISTINGS.items()
}
_INSERT_FULL = (
    f"INSERT INTO patrons ({_COLUMNS}, pin_hash, pin_changed_at, needs_reset, "  # noqa: S608
    "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE = update_sql("?", "1", "0")
_PEPPERED = (
    "SELECT 1 FROM patrons WHERE pin_hash LIKE '$argon2id$%' OR pin_hash LIKE '$scrypt$%' LIMIT 1"
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _patron(row: tuple[Any, ...]) -> Patron:
    return Patron(
        barcode=row[0],
        record_id=row[1],
        name=row[2],
        email=row[3],
        category=row[4],
        expires=dt.date.fromisoformat(row[5]) if row[5] else None,
        blocked=bool(row[6]),
        blocked_reason=row[7],
        fines=Decimal(row[8]),
        home_library=row[9],
    )


def _details(row: tuple[Any, ...]) -> PatronDetails:
    return PatronDetails(_patron(row), bool(row[10]), bool(row[11]))


def _convert(name: str, value: Any) -> Any:
    """A field's value as this store keeps it (dates and amounts as text, flags as 0/1)."""
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bool):
        return int(value)
    return value


def inspect_pepper_sync(conn: sqlite3.Connection) -> StoredPepper:
    """The recorded fingerprints and whether peppered hashes exist, read without writing
    (tables may not exist yet: a new file, or one from before the meta table)."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    fingerprints: dict[str, str] = {}
    if "bridge_meta" in tables:
        for key, value in conn.execute(
            "SELECT key, value FROM bridge_meta WHERE key LIKE 'pepper.%.fingerprint'"
        ):
            fingerprints[str(key).split(".")[1]] = str(value)
    has_hashes = "patrons" in tables and conn.execute(_PEPPERED).fetchone() is not None
    return StoredPepper(fingerprints, has_hashes)


def record_fingerprint(conn: sqlite3.Connection, pepper: Pepper) -> str:
    """Insert this pepper's fingerprint unless one is there; return what the store holds."""
    key = pepper_check.meta_key(pepper.id)
    conn.execute(
        "INSERT OR IGNORE INTO bridge_meta (key, value) VALUES (?, ?)", (key, pepper.fingerprint)
    )
    row = conn.execute("SELECT value FROM bridge_meta WHERE key = ?", (key,)).fetchone()
    return str(row[0])


def _values(p: Patron) -> tuple[Any, ...]:
    return (
        p.barcode,
        p.record_id,
        p.name,
        p.email,
        p.category,
        p.expires.isoformat() if p.expires else None,
        int(p.blocked),
        p.blocked_reason,
        str(p.fines),
        p.home_library,
    )


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; return the schema version.

    The version is read again inside each write transaction: two processes opening a new file
    at once (the daemon's first start and a CLI command) must not both apply migration 1."""
    while int(conn.execute("PRAGMA user_version").fetchone()[0]) < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < len(MIGRATIONS):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)


class SqliteStore:
    capabilities = OWN_STORE_CAPABILITIES
    # `barcode = ?` on a TEXT key with SQLite's default BINARY collation: exact, case and all.
    canonical_barcode = staticmethod(same_barcode)

    def __init__(
        self,
        path: Path,
        hasher: PinHasher,
        readers: int = 4,
        busy_ms: int = 5000,
        pepper: Pepper | None = None,
    ):
        self.path = path
        self.hasher = hasher
        self.pepper = pepper
        self.rotated: Sequence[Pepper] = ()
        self._busy_ms = busy_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._workers = Workers(readers, "sqlite")

    # -- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await self._workers.run(fn, *args)
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from None

    def open_sync(self) -> bool:
        """Check the pepper, then create or migrate the file; True when it was new (empty).

        The pepper is judged before any write (a refused start leaves the file's bytes as they
        were); a new pepper file is written, and its fingerprint recorded, before any hash."""
        create_private(self.path)
        conn = self._conn()
        record = False
        more: list[Pepper] = []
        if self.pepper is not None:
            stored = inspect_pepper_sync(conn)
            record = pepper_check.judge(self.pepper, stored)
            more = pepper_check.judge_rotated(self.pepper.path, list(self.rotated), stored)
        migrate(conn)
        if self.pepper is not None:
            self.pepper.persist()
            if record:
                pepper_check.confirm(self.pepper, record_fingerprint(conn, self.pepper))
            for rotated in more:
                pepper_check.confirm(rotated, record_fingerprint(conn, rotated))
        return int(conn.execute("SELECT count(*) FROM patrons").fetchone()[0]) == 0

    # -- Store ------------------------------------------------------------------------------
    def _lookup_row(self, barcode: str) -> tuple[Patron, str | None, dt.datetime | None] | None:
        """(patron, stored hash, when its one-time PIN was set if it is one)."""
        row = self._conn().execute(_BY_BARCODE, (barcode,)).fetchone()
        if row is None:
            return None
        return _patron(row), row[10], one_time_since(row[11] and row[10], row[12])

    async def lookup(self, barcode: str) -> Patron | None:
        found = await self._run(self._lookup_row, barcode)
        return None if found is None else found[0]

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        found = await self._run(self._lookup_row, barcode)
        if found is None:
            return await verify_found(self.hasher, None, pin)
        return await verify_found(self.hasher, found[:2], pin, found[2])

    def _set_hash(self, barcode: str, pin_hash: str, one_time: bool = False) -> None:
        conn = self._conn()
        now = _now()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "UPDATE patrons SET pin_hash = ?, pin_changed_at = ?, updated_at = ?, "
                "needs_reset = ? WHERE barcode = ?",
                (pin_hash, now, now, int(one_time), barcode),
            )
            if cur.rowcount != 1:
                raise UnknownPatron(barcode)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        pin_hash = await self.hasher.hash(new_pin)
        await self._run(self._set_hash, patron.barcode, pin_hash)

    async def set_one_time_pin(self, patron: Patron, pin: Secret) -> None:
        pin_hash = await self.hasher.hash(pin)
        await self._run(self._set_hash, patron.barcode, pin_hash, True)

    async def health(self) -> Health:
        def probe() -> None:
            self._conn().execute("SELECT 1 FROM patrons LIMIT 1").fetchall()

        await self._run(probe)
        return Health(True, "sqlite ok")

    async def aclose(self) -> None:
        def close_all() -> None:
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()

        self._workers.close()
        close_all()

    # -- SearchableStore --------------------------------------------------------------------
    async def lookup_by_email(self, email: str) -> list[Patron]:
        def query() -> list[Patron]:
            rows = (
                self._conn()
                .execute(
                    _BY_EMAIL,
                    (email,),
                )
                .fetchall()
            )
            return [_patron(r) for r in rows]

        return await self._run(query)

    async def search_by_name(self, text: str, limit: int) -> list[Patron]:
        """Patrons whose name starts with `text`, or has a word that does (staff desk search;
        at most `limit`, never a list of everyone: an empty text finds nothing)."""
        text = text.strip()
        if not text:
            return []
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")

        def query() -> list[Patron]:
            rows = (
                self._conn()
                .execute(_BY_NAME, (f"{escaped}%", f"% {escaped}%", min(limit, 20)))
                .fetchall()
            )
            return [_patron(r) for r in rows]

        return await self._run(query)

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        def query() -> Patron | None:
            row = self._conn().execute(_BY_RECORD, (record_id,)).fetchone()
            return None if row is None else _patron(row)

        return await self._run(query)

    # -- WritableStore ----------------------------------------------------------------------

    def _insert(self, rows: list[tuple[Any, ...]], replace: bool) -> int:
        conn = self._conn()
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                f"{verb} INTO patrons ({_COLUMNS}, pin_hash, pin_changed_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    async def add_patron(self, new: NewPatron, *, replace: bool = False) -> None:
        pin_hash = await hash_of(self.hasher, new)
        now = _now()
        row = (*_values(new.patron), pin_hash, now if pin_hash else None, now)
        try:
            await self._run(self._insert, [row], replace)
        except sqlite3.IntegrityError:
            raise ValueError(f"card {new.patron.barcode} already exists") from None

    async def add_patrons(self, batch: Iterable[NewPatron]) -> int:
        """Insert or replace a batch in one transaction (PINs hashed in parallel first)."""
        items = list(batch)
        hashes = await asyncio.gather(*(hash_of(self.hasher, n) for n in items))
        now = _now()
        rows = [
            (*_values(n.patron), h, now if h else None, now)
            for n, h in zip(items, hashes, strict=True)
        ]
        return await self._run(self._insert, rows, True)

    async def set_blocked(self, barcode: str, reason: str | None) -> Patron:
        def update() -> Patron:
            conn = self._conn()
            cur = conn.execute(
                "UPDATE patrons SET blocked = ?, blocked_reason = ?, updated_at = ? "
                "WHERE barcode = ?",
                (int(reason is not None), reason, _now(), barcode),
            )
            if cur.rowcount != 1:
                raise UnknownPatron(barcode)
            found = self._lookup_row(barcode)
            assert found is not None
            return found[0]

        try:
            return await self._run(update)
        except UnknownPatron:
            raise LookupError(barcode) from None

    async def count(self) -> int:
        def query() -> int:
            return int(self._conn().execute("SELECT count(*) FROM patrons").fetchone()[0])

        return await self._run(query)

    # -- pepper rotation (bridge.pepper_admin) ----------------------------------------------
    async def pin_hashes(self) -> list[str]:
        """Every stored PIN hash, for `pepper status`'s counts (never printed)."""

        def query() -> list[str]:
            rows = self._conn().execute(
                "SELECT pin_hash FROM patrons WHERE coalesce(pin_hash, '') <> ''"
            )
            return [str(row[0]) for row in rows]

        return await self._run(query)

    async def forget_pepper(self, pepper_id: str) -> None:
        """Remove a retired pepper's fingerprint."""

        def delete() -> None:
            key = pepper_check.meta_key(pepper_id)
            self._conn().execute("DELETE FROM bridge_meta WHERE key = ?", (key,))

        await self._run(delete)

    async def pepper_meta(self) -> dict[str, str]:
        """The rotation records: fingerprints, `pepper-active`, `pepper-host.*`."""

        def query() -> dict[str, str]:
            rows = self._conn().execute(
                "SELECT key, value FROM bridge_meta WHERE key LIKE 'pepper%'"
            )
            return {str(k): str(v) for k, v in rows}

        return await self._run(query)

    async def put_pepper_meta(self, key: str, value: str | None) -> None:
        """Write one rotation record (None: remove it)."""

        def write() -> None:
            conn = self._conn()
            if value is None:
                conn.execute("DELETE FROM bridge_meta WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO bridge_meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

        await self._run(write)

    async def iter_patrons(self) -> AsyncIterator[Patron]:
        last = ""
        while True:

            def page(after: str = last) -> list[Patron]:
                rows = (
                    self._conn()
                    .execute(
                        _PAGE,
                        (after,),
                    )
                    .fetchall()
                )
                return [_patron(r) for r in rows]

            batch = await self._run(page)
            if not batch:
                return
            for patron in batch:
                yield patron
            last = batch[-1].barcode

    # -- AdminStore -------------------------------------------------------------------------
    async def details(self, barcodes: Sequence[str]) -> dict[str, PatronDetails]:
        def query() -> dict[str, PatronDetails]:
            rows = self._conn().execute(_BY_BARCODES, (json.dumps(list(barcodes)),)).fetchall()
            return {r[0]: _details(r) for r in rows}

        return await self._run(query)

    def _write(self, inserts: Sequence[PatronInsert], updates: Sequence[PatronUpdate]) -> None:
        conn = self._conn()
        now = _now()
        new_rows = [
            (
                *_values(i.patron),
                i.pin_hash,
                now if i.pin_hash else None,
                int(i.needs_pin_reset),
                now,
            )
            for i in inserts
        ]
        changes = [update_params(u, now, _convert) for u in updates]
        conn.execute("BEGIN IMMEDIATE")
        try:
            if new_rows:
                conn.executemany(_INSERT_FULL, new_rows)
            if changes:
                conn.executemany(_UPDATE, changes)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def write_patrons(
        self, inserts: Sequence[PatronInsert], updates: Sequence[PatronUpdate]
    ) -> None:
        try:
            await self._run(self._write, inserts, updates)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"batch refused: {exc} (a record_id used by two cards?)") from None

    async def delete_patron(self, barcode: str) -> bool:
        def delete() -> bool:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM reset_tokens WHERE barcode = ?", (barcode,))
                gone = conn.execute("DELETE FROM patrons WHERE barcode = ?", (barcode,)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return gone == 1

        return await self._run(delete)

    async def list_page(
        self, which: Listing, after: str, today: dt.date, limit: int = 500
    ) -> list[PatronDetails]:
        def query() -> list[PatronDetails]:
            rows = (
                self._conn()
                .execute(_LIST[which], {"after": after, "today": today.isoformat(), "limit": limit})
                .fetchall()
            )
            return [_details(r) for r in rows]

        return await self._run(query)

    # -- TokenStore -------------------------------------------------------------------------
    async def put_token(self, token_hash: bytes, barcode: str, expires_at: dt.datetime) -> None:
        def insert() -> None:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                # A new token voids the older ones for this card.
                conn.execute("DELETE FROM reset_tokens WHERE barcode = ?", (barcode,))
                conn.execute(
                    "INSERT INTO reset_tokens (token_hash, barcode, expires_at) VALUES (?, ?, ?)",
                    (token_hash, barcode, expires_at.isoformat()),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self._run(insert)

    async def take_token(self, token_hash: bytes, now: dt.datetime) -> str | None:
        def take() -> str | None:
            conn = self._conn()
            row = conn.execute(
                "UPDATE reset_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL "
                "AND expires_at > ? RETURNING barcode",
                (now.isoformat(), token_hash, now.isoformat()),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._run(take)

    async def peek_token(self, token_hash: bytes, now: dt.datetime) -> str | None:
        def peek() -> str | None:
            row = (
                self._conn()
                .execute(
                    "SELECT barcode FROM reset_tokens WHERE token_hash = ? AND used_at IS NULL "
                    "AND expires_at > ?",
                    (token_hash, now.isoformat()),
                )
                .fetchone()
            )
            return None if row is None else str(row[0])

        return await self._run(peek)


async def open_store(settings: SqliteSettings, services: StoreServices) -> SqliteStore:
    base = Path(services.base_dir)
    path = Path(settings.path)
    store = SqliteStore(
        path if path.is_absolute() else base / path,
        services.hasher,
        readers=settings.readers,
        busy_ms=settings.busy_timeout_ms,
        pepper=services.pepper,
    )
    store.rotated = tuple(services.rotated)
    try:
        is_new = await store._run(store.open_sync)
    except sqlite3.DatabaseError as exc:
        await store.aclose()
        raise StoreUnavailable(f"sqlite: cannot open {store.path}: {exc}") from None
    except BaseException:
        await store.aclose()  # a refused pepper: close, so the file is left as it was
        raise
    if is_new and settings.demo:
        await load_demo(store, base / settings.demo_file)
    return store


async def inspect_pepper(settings: SqliteSettings, base_dir: str) -> StoredPepper | None:
    """What the file records of the pepper, opened read-only (`check-config`); None: no file."""
    path = Path(settings.path)
    path = path if path.is_absolute() else Path(base_dir) / path
    if not path.exists():
        return None

    def read() -> StoredPepper:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return inspect_pepper_sync(conn)
        finally:
            conn.close()

    return await asyncio.to_thread(read)


PLUGIN = StorePlugin(
    name="sqlite",
    settings=SqliteSettings,
    open=open_store,
    inspect_pepper=inspect_pepper,
    description="embedded SQLite file (the default)",
)
