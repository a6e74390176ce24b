"""The admin verbs beyond add/show/block: import (update by barcode), update, delete, list, and
the pepper state `check-config` reports. Kept apart from `bridge.cli` (which registers them) so
the command's table of verbs stays short.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from bridge import __version__
from bridge.cli import (
    OK,
    REFUSED,
    USAGE,
    Refused,
    UsageError,
    _config,
    _patron_json,
    _with_core,
    _writable,
)
from bridge.config import Config
from bridge.control import notify
from bridge.core import pepper as pepper_check
from bridge.core.admin import AdminStore, Listing, PatronDetails, PatronUpdate
from bridge.core.auth import valid_barcode
from bridge.core.throttle import CARD
from bridge.importer import (
    COLUMNS,
    Importer,
    ImportError_,
    ImportOptions,
    Problem,
    closing_line,
    duplicates,
    read_rows,
)
from bridge.loop import run as run_loop
from bridge.records import RowError, parse_date, parse_fines

VERSION = f"patron-bridge {__version__}"


def _admin(core: Any) -> AdminStore:
    store = _writable(core)
    if not isinstance(store, AdminStore):
        raise Refused(f"the {type(store).__name__} store cannot do this")
    return store


def details_json(found: PatronDetails) -> dict[str, Any]:
    record = _patron_json(found.patron)
    record["has_pin"] = found.has_pin
    record["needs_pin_reset"] = found.needs_pin_reset
    return record


# -- progress ---------------------------------------------------------------------------------


class Progress:
    """On a terminal: a bar on its own last line, problem lines printed above it. Elsewhere
    (a log file, cron mail): a plain progress line every `every` seconds."""

    def __init__(self, stream: TextIO, total: int, every: float = 5.0) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.tty = stream.isatty()
        self.every = every
        self.started = time.monotonic()
        self._last = self.started
        self._done = 0
        self._drawn = False

    def bar(self, width: int = 30) -> str:
        done = min(self._done, self.total)
        filled = width * done // self.total
        rate = done / max(time.monotonic() - self.started, 1e-6)
        return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} rows, {rate:,.0f}/s"

    def line(self, text: str) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K")  # the bar's line becomes the message's
        self.stream.write(text + "\n")
        if self.tty and self._drawn:
            self.stream.write(self.bar())
        self.stream.flush()

    def update(self, done: int) -> None:
        self._done = done
        now = time.monotonic()
        if self.tty:
            if now - self._last >= 0.1 or done >= self.total:
                self.stream.write("\r\x1b[K" + self.bar())
                self.stream.flush()
                self._drawn = True
                self._last = now
        elif now - self._last >= self.every:
            percent = 100 * min(done, self.total) // self.total
            rate = done / max(now - self.started, 1e-6)
            self.stream.write(
                f"progress: {done}/{self.total} rows ({percent}%), {rate:,.0f} rows/s\n"
            )
            self.stream.flush()
            self._last = now

    def finish(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r\x1b[K" + self.bar() + "\n")
            self.stream.flush()


# -- patron import ----------------------------------------------------------------------------


def cmd_patron_import(args: argparse.Namespace) -> int:
    config = _config(args)
    path = Path(args.file)
    try:
        with path.open(encoding="utf-8", newline="") as first:
            total, repeated = duplicates(first)
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    except ImportError_ as exc:
        raise UsageError(f"{path}: {exc}") from None
    options = ImportOptions(
        mode=args.mode,
        dry_run=args.dry_run,
        blank_clears=args.blank_clears,
        skip_bad_pins=args.skip_bad_pins,
    )
    progress = Progress(sys.stderr, total)

    def report(problem: Problem) -> None:
        where = "lines" if "," in problem.line or "-" in problem.line else "line"
        progress.line(f"{path}: {where} {problem.line}: {problem.message}")

    async def body(core: Any) -> int:
        store = _admin(core)
        policy = core.authenticator.pin_policy
        importer = Importer(store, core.hasher, policy, options, report, progress.update)
        with handle:
            try:
                summary = await importer.run(read_rows(handle, policy, options, repeated))
            except ImportError_ as exc:
                progress.line(f"{path}: {exc}")
                return USAGE
        progress.finish()
        for change in summary.changes:
            print(change)
        if not options.dry_run:
            core.audit.event(
                "patrons_imported",
                added=summary.added,
                updated=summary.updated,
                bad=summary.bad,
                without_pin=summary.without_pin,
                actor="cli",
            )
        print(closing_line(summary, str(path), options.dry_run))
        clean = summary.bad == summary.without_pin == summary.pin_kept == 0
        if summary.touched and not _forget_updated(config, core, summary.touched):
            return REFUSED
        return OK if clean else REFUSED

    return run_loop(_with_core(config, body))


def _forget_updated(config: Config, core: Any, barcodes: list[str]) -> bool:
    """After an import rewrote existing patrons: other workers and hosts drop them (the
    `[state]` bus), and the running daemon forgets its verified cache, so a replaced PIN or a
    new block counts at once rather than after `cache.ttl`. False (said on stderr) when a
    daemon runs but could not be told."""
    from bridge import logs
    from bridge.runtime.instance import tell

    for barcode in barcodes:
        core.authenticator.invalidate(barcode)
    told = tell(config.path(config.control.socket), "forget_all", "")
    if told.failed:
        logs.flush()
        who = f"pid {told.pid}" if told.pid else "a running daemon"
        print(
            f"patron-bridge: imported, but the daemon ({who}) could not be told through "
            f"{config.path(config.control.socket)}: it may accept a replaced PIN from its "
            "cache until cache.ttl passes; run `patron-bridge reload` or restart it",
            file=sys.stderr,
        )
        return False
    return True


# -- patron update / delete / list ------------------------------------------------------------


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    try:
        for name in ("name", "email", "category", "home_library", "record_id"):
            value = getattr(args, name, None)
            if value is not None:
                # '' clears: to blank text where the column is text, to none where optional
                fields[name] = value if value or name in ("name", "category") else None
        if args.expires is not None:
            fields["expires"] = parse_date(args.expires)
        if args.fines is not None:
            fields["fines"] = parse_fines(args.fines)
    except RowError as exc:
        raise UsageError(str(exc)) from None
    if fields.get("record_id") is None:
        fields.pop("record_id", None)
    return fields


def cmd_patron_update(args: argparse.Namespace) -> int:
    config = _config(args)
    if not valid_barcode(args.barcode):
        raise UsageError("barcode: missing or malformed")
    fields = _fields(args)
    if not fields:
        raise UsageError("nothing to change: give at least one of the options (see --help)")

    async def body(core: Any) -> int:
        store = _admin(core)
        if args.barcode not in await store.details([args.barcode]):
            raise Refused(f"no card {args.barcode}")
        await store.write_patrons([], [PatronUpdate(args.barcode, fields)])
        core.audit.event(
            "patron_updated", barcode=args.barcode, actor=args.staff or "cli", fields=sorted(fields)
        )
        notify(config.path(config.control.socket), "invalidate", args.barcode)
        print(json.dumps(details_json((await store.details([args.barcode]))[args.barcode])))
        return OK

    return run_loop(_with_core(config, body))


def cmd_patron_delete(args: argparse.Namespace) -> int:
    config = _config(args)

    async def body(core: Any) -> int:
        store = _admin(core)
        if not await store.delete_patron(args.barcode):
            raise Refused(f"no card {args.barcode}")
        core.authenticator.clear_lock(args.barcode, actor=args.staff or "cli")
        core.audit.event("patron_deleted", barcode=args.barcode, actor=args.staff or "cli")
        # the daemon drops its cached verification, its counters and the patron's sessions
        told = notify(config.path(config.control.socket), "clear_lock", args.barcode)
        print(f"deleted {args.barcode}" + (" (daemon told)" if told else ""))
        return OK

    return run_loop(_with_core(config, body))


def cmd_patron_list(args: argparse.Namespace) -> int:
    config = _config(args)
    which = Listing.ALL
    for flag, listing in (
        ("blocked", Listing.BLOCKED),
        ("expired", Listing.EXPIRED),
        ("no_pin", Listing.NO_PIN),
    ):
        if getattr(args, flag):
            which = listing

    async def body(core: Any) -> int:
        store = _admin(core)
        now = core.authenticator.clock()
        shown = 0
        if args.locked:
            # locks live in the throttle state, not the store
            cards = sorted(
                key[len(CARD) :]
                for key in core.throttle.backend.load()
                if key.startswith(CARD) and core.throttle.card_locked(key[len(CARD) :], now)
            )
            cards = [c for c in cards if c > args.after][: args.limit]
            found = await store.details(cards)
            page = [found[c] for c in cards if c in found]
        else:
            page = await store.list_page(which, args.after, dt.date.today(), args.limit)
        for item in page:
            record = details_json(item)
            record["locked"] = core.throttle.card_locked(item.patron.barcode, now)
            print(json.dumps(record))
            shown += 1
        if shown == args.limit:
            last = page[-1].patron.barcode
            print(f"more: patron-bridge patron list --after {last}", file=sys.stderr)
        return OK

    return run_loop(_with_core(config, body))


# -- check-config's pepper report --------------------------------------------------------------


def pepper_report(config: Config) -> dict[str, object]:
    """The pepper file's state and, for the bridge's own stores, whether it matches the store
    (read without writing; a store that cannot be reached is said so)."""
    from bridge.app import store_settings

    path = config.path(config.security.pepper_file)
    plugin, settings = store_settings(config)
    if plugin.inspect_pepper is None:
        return pepper_check.state(path, None)
    inspect = plugin.inspect_pepper

    async def read() -> Any:
        return await inspect(settings, config.base_dir)

    try:
        stored = run_loop(read())
    except Exception as exc:  # noqa: BLE001  any store failure is a line in the report
        report = pepper_check.state(path, None)
        report["store"] = f"not checked: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        return report
    if stored is None:
        report = pepper_check.state(path, None)
        report["store"] = "new (no file yet)"
        return report
    report = pepper_check.state(path, stored)
    rotated = pepper_check.rotated_state(path, stored)
    if rotated:  # peppers `pepper rotate` added beside the file
        report["rotated"] = rotated
    return report


# -- parser -----------------------------------------------------------------------------------

IMPORT_EPILOG = (
    "columns (by header; only barcode is required):\n"
    + "\n".join(f"  {name:<13} {text}" for name, text in COLUMNS)
    + "\n\nRows update patrons by barcode: a column the file lacks, or an empty cell, keeps the "
    "stored value\n(--blank-clears: an empty cell clears it); a PIN is only replaced by a new pin "
    "or pin_hash.\nA card on several lines is reported with all of them and none of its rows is "
    "imported."
)


def add_patron_verbs(pverbs: Any, staff_help: str) -> None:
    imp = pverbs.add_parser(
        "import",
        help="import or update patrons from CSV",
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("file", metavar="FILE.csv", help="UTF-8 CSV with a header row")
    imp.add_argument(
        "--mode",
        choices=("add", "update", "upsert"),
        default="upsert",
        help="add: new cards only; update: existing cards only; upsert: both (default)",
    )
    imp.add_argument(
        "--dry-run", action="store_true", help="report what would change, write nothing"
    )
    imp.add_argument(
        "--blank-clears",
        action="store_true",
        help="an empty cell clears the field (default: keeps the stored value; never a PIN)",
    )
    imp.add_argument(
        "--skip-bad-pins",
        action="store_true",
        help="skip rows whose PIN breaks the policy (default: import them without a PIN)",
    )
    imp.set_defaults(fn=cmd_patron_import)

    upd = pverbs.add_parser("update", help="change the given fields of one patron")
    upd.add_argument("barcode", help="the card to change")
    upd.add_argument("--name", help="display name")
    upd.add_argument("--email", help="e-mail address ('' clears it)")
    upd.add_argument("--expires", metavar="YYYY-MM-DD", help="card expiry date")
    upd.add_argument("--category", metavar="CODE", help="patron category code")
    upd.add_argument("--home-library", dest="home_library", metavar="CODE", help="home branch")
    upd.add_argument("--record-id", dest="record_id", metavar="ID", help="the ILS's record id")
    upd.add_argument("--fines", metavar="AMOUNT", help="amount owed, e.g. 2.50")
    upd.add_argument("--staff", metavar="ID", help=staff_help)
    upd.set_defaults(fn=cmd_patron_update)

    dele = pverbs.add_parser(
        "delete", help="delete a patron with its reset tokens, lock, cache and sessions"
    )
    dele.add_argument("barcode", help="the card to delete")
    dele.add_argument("--staff", metavar="ID", help=staff_help)
    dele.set_defaults(fn=cmd_patron_delete)

    lst = pverbs.add_parser("list", help="list patrons as JSON lines (never any PIN material)")
    only = lst.add_mutually_exclusive_group()
    only.add_argument("--blocked", action="store_true", help="only blocked cards")
    only.add_argument("--locked", action="store_true", help="only cards locked by failed PINs")
    only.add_argument("--expired", action="store_true", help="only expired cards")
    only.add_argument("--no-pin", action="store_true", help="only cards with no PIN set")
    lst.add_argument("--after", default="", metavar="BARCODE", help="start after this card")
    lst.add_argument(
        "--limit", type=int, default=100, metavar="N", help="cards per page (default 100)"
    )
    lst.set_defaults(fn=cmd_patron_list)
