"""`patron import`: CSV rows into the bridge's own store, without ever erasing what a row omits.

Rows update patrons by barcode. A column the file does not have, or an empty cell, leaves the
stored value alone (`blank_clears`: an empty cell clears the field instead); a PIN hash is only
replaced by a new `pin` or `pin_hash` value, never cleared. `mode` says what happens to new and
existing barcodes (add: only new ones, update: only existing ones, upsert: both). A barcode that
appears twice in one file is an error reported with every line it is on, and none of its rows is
applied (no silent "last row wins"). A row whose PIN breaks the policy imports the patron without
a PIN, flagged as needing a reset (`skip_bad_pins`: the row is skipped instead).

Speed: rows are read ahead in batches; each batch's PINs go to the hasher's worker threads at
once (Argon2id and scrypt release the GIL, so threads use every core: measured, see
docs/stores.md), and a batch is written in one transaction while the next ones hash, so the KDF
pool never waits on the database. Rows without a plain PIN cost no KDF and are written in batches
of 1000.

Messages speak to the admin and name the line and column, never a cell's value (a shifted row
could put a PIN in any column).
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TextIO

from bridge.core import legacy_hashes
from bridge.core.admin import AdminStore, PatronDetails, PatronInsert, PatronUpdate
from bridge.core.auth import valid_barcode
from bridge.core.patron import Patron
from bridge.core.pin import PinHasher, PinPolicy, PolicyResult
from bridge.core.secret import Secret
from bridge.core.store import StoreError
from bridge.records import KNOWN_COLUMNS, RowError, parse_date, parse_fines

Mode = Literal["add", "update", "upsert"]

# The columns `patron import --help` lists, with what each holds.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("barcode", "the card number (required)"),
    ("pin", "a PIN in plain text, checked against the PIN policy and hashed"),
    ("pin_hash", "a hash exported from an ILS (docs/stores.md lists the forms)"),
    ("name", "display name, e.g. 'Surname, Given'"),
    ("email", "e-mail address (PIN reset mail)"),
    ("expires", "card expiry date, YYYY-MM-DD"),
    ("category", "patron category code"),
    ("home_library", "home branch code"),
    ("record_id", "the ILS's record id (made up when absent on a new patron)"),
    ("blocked", "a block reason; empty = not blocked"),
    ("fines", "amount owed, e.g. 2.50"),
)
FIELD_COLUMNS = (
    "record_id",
    "name",
    "email",
    "category",
    "expires",
    "blocked",
    "fines",
    "home_library",
)
# What an empty cell becomes under --blank-clears (record_id cannot be cleared).
_CLEARED: dict[str, Any] = {
    "name": "",
    "email": None,
    "category": "",
    "expires": None,
    "blocked": None,
    "fines": Decimal("0.00"),
    "home_library": None,
}
ROWS_PER_BATCH = 1000
PINS_PER_BATCH = 64  # hashing rows per batch: small enough for a smooth progress bar


def admin_reason(policy: PinPolicy, verdict: PolicyResult) -> str:
    """The policy's refusal in the admin's words (the patron-facing text is for the pages)."""
    if verdict.code == "repeating":
        return "pin: repeating digits (policy)"
    if verdict.code == "not_digits":
        return "pin: not only digits 0-9 (policy)"
    if verdict.code == "length":
        if policy.min_length == policy.max_length:
            return f"pin: not {policy.min_length} digits (policy)"
        return f"pin: not {policy.min_length} to {policy.max_length} digits (policy)"
    if verdict.code == "common":
        return "pin: on the blocklist of common PINs (policy)"
    return f"pin: refused by the policy ({verdict.code})"


@dataclass(frozen=True, slots=True)
class ImportOptions:
    mode: Mode = "upsert"
    dry_run: bool = False
    blank_clears: bool = False
    skip_bad_pins: bool = False


@dataclass(slots=True)
class Row:
    """One good row: the fields it names, and its PIN (plain, pre-hashed or none)."""

    line: int
    barcode: str
    fields: dict[str, Any]
    pin: Secret | None = None
    pin_hash: str | None = None
    bad_pin: str | None = None  # the admin's message when the PIN broke the policy


@dataclass(frozen=True, slots=True)
class Problem:
    line: str  # "217" or "3, 7"
    message: str
    rows: int = 1  # rows it stands for (a duplicate stands for all its lines)
    # "error": not imported; "no_pin": imported without a PIN (needs a reset); "pin_kept":
    # imported, the stored PIN kept (the row's PIN broke the policy)
    kind: Literal["error", "no_pin", "pin_kept"] = "error"


@dataclass(slots=True)
class Summary:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: int = 0
    without_pin: int = 0
    pin_kept: int = 0
    rows: int = 0
    seconds: float = 0.0
    changes: list[str] = field(default_factory=list)
    # Barcodes of existing patrons the import wrote: a running daemon's verified cache may hold
    # them with an old PIN or standing (`patron import` tells it to forget).
    touched: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class ImportError_(Exception):
    """The file cannot be imported at all (header)."""


# -- reading ----------------------------------------------------------------------------------


def check_header(header: list[str]) -> None:
    if "barcode" not in header:
        raise ImportError_("line 1: header: no barcode column")
    unknown = [name for name in header if name not in KNOWN_COLUMNS]
    if unknown:
        raise ImportError_(f"line 1: header: unknown columns {', '.join(unknown)}")


def duplicates(lines: Iterable[str]) -> tuple[int, dict[str, list[int]]]:
    """First pass: the number of data rows, and every barcode that is on more than one line
    (with its lines). Only the barcode column is looked at."""
    try:
        return _duplicates(lines)
    except csv.Error:
        raise ImportError_("not valid CSV (a NUL byte, or a field over the size limit)") from None


def _duplicates(lines: Iterable[str]) -> tuple[int, dict[str, list[int]]]:
    reader = csv.reader(lines)
    header = next(reader, None) or []
    try:
        index = header.index("barcode")
    except ValueError:
        return 0, {}
    seen: dict[str, int] = {}
    repeated: dict[str, list[int]] = {}
    rows = 0
    for record in reader:
        rows += 1
        if index >= len(record):
            continue
        barcode = record[index].strip()
        first = seen.setdefault(barcode, reader.line_num)
        if first != reader.line_num:
            repeated.setdefault(barcode, [first]).append(reader.line_num)
    return rows, repeated


def parse_row(
    row: dict[str, str | Any],
    line: int,
    policy: PinPolicy,
    options: ImportOptions,
    columns: Iterable[str] = FIELD_COLUMNS,
) -> Row:
    """One row's fields; `columns`: the field columns the file has (found once per file)."""

    def cell(key: str) -> str | None:
        value = row.get(key)
        return None if value is None else str(value).strip()

    barcode = cell("barcode") or ""
    if not valid_barcode(barcode):
        raise RowError("barcode: missing or malformed")
    fields: dict[str, Any] = {}
    for name in columns:
        value = cell(name)
        if value is None:
            continue  # the file has no such column (or the row is short): the value stays
        if value == "":
            if options.blank_clears and name in _CLEARED:
                fields[name] = _CLEARED[name]
            continue
        if name == "expires":
            fields[name] = parse_date(value)
        elif name == "fines":
            fields[name] = parse_fines(value)
        else:
            fields[name] = value
    pin_text = row.get("pin") or ""
    pin_hash = cell("pin_hash") or ""
    if pin_text and pin_hash:
        raise RowError("give pin or pin_hash, not both")
    if pin_hash:
        if not legacy_hashes.recognised(pin_hash):
            raise RowError("pin_hash: not a hash form the bridge can verify (see docs/stores.md)")
        return Row(line, barcode, fields, pin_hash=pin_hash)
    if pin_text:
        pin = Secret(str(pin_text))
        verdict = policy.check(pin)
        if not verdict.ok:
            reason = admin_reason(policy, verdict)
            if options.skip_bad_pins:
                raise RowError(reason)
            return Row(line, barcode, fields, bad_pin=reason)
        return Row(line, barcode, fields, pin=pin)
    return Row(line, barcode, fields)


def read_rows(
    handle: TextIO, policy: PinPolicy, options: ImportOptions, repeated: dict[str, list[int]]
) -> Iterator[Row | Problem]:
    reader = csv.reader(handle)
    try:
        header = next(reader, [])
    except csv.Error:
        raise ImportError_("line 1: header: not valid CSV") from None
    check_header(header)
    width = len(header)
    columns = [name for name in FIELD_COLUMNS if name in header]
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:  # a NUL byte, a field over the size limit: stop, said in one line
            raise ImportError_(f"line {reader.line_num + 1}: not valid CSV") from None
        if not values:
            continue  # a blank line
        line = reader.line_num
        try:
            if len(values) > width:
                raise RowError("more fields than the header names")
            parsed = parse_row(
                dict(zip(header, values, strict=False)), line, policy, options, columns
            )
        except RowError as exc:
            yield Problem(str(line), str(exc))
            continue
        lines = repeated.get(parsed.barcode)
        if lines is not None:
            if line == lines[0]:
                listed = ", ".join(str(n) for n in lines)
                yield Problem(
                    listed,
                    "barcode: the same card on each of these lines; none of them imported",
                    rows=len(lines),
                )
            continue
        yield parsed


# -- deciding and writing ---------------------------------------------------------------------


def _new_patron(row: Row) -> Patron:
    f = row.fields
    reason = f.get("blocked")
    return Patron(
        barcode=row.barcode,
        record_id=f.get("record_id") or os.urandom(16).hex(),
        name=f.get("name", ""),
        email=f.get("email"),
        category=f.get("category", ""),
        expires=f.get("expires"),
        blocked=reason is not None,
        blocked_reason=reason,
        fines=f.get("fines", Decimal("0.00")),
        home_library=f.get("home_library"),
    )


def changed_fields(row: Row, stored: PatronDetails) -> list[str]:
    """The fields this row would change on the stored patron (a PIN always counts)."""
    p = stored.patron
    current: dict[str, Any] = {
        "record_id": p.record_id,
        "name": p.name,
        "email": p.email,
        "category": p.category,
        "expires": p.expires,
        "blocked": p.blocked_reason if p.blocked else None,
        "fines": p.fines,
        "home_library": p.home_library,
    }
    names = [n for n, v in row.fields.items() if current.get(n) != v]
    if row.pin is not None or row.pin_hash is not None:
        names.append("pin")
    return names


@dataclass(slots=True)
class _Batch:
    first_line: int
    last_line: int
    inserts: list[tuple[Row, asyncio.Future[str] | None]] = field(default_factory=list)
    updates: list[tuple[Row, asyncio.Future[str] | None]] = field(default_factory=list)
    rows: int = 0


class Importer:
    """Runs one import: `report(problem)` is called for every error or notice as it happens,
    `progress(done, total)` after every batch."""

    def __init__(
        self,
        store: AdminStore,
        hasher: PinHasher,
        policy: PinPolicy,
        options: ImportOptions,
        report: Callable[[Problem], None],
        progress: Callable[[int], None],
    ) -> None:
        self.store = store
        self.hasher = hasher
        self.policy = policy
        self.options = options
        self.report = report
        self.progress = progress
        self.summary = Summary()
        self._done = 0

    def _problem(self, problem: Problem) -> None:
        if problem.kind == "no_pin":
            self.summary.without_pin += 1
        elif problem.kind == "pin_kept":
            self.summary.pin_kept += 1
        else:
            self.summary.bad += problem.rows
            self._done += problem.rows
        self.report(problem)

    async def run(self, rows: Iterable[Row | Problem]) -> Summary:
        started = time.perf_counter()
        queue: asyncio.Queue[_Batch | None] = asyncio.Queue(maxsize=3)
        writer = asyncio.create_task(self._writer(queue))
        try:
            pending: list[Row | Problem] = []  # problems ride along, so lines report in order
            pins = 0
            for item in rows:
                pending.append(item)
                if isinstance(item, Problem):
                    continue
                pins += item.pin is not None
                if len(pending) >= ROWS_PER_BATCH or pins >= PINS_PER_BATCH:
                    await _put(queue, await self._prepare(pending), writer)
                    pending, pins = [], 0
            if pending:
                await _put(queue, await self._prepare(pending), writer)
            await _put(queue, None, writer)
            await writer
        finally:
            if not writer.done():
                writer.cancel()
        self.summary.seconds = time.perf_counter() - started
        self.summary.rows = self._done
        return self.summary

    async def _prepare(self, items: list[Row | Problem]) -> _Batch:
        """Look the batch's cards up, decide insert/update/error per row, start its hashes."""
        rows = [r for r in items if isinstance(r, Row)]
        stored = await self.store.details([r.barcode for r in rows]) if rows else {}
        batch = _Batch(rows[0].line if rows else 0, rows[-1].line if rows else 0)
        mode = self.options.mode
        for row in items:
            if isinstance(row, Problem):
                self._problem(row)
                continue
            found = stored.get(row.barcode)
            if found is None and mode == "update":
                self._problem(Problem(str(row.line), "barcode: not in the store (--mode update)"))
                continue
            if found is not None and mode == "add":
                self._problem(Problem(str(row.line), "barcode: already in the store (--mode add)"))
                continue
            if found is not None:
                changes = changed_fields(row, found)
                if not changes and row.bad_pin is None:
                    self.summary.unchanged += 1
                    self._done += 1
                    continue
                if self.options.dry_run:
                    self.summary.changes.append(
                        f"line {row.line}: would update {', '.join(changes) or 'nothing'}"
                    )
            elif self.options.dry_run:
                self.summary.changes.append(f"line {row.line}: would add a new patron")
            if row.bad_pin is not None:
                keeps = found is not None and found.has_pin
                what = "stored PIN kept" if keeps else "imported without a PIN, needs a PIN reset"
                kind: Literal["no_pin", "pin_kept"] = "pin_kept" if keeps else "no_pin"
                self._problem(Problem(str(row.line), f"{row.bad_pin}; {what}", kind=kind))
            hashing = None
            if row.pin is not None and not self.options.dry_run:
                hashing = asyncio.ensure_future(self.hasher.hash(row.pin))
            (batch.inserts if found is None else batch.updates).append((row, hashing))
            batch.rows += 1
        return batch

    async def _writer(self, queue: asyncio.Queue[_Batch | None]) -> None:
        while (batch := await queue.get()) is not None:
            inserts: list[PatronInsert] = []
            updates: list[PatronUpdate] = []
            for row, hashing in batch.inserts:
                pin_hash = await hashing if hashing is not None else row.pin_hash
                inserts.append(
                    PatronInsert(
                        _new_patron(row), pin_hash, needs_pin_reset=row.bad_pin is not None
                    )
                )
            for row, hashing in batch.updates:
                pin_hash = await hashing if hashing is not None else row.pin_hash
                updates.append(
                    PatronUpdate(row.barcode, row.fields, pin_hash, row.bad_pin is not None)
                )
            if not self.options.dry_run and (inserts or updates):
                try:
                    await self.store.write_patrons(inserts, updates)
                except StoreError as exc:
                    self._problem(
                        Problem(f"{batch.first_line}-{batch.last_line}", str(exc), batch.rows)
                    )
                    self.progress(self._done)
                    continue
            self.summary.added += len(inserts)
            self.summary.updated += len(updates)
            if not self.options.dry_run:
                self.summary.touched.extend(update.barcode for update in updates)
            self._done += batch.rows
            self.progress(self._done)


async def _put(queue: asyncio.Queue[_Batch | None], batch: _Batch | None, writer: Any) -> None:
    """Queue a batch, unless the writer has failed (then raise its error, do not wait)."""
    put = asyncio.ensure_future(queue.put(batch))
    await asyncio.wait({put, writer}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
    if writer.done():
        writer.result()


def closing_line(summary: Summary, source: str, dry_run: bool) -> str:
    rate = f"{summary.rate:,.0f} rows/s"
    if dry_run:
        return (
            f"dry run, nothing written: would add {summary.added} and update {summary.updated} "
            f"patrons, {summary.unchanged} unchanged, {summary.bad} bad rows, from {source} "
            f"({summary.rows} rows in {summary.seconds:.1f} s, {rate})"
        )
    return (
        f"imported {summary.added + summary.updated} patrons ({summary.added} added, "
        f"{summary.updated} updated, {summary.unchanged} unchanged), "
        f"{summary.without_pin} without a PIN and {summary.pin_kept} with their stored PIN kept "
        f"(policy), skipped {summary.bad} bad rows, "
        f"from {source} ({summary.rows} rows in {summary.seconds:.1f} s, {rate})"
    )
