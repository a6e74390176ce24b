"""Read-only connector to Koha's MariaDB/MySQL database.

For libraries that prefer the bridge to read Koha's tables over calling Koha's REST API. The
bridge connects as a database account with SELECT only (`GRANT SELECT ON koha.* TO ...`); it
never writes, so PIN changes and resets stay in Koha (capabilities say so).

One query per request reads `borrowers` (cardnumber, password, names, email, categorycode,
branchcode, dateexpiry, debarred, lost, gonenoaddress, login_attempts,
password_expiration_date), the live `borrower_debarments`, the balance
(`SUM(accountlines.amountoutstanding)`) and the `FailedLoginAttempts` system preference.

PINs: Koha's `checkpw_hash` accepts bcrypt (`$2a$08$...`, what `hash_password` writes) and,
for old records, unsalted `md5_base64`; `!` or empty means no password. The bridge verifies both
with the core hasher (`bridge.core.legacy_hashes`). An unknown card costs one bcrypt check at
Koha's cost, so timing does not tell which cards exist.

Standing as Koha sees it, mapped to the bridge's patron record:
- `login_attempts >= FailedLoginAttempts` (when set) or `< 0` (administrative lock): blocked —
  Koha itself refuses such accounts even with the right password;
- `debarred` today or later, or a live `borrower_debarments` row: blocked (restricted);
- `lost`: blocked (card reported lost); `gonenoaddress`: blocked (address unconfirmed);
- `password_expiration_date` passed: blocked (Koha refuses an expired password);
- `dateexpiry` → expiry; balance → fines (credits do not make fines negative).

The driver is PyMySQL (blocking), run in a small thread pool with one connection per thread;
the caller stops waiting at `query_timeout` and the socket's own read timeout ends the thread's
wait. Barcodes are always bound parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import queue
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

import bcrypt
import msgspec
import pymysql
import pymysql.cursors

from bridge.core.patron import Patron
from bridge.core.pin import PinHasher
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    Health,
    NotSupported,
    StorePlugin,
    StoreServices,
    StoreUnavailable,
    Verification,
)
from bridge.settings import Port, Section
from bridge.workers import Workers

T = TypeVar("T")
Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]
EmailColumn = Literal["email", "emailpro", "B_email"]


class KohaSqlSettings(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 3306
    unix_socket: str | None = None
    database: str = "koha"
    user: str = "patron_bridge"
    password: str | None = None
    ssl_ca: str | None = None  # CA file: connect with TLS and verify the server
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=64)] = 4
    connect_timeout: Seconds = 5.0
    query_timeout: Seconds = 5.0
    # Override Koha's FailedLoginAttempts system preference (None: read it from Koha).
    failed_login_attempts: Annotated[int, msgspec.Meta(ge=0)] | None = None
    # Koha's bcrypt cost, used only for the dummy check on unknown cards.
    bcrypt_cost: Annotated[int, msgspec.Meta(ge=4, le=16)] = 8
    # The e-mail columns searched by lookup_by_email (LDAP filters, reset by e-mail).
    email_columns: tuple[EmailColumn, ...] = ("email",)


_EMAIL_COLUMNS: tuple[EmailColumn, ...] = ("email", "emailpro", "B_email")

# Every statement is a constant; values are always bound parameters.
_SELECT = """
SELECT b.borrowernumber, b.cardnumber, b.surname, b.firstname, b.email, b.categorycode,
       b.branchcode, b.dateexpiry, b.debarred, b.debarredcomment, b.lost, b.gonenoaddress,
       b.login_attempts, b.password_expiration_date, b.password,
       (SELECT COALESCE(SUM(a.amountoutstanding), 0) FROM accountlines a
         WHERE a.borrowernumber = b.borrowernumber) AS balance,
       (SELECT MAX(COALESCE(d.comment, d.type)) FROM borrower_debarments d
         WHERE d.borrowernumber = b.borrowernumber
           AND (d.expiration IS NULL OR d.expiration >= CURDATE())) AS restriction,
       (SELECT s.value FROM systempreferences s
         WHERE s.variable = 'FailedLoginAttempts') AS max_attempts
  FROM borrowers b
"""
_BY_CARD = _SELECT + " WHERE b.cardnumber = %s"
_BY_NUMBER = _SELECT + " WHERE b.borrowernumber = %s"
_BY_EMAIL = {
    # Koha's tables use a case-insensitive collation: `=` ignores case already.
    column: _SELECT + f" WHERE b.{column} = %s LIMIT 50"
    for column in _EMAIL_COLUMNS
}


class KohaRow(msgspec.Struct, frozen=True):
    """One `_SELECT` row, named."""

    borrowernumber: int
    cardnumber: str | None
    surname: str | None
    firstname: str | None
    email: str | None
    categorycode: str
    branchcode: str
    dateexpiry: dt.date | None
    debarred: dt.date | None
    debarredcomment: str | None
    lost: int | None
    gonenoaddress: int | None
    login_attempts: int
    password_expiration_date: dt.date | None
    password: str | None
    balance: Decimal
    restriction: str | None
    max_attempts: str | None


def koha_hash(stored: str | None) -> str | None:
    """Koha's `password` column in the form the core hasher verifies, or None for no PIN.

    As `Koha::AuthUtils::checkpw_hash`: `$2...` is bcrypt; `!` or empty is "no password";
    anything else is the legacy unsalted `md5_base64`.
    """
    if not stored or stored == "!":
        return None
    if stored.startswith("$2"):
        return stored
    return "{MD5}" + stored


def standing(row: KohaRow, today: dt.date, max_attempts: int | None) -> str | None:
    """Why Koha would refuse this patron now, or None."""
    attempts = row.login_attempts
    if attempts < 0:
        return "account locked by staff in Koha"
    if max_attempts and attempts >= max_attempts:
        return "account locked in Koha after too many failed logins"
    if row.debarred is not None and row.debarred >= today:
        comment = row.debarredcomment or "restricted"
        if row.debarred.year >= 9999:
            return f"restricted: {comment}"
        return f"restricted until {row.debarred.isoformat()}: {comment}"
    if row.restriction is not None:
        return f"restricted: {row.restriction}"
    if row.lost:
        return "card reported lost"
    if row.gonenoaddress:
        return "address unconfirmed"
    if row.password_expiration_date is not None and row.password_expiration_date <= today:
        return "PIN expired in Koha; change it in the catalogue"
    return None


def to_patron(row: KohaRow, today: dt.date, max_attempts: int | None) -> Patron:
    names = ", ".join(part for part in (row.surname, row.firstname) if part)
    reason = standing(row, today, max_attempts)
    return Patron(
        barcode=row.cardnumber or "",
        record_id=str(row.borrowernumber),
        name=names,
        email=row.email or None,
        category=row.categorycode,
        expires=row.dateexpiry,
        blocked=reason is not None,
        blocked_reason=reason,
        fines=max(Decimal(row.balance), Decimal(0)).quantize(Decimal("0.01")),
        home_library=row.branchcode or None,
    )


class _Connections:
    """PyMySQL connections for the worker threads; a failed connection is closed, not reused."""

    def __init__(self, settings: KohaSqlSettings) -> None:
        self.s = settings
        self._idle: queue.LifoQueue[pymysql.connections.Connection[Any]] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._all: set[pymysql.connections.Connection[Any]] = set()

    def _connect(self) -> pymysql.connections.Connection[Any]:
        s = self.s
        timeout = max(1, round(s.query_timeout))
        conn = pymysql.connect(
            host=s.host,
            port=s.port,
            unix_socket=s.unix_socket,
            user=s.user,
            password=s.password or "",
            database=s.database,
            connect_timeout=s.connect_timeout,
            read_timeout=timeout,
            write_timeout=timeout,
            charset="utf8mb4",
            autocommit=True,
            ssl={"ca": s.ssl_ca} if s.ssl_ca else None,
            # MariaDB stops a statement the bridge has stopped waiting for; a read-only session
            # refuses writes even if the account was granted too much.
            init_command=(
                f"SET SESSION max_statement_time = {float(s.query_timeout)}, "
                "SESSION tx_read_only = 1"
            ),
        )
        with self._lock:
            self._all.add(conn)
        return conn

    def run(self, fn: Callable[[pymysql.cursors.Cursor], T]) -> T:
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = self._connect()
        try:
            with conn.cursor() as cur:
                result = fn(cur)
        except BaseException:
            self._discard(conn)
            raise
        self._idle.put(conn)
        return result

    def _discard(self, conn: pymysql.connections.Connection[Any]) -> None:
        with self._lock:
            self._all.discard(conn)
        with contextlib.suppress(pymysql.err.Error):  # already broken: nothing to close
            conn.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            with contextlib.suppress(pymysql.err.Error):
                conn.close()


class KohaSqlStore:
    """Patrons and PIN checks straight from Koha's tables, read-only."""

    capabilities = frozenset({Capability.VERIFY, Capability.BY_EMAIL, Capability.BY_RECORD_ID})

    def __init__(self, settings: KohaSqlSettings, hasher: PinHasher) -> None:
        self.s = settings
        self.hasher = hasher
        self.timeout = settings.query_timeout
        self._conns = _Connections(settings)
        self._workers = Workers(settings.pool_size, "koha-sql")
        salt = bcrypt.gensalt(settings.bcrypt_cost, prefix=b"2a")
        self._dummy = bcrypt.hashpw(b"no such card", salt).decode()
        self.today: Callable[[], dt.date] = dt.date.today

    async def _run(self, fn: Callable[[pymysql.cursors.Cursor], T], what: str) -> T:
        """Run `fn` on a pooled connection in a worker thread, within the deadline."""
        future = asyncio.ensure_future(self._workers.run(self._conns.run, fn))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            # The thread's socket timeout ends its wait; its connection is then discarded.
            future.add_done_callback(_retrieve)
            raise StoreUnavailable(f"koha-sql: {what} timed out after {self.timeout:g}s") from None
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError) as exc:
            raise StoreUnavailable(f"koha-sql: {what}: {_short(exc)}") from None
        except pymysql.err.ProgrammingError as exc:  # e.g. a Koha version without a column
            raise StoreUnavailable(f"koha-sql: {what}: schema mismatch: {_short(exc)}") from None

    def _max_attempts(self, row: KohaRow) -> int | None:
        if self.s.failed_login_attempts is not None:
            return self.s.failed_login_attempts
        try:
            return int(row.max_attempts) if row.max_attempts else None
        except ValueError:
            return None

    async def _fetch(self, query: str, value: Any, what: str) -> list[KohaRow]:
        def fetch(cur: pymysql.cursors.Cursor) -> list[KohaRow]:
            cur.execute(query, (value,))
            return [KohaRow(*r) for r in cur.fetchall()]

        return await self._run(fetch, what)

    async def _one(self, barcode: str) -> KohaRow | None:
        rows = await self._fetch(_BY_CARD, barcode, "lookup")
        return rows[0] if rows else None

    # -- Store ------------------------------------------------------------------------------
    async def lookup(self, barcode: str) -> Patron | None:
        row = await self._one(barcode)
        return None if row is None else to_patron(row, self.today(), self._max_attempts(row))

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        row = await self._one(barcode)
        stored = None if row is None else koha_hash(row.password)
        check = await self.hasher.verify(pin, stored or self._dummy)
        if row is None:
            return Verification(None, False)
        patron = to_patron(row, self.today(), self._max_attempts(row))
        # Re-hashing is the owner's business: Koha keeps its own hashes.
        return Verification(patron, stored is not None and check.ok, needs_rehash=False)

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        raise NotSupported("koha-sql is read-only: change PINs in Koha (staff API or OPAC)")

    async def health(self) -> Health:
        def probe(cur: pymysql.cursors.Cursor) -> int:
            cur.execute("SELECT COUNT(*) FROM borrowers WHERE borrowernumber < 0")
            return 0

        await self._run(probe, "health check")
        return Health(True, "koha-sql ok")

    async def aclose(self) -> None:
        # A worker may still be waiting on a stalled socket (bounded by its read timeout):
        # wait for it off the event loop.
        await asyncio.to_thread(self._workers.close)
        self._conns.close()

    # -- SearchableStore --------------------------------------------------------------------
    async def lookup_by_email(self, email: str) -> list[Patron]:
        found: dict[int, Patron] = {}
        for column in self.s.email_columns:
            for row in await self._fetch(_BY_EMAIL[column], email, "lookup by email"):
                if row.cardnumber:
                    patron = to_patron(row, self.today(), self._max_attempts(row))
                    found.setdefault(row.borrowernumber, patron)
        return list(found.values())

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        if not record_id.isdigit():
            return None
        rows = await self._fetch(_BY_NUMBER, int(record_id), "lookup by record id")
        if not rows or not rows[0].cardnumber:
            return None
        return to_patron(rows[0], self.today(), self._max_attempts(rows[0]))


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


async def open_store(settings: KohaSqlSettings, services: StoreServices) -> KohaSqlStore:
    store = KohaSqlStore(settings, services.hasher)
    try:
        await store.health()
    except BaseException:
        await store.aclose()
        raise
    return store


PLUGIN = StorePlugin(
    name="koha-sql",
    settings=KohaSqlSettings,
    open=open_store,
    description="Koha's MariaDB/MySQL tables, read-only (PIN changes stay in Koha)",
)
