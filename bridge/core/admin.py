"""What the admin verbs and `patron import` ask of the bridge's own stores (sqlite, postgres).

An update names only the fields it changes: a field it does not name keeps its stored value, and
a PIN hash is replaced only by a new one, so refreshing e-mails from the ILS can never erase a
PIN. A patron left without a PIN by an import (its PIN broke the policy) is flagged
`needs_pin_reset` until a PIN is set. Nothing here ever returns PIN material: `has_pin` is all an
admin sees.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bridge.core.patron import Patron

# Fields an update may name. `blocked` carries the reason (None: not blocked), as in the CSV.
UPDATABLE = (
    "record_id",
    "name",
    "email",
    "category",
    "expires",
    "blocked",
    "fines",
    "home_library",
)
PAGE_SIZE = 500


class Listing(enum.Enum):
    """Which patrons `patron list` shows (locks live in the throttle, not the store)."""

    ALL = "all"
    BLOCKED = "blocked"
    EXPIRED = "expired"
    NO_PIN = "no_pin"


@dataclass(frozen=True, slots=True)
class PatronDetails:
    patron: Patron
    has_pin: bool
    needs_pin_reset: bool


@dataclass(frozen=True, slots=True)
class PatronInsert:
    """A new patron: the whole record, its hash (or None) and whether it awaits a PIN reset."""

    patron: Patron
    pin_hash: str | None = None
    needs_pin_reset: bool = False


@dataclass(frozen=True, slots=True)
class PatronUpdate:
    """Changes to a stored patron: only `fields` named here and a new `pin_hash` if given.

    `flag_reset`: mark the patron as needing a PIN reset when it has no PIN (an import row
    whose PIN broke the policy)."""

    barcode: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    pin_hash: str | None = None
    flag_reset: bool = False


@runtime_checkable
class AdminStore(Protocol):
    async def details(self, barcodes: Sequence[str]) -> dict[str, PatronDetails]: ...

    async def write_patrons(
        self, inserts: Sequence[PatronInsert], updates: Sequence[PatronUpdate]
    ) -> None:
        """All of it in one transaction (an import batch)."""
        ...

    async def delete_patron(self, barcode: str) -> bool:
        """The patron and its reset tokens; False when there was no such card."""
        ...

    async def list_page(
        self, which: Listing, after: str, today: dt.date, limit: int = PAGE_SIZE
    ) -> list[PatronDetails]:
        """Patrons by barcode after `after` (keyset paging)."""
        ...


def update_params(
    update: PatronUpdate, now: Any, convert: Callable[[str, Any], Any]
) -> tuple[Any, ...]:
    """The bound values for both stores' UPDATE statement, in its order: a (given, value) pair
    per updatable field, then the PIN hash pair, the reset flag, `updated_at`, the barcode.
    `convert` turns a field's value into the database's form."""
    values: list[Any] = []
    for name in UPDATABLE:
        given = name in update.fields
        value = convert(name, update.fields[name]) if given else None
        if name == "blocked":
            reason = update.fields.get("blocked") if given else None
            values += [given, convert("blocked_flag", reason is not None), given, reason]
        else:
            values += [given, value]
    has_hash = update.pin_hash is not None
    values += [has_hash, update.pin_hash, has_hash, now, has_hash, update.flag_reset, now]
    values.append(update.barcode)
    return tuple(values)


def update_types(field_types: Mapping[str, str], flag: str, text: str, stamp: str) -> list[str]:
    """The database type of each value `update_params` binds, in its order (for a store that
    loads the updates into a temporary table first: PostgreSQL's COPY). `field_types`: each
    UPDATABLE field's type; `flag`, `text`, `stamp`: the boolean, text and timestamp types."""
    types: list[str] = []
    for name in UPDATABLE:
        if name == "blocked":
            types += [flag, flag, flag, text]
        else:
            types += [flag, field_types[name]]
    return [*types, flag, text, flag, stamp, flag, flag, stamp, text]


def update_sql(mark: str, true: str, false: str) -> str:
    """The one UPDATE both stores run (`mark`: the driver's placeholder). Every value is bound;
    a field not given keeps its stored value."""
    sets = []
    for name in UPDATABLE:
        if name == "blocked":
            sets.append(f"blocked = CASE WHEN {mark} THEN {mark} ELSE blocked END")
            sets.append(f"blocked_reason = CASE WHEN {mark} THEN {mark} ELSE blocked_reason END")
        else:
            sets.append(f"{name} = CASE WHEN {mark} THEN {mark} ELSE {name} END")
    sets.append(f"pin_hash = CASE WHEN {mark} THEN {mark} ELSE pin_hash END")
    sets.append(f"pin_changed_at = CASE WHEN {mark} THEN {mark} ELSE pin_changed_at END")
    sets.append(
        f"needs_reset = CASE WHEN {mark} THEN {false} "
        f"WHEN {mark} AND pin_hash IS NULL THEN {true} ELSE needs_reset END"
    )
    sets.append(f"updated_at = {mark}")
    return "UPDATE patrons SET " + ", ".join(sets) + f" WHERE barcode = {mark}"  # noqa: S608
