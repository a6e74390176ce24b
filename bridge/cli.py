"""The `patron-bridge` command.

    patron-bridge [--config FILE] VERB ...

Exit codes: 0 ok, 1 refused (PIN policy, unknown card), 2 usage or config error.
The config file defaults to $BRIDGE_CONFIG, then conf/bridge.toml.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO

from bridge import logs
from bridge.config import DEFAULT_CONFIG, Config, ConfigError, load, masked
from bridge.control import notify
from bridge.core.patron import Patron
from bridge.core.pin import HashFormatError, PinPolicy
from bridge.core.secret import Secret
from bridge.core.store import NewPatron, StoreError, WritableStore
from bridge.loop import run as run_loop
from bridge.records import BadRow, RowError, read_csv

OK, REFUSED, USAGE = 0, 1, 2


class Refused(Exception):
    """Exit 1 with this message."""


class UsageError(Exception):
    """Exit 2 with this message."""


# --- helpers ---------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    return load(args.config or os.environ.get("BRIDGE_CONFIG") or DEFAULT_CONFIG)


def _patron_json(patron: Patron) -> dict[str, Any]:
    return {
        "barcode": patron.barcode,
        "record_id": patron.record_id,
        "name": patron.name,
        "email": patron.email,
        "category": patron.category,
        "expires": patron.expires.isoformat() if patron.expires else None,
        "blocked": patron.blocked,
        "blocked_reason": patron.blocked_reason,
        "fines": str(patron.fines),
        "home_library": patron.home_library,
    }


def _read_new_pin(stdin: TextIO, from_stdin: bool) -> Secret:
    """Twice at a terminal (staff at the desk), once from a pipe."""
    if from_stdin or not stdin.isatty():
        line = stdin.readline()
        if not line:
            raise UsageError("no PIN on standard input")
        return Secret(line.rstrip("\r\n"))
    first = getpass.getpass("New PIN: ")
    second = getpass.getpass("New PIN again: ")
    pin = Secret(first)
    if not pin.matches(second):
        raise Refused("the two PINs do not match")
    return pin


def _audit_destination(config: Config) -> Path | None:
    return None if config.audit.destination == "stderr" else config.path(config.audit.destination)


async def _with_core(config: Config, body: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    """Open the core for one verb. Its audit events (patron_added, pin_reset, lock_cleared, ...)
    go where the daemon's go (and to stderr), through the same redaction, never onto stdout
    with the command's output."""
    from bridge.app import open_core

    own_logging = not logs.configured()
    if own_logging:
        logs.configure(
            config.log.level,
            config.log.format,
            "stderr",
            _audit_destination(config),
            audit_to_main=True,
        )
    try:
        core = await open_core(config)
        try:
            return await body(core)
        finally:
            await core.aclose()
    finally:
        if own_logging:
            logs.stop()


def _writable(core: Any) -> WritableStore:
    store = core.store
    if not isinstance(store, WritableStore):
        raise Refused(f"the {type(store).__name__} store cannot add or change patrons")
    return store


# --- verbs -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import serve

    config = _config(args)
    logs.configure(config.log.level, config.log.format, "stderr", _audit_destination(config))

    def ready(info: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    try:
        run_loop(serve(config, ready))
    except KeyboardInterrupt:
        pass
    finally:
        logs.stop()
    return OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.app import store_settings

    config = _config(args)
    store_settings(config)  # the plugin's own keys are checked too
    print(json.dumps(masked(config), indent=2, default=str))
    return OK


def cmd_patron_add(args: argparse.Namespace) -> int:
    config = _config(args)
    pin: Secret | None = None
    if args.pin is not None and args.pin_stdin:
        raise UsageError("give --pin or --pin-stdin, not both")
    if args.pin is not None:
        pin = Secret(args.pin)
    elif args.pin_stdin:
        pin = _read_new_pin(sys.stdin, True)
    try:
        from bridge.records import row_to_patron

        new = row_to_patron(
            {
                "barcode": args.barcode,
                "name": args.name or "",
                "email": args.email or "",
                "expires": args.expires or "",
                "category": args.category or "",
                "blocked": args.blocked or "",
                "fines": args.fines or "0",
            },
            PinPolicy(),
        )
    except RowError as exc:
        raise UsageError(str(exc)) from None

    async def body(core: Any) -> int:
        if pin is not None:
            verdict = core.authenticator.pin_policy.check(pin)
            if not verdict.ok:
                raise Refused(verdict.reason)
        store = _writable(core)
        try:
            await store.add_patron(NewPatron(new.patron, pin=pin))
        except ValueError as exc:
            raise Refused(str(exc)) from None
        core.audit.event("patron_added", barcode=new.patron.barcode, actor="cli")
        print(json.dumps(_patron_json(new.patron)))
        return OK

    return run_loop(_with_core(config, body))


def cmd_patron_import(args: argparse.Namespace) -> int:
    config = _config(args)
    path = Path(args.file)
    try:
        with path.open(encoding="utf-8") as counting:
            total = max(sum(1 for _ in counting) - 1, 0)
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None
    show = sys.stderr.isatty()

    async def body(core: Any) -> int:
        store = _writable(core)
        added = bad = seen = 0
        batch: list[NewPatron] = []

        async def flush() -> None:
            nonlocal added
            if batch:
                added += await store.add_patrons(batch)
                batch.clear()

        with handle:
            for item in read_csv(handle, core.authenticator.pin_policy):
                seen += 1
                if isinstance(item, BadRow):
                    bad += 1
                    sys.stderr.write(f"{path}: line {item.line}: {item.message}\n")
                    if item.line == 1:
                        return USAGE
                    continue
                batch.append(item)
                if len(batch) >= 200:
                    await flush()
                    if show:
                        sys.stderr.write(f"\r{_bar(seen, total)}")
                        sys.stderr.flush()
            await flush()
        if show:
            sys.stderr.write(f"\r{_bar(seen, total)}\n")
        core.audit.event("patrons_imported", added=added, bad=bad, actor="cli")
        print(f"imported {added} patrons, skipped {bad} bad rows, from {path}")
        return OK if bad == 0 else REFUSED

    return run_loop(_with_core(config, body))


def _bar(done: int, total: int, width: int = 30) -> str:
    total = max(total, done, 1)
    filled = width * done // total
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} rows"


def cmd_patron_show(args: argparse.Namespace) -> int:
    config = _config(args)

    async def body(core: Any) -> int:
        patron = await core.authenticator.lookup(args.barcode)
        if patron is None:
            raise Refused(f"no card {args.barcode}")
        record = _patron_json(patron)
        card = core.authenticator.canonical(args.barcode)  # the key locks are kept under
        record["locked"] = core.throttle.card_locked(card, core.authenticator.clock())
        print(json.dumps(record, indent=2))
        return OK

    return run_loop(_with_core(config, body))


def _set_block(args: argparse.Namespace, reason: str | None) -> int:
    config = _config(args)

    async def body(core: Any) -> int:
        store = _writable(core)
        try:
            patron = await store.set_blocked(args.barcode, reason)
        except LookupError:
            raise Refused(f"no card {args.barcode}") from None
        event = "patron_blocked" if reason else "patron_unblocked"
        core.audit.event(event, barcode=args.barcode, actor="cli", reason=reason)
        notify(config.path(config.control.socket), "invalidate", args.barcode)
        print(json.dumps(_patron_json(patron)))
        return OK

    return run_loop(_with_core(config, body))


def cmd_patron_block(args: argparse.Namespace) -> int:
    return _set_block(args, args.reason)


def cmd_patron_unblock(args: argparse.Namespace) -> int:
    return _set_block(args, None)


def cmd_pin_set(args: argparse.Namespace) -> int:
    config = _config(args)
    pin = _read_new_pin(sys.stdin, args.stdin)

    async def body(core: Any) -> int:
        result = await core.authenticator.set_pin(args.barcode, pin, actor=args.staff or "cli")
        if not result.ok:
            raise Refused(result.reason)
        notify(config.path(config.control.socket), "clear_lock", args.barcode)
        print(f"PIN set for {args.barcode}")
        return OK

    return run_loop(_with_core(config, body))


def cmd_pin_check(args: argparse.Namespace) -> int:
    policy = PinPolicy()
    with_config = args.config or os.environ.get("BRIDGE_CONFIG") or Path(DEFAULT_CONFIG).exists()
    if with_config:
        from bridge.app import pin_policy

        policy = pin_policy(_config(args))
    verdict = policy.check(Secret(args.pin))
    if not verdict.ok:
        raise Refused(verdict.reason)
    print("PIN accepted by the policy")
    return OK


def cmd_lockout_clear(args: argparse.Namespace) -> int:
    config = _config(args)

    async def body(core: Any) -> int:
        card = core.authenticator.canonical(args.barcode)  # the key locks are kept under
        had_counter = core.throttle.failures(card, core.authenticator.clock()) > 0
        if not had_counter and await core.authenticator.lookup(args.barcode) is None:
            raise Refused(f"no card {args.barcode}")
        core.authenticator.clear_lock(args.barcode, actor="cli")
        core.throttle.backend.close()
        told = notify(config.path(config.control.socket), "clear_lock", args.barcode)
        print(f"lock cleared for {args.barcode}" + (" (daemon told)" if told else ""))
        return OK

    return run_loop(_with_core(config, body))


def cmd_cert_generate(args: argparse.Namespace) -> int:
    from bridge.tls import generate_self_signed

    try:
        generate_self_signed(
            Path(args.cert), Path(args.key), args.host or ["localhost", "127.0.0.1"]
        )
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    print(f"wrote {args.cert} and {args.key}")
    return OK


def cmd_oidc_rotate_key(args: argparse.Namespace) -> int:
    from bridge.federation.keys import rotate
    from bridge.federation.server import keep_seconds

    config = _config(args)
    if config.oidc is None:
        raise UsageError("no [oidc] section in the config")
    try:
        fresh = rotate(config.path(config.oidc.keys_file), keep_seconds(config.oidc))
    except OSError as exc:
        raise UsageError(f"cannot rotate {exc.filename}: {exc.strerror}") from None
    print(f"new signing key {fresh.kid}; the old key stays published until its tokens expire")
    return OK


# --- parser ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patron-bridge",
        description="SIP2, LDAP and RADIUS authentication for library barcode/PIN pairs.",
    )
    parser.add_argument(
        "--config", help=f"config file (default $BRIDGE_CONFIG or {DEFAULT_CONFIG})"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    verbs.add_parser("serve", help="run the daemon in the foreground").set_defaults(fn=cmd_serve)
    verbs.add_parser(
        "check-config", help="validate the config and print it with secrets masked"
    ).set_defaults(fn=cmd_check_config)

    patron = verbs.add_parser("patron", help="add, import, show, block patrons")
    pverbs = patron.add_subparsers(dest="patron_verb", required=True, metavar="VERB")
    add = pverbs.add_parser("add", help="add one patron")
    add.add_argument("barcode")
    add.add_argument("--pin")
    add.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    add.add_argument("--name")
    add.add_argument("--email")
    add.add_argument("--expires", metavar="YYYY-MM-DD")
    add.add_argument("--category", metavar="CODE")
    add.add_argument("--blocked", metavar="REASON")
    add.add_argument("--fines", metavar="AMOUNT")
    add.set_defaults(fn=cmd_patron_add)
    imp = pverbs.add_parser("import", help="import patrons from CSV")
    imp.add_argument("file", metavar="FILE.csv")
    imp.set_defaults(fn=cmd_patron_import)
    show = pverbs.add_parser("show", help="print a patron as JSON (never any PIN material)")
    show.add_argument("barcode")
    show.set_defaults(fn=cmd_patron_show)
    block = pverbs.add_parser("block", help="block a card")
    block.add_argument("barcode")
    block.add_argument("reason")
    block.set_defaults(fn=cmd_patron_block)
    unblock = pverbs.add_parser("unblock", help="unblock a card")
    unblock.add_argument("barcode")
    unblock.set_defaults(fn=cmd_patron_unblock)

    pin = verbs.add_parser("pin", help="staff PIN reset, policy check")
    nverbs = pin.add_subparsers(dest="pin_verb", required=True, metavar="VERB")
    pset = nverbs.add_parser("set", help="set a new PIN (asked twice at a terminal)")
    pset.add_argument("barcode")
    pset.add_argument("--stdin", action="store_true", help="read the PIN once from stdin")
    pset.add_argument("--staff", help="staff id recorded in the audit log")
    pset.set_defaults(fn=cmd_pin_set)
    pcheck = nverbs.add_parser("check", help="exit 0 if the policy accepts PIN, else 1")
    pcheck.add_argument("pin")
    pcheck.set_defaults(fn=cmd_pin_check)

    lockout = verbs.add_parser("lockout", help="clear a card's guessing lock")
    lverbs = lockout.add_subparsers(dest="lockout_verb", required=True, metavar="VERB")
    clear = lverbs.add_parser("clear", help="clear the lock on a card")
    clear.add_argument("barcode")
    clear.set_defaults(fn=cmd_lockout_clear)

    cert = verbs.add_parser("cert", help="TLS certificates for trials")
    cverbs = cert.add_subparsers(dest="cert_verb", required=True, metavar="VERB")
    gen = cverbs.add_parser("generate", help="write a self-signed certificate and key")
    gen.add_argument("--cert", default="var/tls/cert.pem")
    gen.add_argument("--key", default="var/tls/key.pem")
    gen.add_argument("--host", action="append", help="DNS name or IP (repeatable)")
    gen.set_defaults(fn=cmd_cert_generate)

    oidc = verbs.add_parser("oidc", help="the OpenID Connect provider")
    overbs = oidc.add_subparsers(dest="oidc_verb", required=True, metavar="VERB")
    overbs.add_parser("rotate-key", help="start signing with a new key").set_defaults(
        fn=cmd_oidc_rotate_key
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    try:
        code: int = args.fn(args)
        return code
    except ConfigError as exc:
        print(f"patron-bridge: config: {exc}", file=sys.stderr)
        return USAGE
    except UsageError as exc:
        print(f"patron-bridge: {exc}", file=sys.stderr)
        return USAGE
    except Refused as exc:
        print(f"patron-bridge: refused: {exc}", file=sys.stderr)
        return REFUSED
    except StoreError as exc:
        print(f"patron-bridge: store: {exc}", file=sys.stderr)
        return REFUSED
    except HashFormatError as exc:  # a damaged pepper file: the setup is wrong, not the request
        print(f"patron-bridge: security: {exc}", file=sys.stderr)
        return USAGE
