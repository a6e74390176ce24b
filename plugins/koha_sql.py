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
- `debarred` after today (9999-12-31: indefinite), or a live `borrower_debarments` row (no
  expiration, or one after today): blocked (restricted). A restriction ending today is already
  lifted, as in Koha;
- `lost`: blocked (card reported lost); `gonenoaddress`: blocked (address unconfirmed);
- `password_expiration_date` passed: blocked (Koha refuses an expired password);
- `dateexpiry` → expiry; balance → fines (credits do not make fines negative).

Zero dates (`0000-00-00`, which old upgraded Koha databases hold in `dateexpiry`, `debarred` or
`password_expiration_date`; PyMySQL hands them over as the string, not a date) mean "no date",
as in Koha: `Koha::DateUtils::dt_from_string` returns undef for them, `is_expired` reads the
card as never expiring and `IsDebarred` (`debarred > CURRENT_DATE()`) as not restricted. Any
other value that is not a date, and any driver error, is "store unavailable", never an
exception the front ends do not expect.

Identifiers (`identifier`): `cardnumber` (default), `userid` (Koha's login name), or `either`:
the card number first, then the userid. With `either` the authenticator first asks which card
an identifier names (`resolve_identifier`), so the userid and the card number of one patron
share one throttle, lock and cache key: the card number.

Case: Koha's tables use a case-insensitive collation (`utf8mb4_unicode_ci` in
kohastructure.sql), so `k19abc` finds `K19ABC`. The store reads the collation of
`borrowers.cardnumber` when it opens; with a `_ci` collation its `canonical_barcode` upper-cases
ASCII, so case variants are one card for the bridge's throttle, locks and cache too.

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
from collections.abc import Awaitable, Callable
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
    ascii_case_insensitive,
    same_barcode,
)
from bridge.settings import Port, Section
from bridge.workers import Workers

T = TypeVar("T")
Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]
EmailColumn = Literal["email", "emailpro", "B_email"]
Identifier = Literal["cardnumber", "userid", "either"]


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
    # What patrons type as their barcode: Koha's card number, its userid, or either (the card
    # number first).
    identifier: Identifier = "cardnumber"


_EMAIL_COLUMNS: tuple[EmailColumn, ...] = ("email", "emailpro", "B_email")

# Every statement is a constant; values are always bound parameters.
_SELECT = """
SELECT b.borrowernumber, b.cardnumber, b.userid, b.surname, b.firstname, b.email, b.categorycode,
       b.branchcode, b.dateexpiry, b.debarred, b.debarredcomment, b.lost, b.gonenoaddress,
       b.login_attempts, b.password_expiration_date, b.password,
       (SELECT COALESCE(SUM(a.amountoutstanding), 0) FROM accountlines a
         WHERE a.borrowernumber = b.borrowernumber) AS balance,
       (SELECT MAX(COALESCE(d.comment, d.type)) FROM borrower_debarments d
         WHERE d.borrowernumber = b.borrowernumber
           AND (d.expiration IS NULL OR d.expiration > CURDATE())) AS restriction,
       (SELECT s.value FROM systempreferences s
         WHERE s.variable = 'FailedLoginAttempts') AS max_attempts
  FROM borrowers b
"""
# Koha::Patron::Debarments::_UpdateBorrowerDebarmentFlags counts a restriction as live while
# `expiration > CURRENT_DATE() OR expiration IS NULL` (Koha-Community/Koha
# Koha/Patron/Debarments.pm @ 3691bd8); a zero expiration is not live there either.
_BY_CARD = _SELECT + " WHERE b.cardnumber = %s"
_BY_USERID = _SELECT + " WHERE b.userid = %s"
# Which card an identifier names, card number first (`identifier = "either"`).
_RESOLVE = (
    "SELECT 0 AS precedence, cardnumber FROM borrowers WHERE cardnumber = %s "
    "UNION ALL SELECT 1, cardnumber FROM borrowers WHERE userid = %s "
    "ORDER BY precedence LIMIT 1"
)
# The collation the identifier column compares with (cardnumber, or userid).
_COLLATION = (
    "SELECT COLLATION_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
    "AND TABLE_NAME = 'borrowers' AND COLUMN_NAME = %s"
)
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
    userid: str | None
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


class UnreadableRow(ValueError):
    """A `borrowers` value the bridge cannot read (not a date where Koha keeps dates)."""


def koha_date(value: Any, column: str) -> dt.date | None:
    """A Koha DATE column as a date, or None for "no date".

    PyMySQL returns MariaDB's zero dates (`0000-00-00`, also `0000-00-00 00:00:00`) as strings:
    Koha's `dt_from_string` answers undef for anything starting `0000-0`, so they are no date.
    Any other string that is not an ISO date is refused (UnreadableRow): guessing could unblock
    a restricted card.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        if value.startswith("0000-0"):
            return None
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise UnreadableRow(f"borrowers.{column} is not a date")


def koha_row(values: tuple[Any, ...]) -> KohaRow:
    """One `_SELECT` row, with Koha's zero dates read as no date."""
    row = KohaRow(*values)
    return msgspec.structs.replace(
        row,
        dateexpiry=koha_date(row.dateexpiry, "dateexpiry"),
        debarred=koha_date(row.debarred, "debarred"),
        password_expiration_date=koha_date(
            row.password_expiration_date, "password_expiration_date"
        ),
        balance=Decimal(row.balance if row.balance is not None else 0),
    )


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
    # Koha::Patron->is_debarred: `debarred =~ '^9999' or dt_from_string(debarred) >
    # dt_from_string` (the date at midnight against now), so a restriction ending today is
    # already lifted (Koha-Community/Koha Koha/Patron.pm @ 812ebf0; IsDebarred in
    # Koha/Patron/Debarments.pm says the same in SQL: `debarred > CURRENT_DATE()`).
    if row.debarred is not None and (row.debarred > today or row.debarred.year >= 9999):
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
        barcode=row.cardnumber or row.userid or "",
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
        # Exact until `detect_collation` has read the column's collation at open.
        self.canonical_barcode: Callable[[str], str] = same_barcode
        # Only with `identifier = "either"`: which card an identifier names.
        self.resolve_identifier: Callable[[str], Awaitable[str | None]] | None = (
            self._resolve if settings.identifier == "either" else None
        )
        self._lookup = {"cardnumber": (_BY_CARD,), "userid": (_BY_USERID,)}.get(
            settings.identifier, (_BY_CARD, _BY_USERID)
        )

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
        except pymysql.err.Error as exc:  # any other driver error (data, internal, ...)
            raise StoreUnavailable(f"koha-sql: {what}: {type(exc).__name__}") from None
        except UnreadableRow as exc:
            raise StoreUnavailable(f"koha-sql: {what}: {exc}") from None
        except (ValueError, TypeError, ArithmeticError, UnicodeError) as exc:
            # A value the driver or the row mapping could not read. Only the type is quoted:
            # the row holds a PIN hash.
            raise StoreUnavailable(
                f"koha-sql: {what}: unreadable row ({type(exc).__name__})"
            ) from None

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
            return [koha_row(r) for r in cur.fetchall()]

        return await self._run(fetch, what)

    async def _one(self, identifier: str) -> KohaRow | None:
        """The patron `identifier` names: by card number, userid, or both in that order."""
        queries = self._lookup

        def fetch(cur: pymysql.cursors.Cursor) -> KohaRow | None:
            for query in queries:
                cur.execute(query, (identifier,))
                found = cur.fetchone()
                if found is not None:
                    return koha_row(found)
            return None

        return await self._run(fetch, "lookup")

    async def _resolve(self, identifier: str) -> str | None:
        """The card number `identifier` names (card number first, then userid), or None."""

        def fetch(cur: pymysql.cursors.Cursor) -> str | None:
            cur.execute(_RESOLVE, (identifier, identifier))
            found = cur.fetchone()
            return None if found is None or not found[1] else str(found[1])

        return await self._run(fetch, "resolve identifier")

    async def detect_collation(self) -> str | None:
        """Read the collation of the column identifiers are keyed on (`borrowers.cardnumber`;
        `userid` with `identifier = "userid"`) and choose `canonical_barcode` by it: a
        case-insensitive (`_ci`) collation makes case variants one card."""
        column = "userid" if self.s.identifier == "userid" else "cardnumber"

        def fetch(cur: pymysql.cursors.Cursor) -> str | None:
            cur.execute(_COLLATION, (column,))
            found = cur.fetchone()
            return None if found is None or found[0] is None else str(found[0])

        collation = await self._run(fetch, "collation")
        exact = collation is not None and not collation.lower().endswith("_ci")
        self.canonical_barcode = same_barcode if exact else ascii_case_insensitive
        return collation

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
        await store.detect_collation()
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
