"""Patron rows from CSV files (demo patrons, `patron import`), checked line by line.

Columns by header: `barcode` is required; `pin` (plain, checked against the PIN policy) or
`pin_hash` (pre-hashed from an ILS export); `name, email, expires, category, blocked, fines,
home_library, record_id` optional. A bad row is reported by line number and skipped; good rows
are kept. Errors name the column and never quote a value (a shifted row could put a PIN there).

Also the store-agnostic pieces the bridge's own stores (sqlite, postgres) share: loading the demo
patrons, checking a PIN against a looked-up row, hashing a new patron's PIN.
"""

from __future__ import annotations

import csv
import datetime as dt
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import structlog

from bridge.core import legacy_hashes
from bridge.core.auth import valid_barcode
from bridge.core.patron import Patron
from bridge.core.pin import PinHasher, PinPolicy
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    NewPatron,
    StoreUnavailable,
    Verification,
    WritableStore,
)

KNOWN_COLUMNS = frozenset(
    {
        "barcode",
        "pin",
        "pin_hash",
        "name",
        "email",
        "expires",
        "category",
        "blocked",
        "fines",
        "home_library",
        "record_id",
    }
)


_MAX_FINES = Decimal(10) ** 9


class RowError(ValueError):
    """A row that cannot be imported; the message names the column, never the PIN."""


@dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    message: str


def parse_date(value: str) -> dt.date | None:
    value = value.strip()
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise RowError("expires: not a date (YYYY-MM-DD)") from None


def parse_fines(value: str) -> Decimal:
    value = value.strip() or "0"
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise RowError("fines: not an amount") from None
    if not amount.is_finite() or amount < 0:
        raise RowError("fines: must be zero or more")
    if amount >= _MAX_FINES:  # also keeps quantize() from overflowing (1e999999999)
        raise RowError("fines: too large")
    return amount.quantize(Decimal("0.01"))


def row_to_patron(row: dict[str, str], policy: PinPolicy) -> NewPatron:
    def get(key: str) -> str:
        return (row.get(key) or "").strip()

    barcode = get("barcode")
    if not valid_barcode(barcode):
        raise RowError("barcode: missing or malformed")
    pin_text, pin_hash = row.get("pin") or "", get("pin_hash")
    if pin_text and pin_hash:
        raise RowError("give pin or pin_hash, not both")
    if pin_hash and not legacy_hashes.recognised(pin_hash):
        raise RowError("pin_hash: not a hash form the bridge can verify (see docs/stores.md)")
    pin = None
    if pin_text:
        pin = Secret(pin_text)
        verdict = policy.check(pin)
        if not verdict.ok:
            raise RowError(f"pin: {verdict.reason}")
    blocked_text = get("blocked")
    patron = Patron(
        barcode=barcode,
        record_id=get("record_id") or uuid.uuid4().hex,
        name=get("name"),
        email=get("email") or None,
        category=get("category"),
        expires=parse_date(get("expires")),
        blocked=bool(blocked_text),
        blocked_reason=blocked_text or None,
        fines=parse_fines(get("fines")),
        home_library=get("home_library") or None,
    )
    return NewPatron(patron, pin=pin, pin_hash=pin_hash or None)


def read_csv(lines: Iterable[str], policy: PinPolicy) -> Iterator[NewPatron | BadRow]:
    """Yield a NewPatron per good row and a BadRow per bad one (line numbers from 1 = header)."""
    reader = csv.DictReader(lines)
    header = reader.fieldnames or []
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if "barcode" not in header:
        yield BadRow(1, "header: no barcode column")
        return
    if unknown:
        yield BadRow(1, f"header: unknown columns {', '.join(unknown)}")
        return
    for row in reader:
        try:
            if None in row:
                raise RowError("more fields than the header names")
            yield row_to_patron(row, policy)
        except RowError as exc:
            yield BadRow(reader.line_num, str(exc))


async def load_demo(store: WritableStore, csv_path: Path) -> int:
    """Load the demo patrons into a new, empty store; any bad row refuses the whole file."""
    with csv_path.open(encoding="utf-8", newline="") as handle:
        rows = list(read_csv(handle, PinPolicy()))
    bad = [r for r in rows if isinstance(r, BadRow)]
    if bad:
        raise StoreUnavailable(f"{csv_path}: line {bad[0].line}: {bad[0].message}")
    count = await store.add_patrons(r for r in rows if not isinstance(r, BadRow))
    # the first start says what it created
    structlog.get_logger("bridge.store").info(
        "demo_patrons_loaded", count=count, file=str(csv_path)
    )
    return count


# -- shared by the stores that keep their own PIN hashes (sqlite, postgres) ----------------------

OWN_STORE_CAPABILITIES = frozenset(
    {
        Capability.VERIFY,
        Capability.CHANGE_PIN,
        Capability.BLOCK,
        Capability.BY_EMAIL,
        Capability.BY_RECORD_ID,
        Capability.ADMIN,
        Capability.RESET_TOKENS,
        Capability.ONE_TIME_PIN,
    }
)


async def verify_found(
    hasher: PinHasher,
    found: tuple[Patron, str | None] | None,
    pin: Secret,
    one_time_since: dt.datetime | None = None,
) -> Verification:
    """Check a PIN against a looked-up (patron, stored hash); unknown cards and cards with no
    PIN set spend the same KDF work and never match. `one_time_since`: the stored PIN is a
    one-time PIN set then (reported only when it matched)."""
    if found is None:
        await hasher.dummy_verify(pin)
        return Verification(None, False)
    patron, stored = found
    if stored is None:
        await hasher.dummy_verify(pin)
        return Verification(patron, False)
    check = await hasher.verify(pin, stored)
    return Verification(patron, check.ok, check.needs_rehash, one_time_since if check.ok else None)


def one_time_since(needs_reset: object, pin_changed_at: object) -> dt.datetime | None:
    """When a card's PIN is a one-time PIN: the stores' `needs_reset` flag on a card that has
    a PIN (an import sets it only on cards without one), read as the time the PIN was set."""
    if not needs_reset:
        return None
    if isinstance(pin_changed_at, dt.datetime):
        since = pin_changed_at
    elif isinstance(pin_changed_at, str):
        since = dt.datetime.fromisoformat(pin_changed_at)
    else:
        return dt.datetime.fromtimestamp(0, dt.UTC)  # no time: treat as long expired
    return since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)


async def hash_of(hasher: PinHasher, new: NewPatron) -> str | None:
    """The hash to store for a new patron: its plain PIN hashed, or the imported hash as is."""
    if new.pin is not None:
        return await hasher.hash(new.pin)
    return new.pin_hash
