"""The `patron-bridge` command.

    patron-bridge [--config FILE] VERB ...

Exit codes: 0 ok, 1 refused (PIN policy, unknown card), 2 usage or config error.
The config file defaults to $BRIDGE_CONFIG, then conf/bridge.toml.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TextIO, cast

from bridge import logs
from bridge.config import DEFAULT_CONFIG, Config, ConfigError, load, masked
from bridge.core.patron import Patron
from bridge.core.pin import HashFormatError, PinPolicy
from bridge.core.secret import Secret
from bridge.core.store import NewPatron, StoreError, WritableStore
from bridge.loop import run as run_loop
from bridge.records import RowError
from bridge.state.shared import card_failures, card_locked, flush_guard

OK, REFUSED, USAGE = 0, 1, 2
SIGPIPE_EXIT = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left (as git)


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


def _tell_daemon(config: Config, op: str, barcode: str, done: str) -> int:
    """Tell the running daemon about a change made in the store; say so loudly when a daemon
    runs but could not be told (its cache and lock counters stay as they were)."""
    from bridge.runtime.instance import tell

    told = tell(config.path(config.control.socket), op, barcode)
    return _untold(config, told, barcode, done)


def _untold(config: Config, told: Any, barcode: str, done: str) -> int:
    """Exit 1 with one line when a daemon runs but did not answer; else 0."""
    socket_path = config.path(config.control.socket)
    if told.failed:
        logs.flush()  # the audit lines of the change first, then this line on its own
        who = f"pid {told.pid}" if told.pid else "a running daemon"
        print(
            f"patron-bridge: {done}, but the daemon ({who}) could not be told through "
            f"{socket_path}: it keeps its cached answer and lock counters for {barcode} "
            "until told; run the command again or restart it",
            file=sys.stderr,
        )
        return REFUSED
    return OK


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import serve
    from bridge.runtime.instance import AlreadyRunning, InstanceLock, lock_path

    config = _config(args)
    worker: int | None = getattr(args, "worker", None)
    instance: InstanceLock | None = None  # a worker runs under its supervisor's lock
    if worker is None:  # the supervisor or the one process; workers run under its lock
        # Before anything opens the store or a socket: a second daemon must touch nothing.
        instance = InstanceLock(lock_path(config.path(config.control.socket)))
        try:
            instance.acquire()
        except AlreadyRunning as exc:
            print(f"patron-bridge: {exc}", file=sys.stderr)
            return REFUSED
        if config.server.worker_count() > 1:
            return _supervise(args, config)
    from bridge.runtime.systemd import stderr_is_journal

    logs.configure(
        config.log.level,
        config.log.format,
        "stderr",
        _audit_destination(config),
        journal=stderr_is_journal(),
    )

    def ready(info: dict[str, Any]) -> None:
        # for init systems and harnesses; a person at a terminal already read the log's
        # `ready` line, so it is not said twice
        if sys.stdout.isatty() and sys.stderr.isatty():
            return
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    try:
        if worker is not None:
            from bridge.runtime import worker as runtime_worker

            mapping = runtime_worker.parse_mapping(args.listen_map or "{}", config.source)
            run_loop(runtime_worker.run(config, worker, mapping, ready))
        else:
            run_loop(serve(config, ready))
    except KeyboardInterrupt:
        pass
    finally:
        logs.stop()
        if instance is not None:
            instance.release()
    return OK


def _supervise(args: argparse.Namespace, config: Config) -> int:
    """`[server] workers` > 1: this process supervises the workers (bridge.runtime.supervisor)."""
    from bridge.runtime.supervisor import supervise

    logs.configure(config.log.level, config.log.format, "stderr")

    def ready(info: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()

    path = Path(args.config or os.environ.get("BRIDGE_CONFIG") or DEFAULT_CONFIG).resolve()
    try:
        return supervise(config, path, ready)
    finally:
        logs.stop()


def cmd_check_config(args: argparse.Namespace) -> int:
    from bridge.app import store_settings

    config = _config(args)
    store_settings(config)  # the plugin's own keys are checked too
    from bridge.cli_admin import pepper_report

    report = masked(config)
    report["pepper"] = pepper_report(config)  # never the pepper: its file and its state
    print(json.dumps(report, indent=2, default=str))
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
        if pin is None:
            print(
                f"patron-bridge: {new.patron.barcode} has no PIN yet: no login works until one "
                f"is set (patron-bridge pin set {new.patron.barcode})",
                file=sys.stderr,
            )
        return OK

    return run_loop(_with_core(config, body))


def cmd_patron_show(args: argparse.Namespace) -> int:
    config = _config(args)

    async def body(core: Any) -> int:
        patron = await core.authenticator.lookup(args.barcode)
        if patron is None:
            raise Refused(f"no card {args.barcode}")
        record = _patron_json(patron)
        from bridge.core.admin import AdminStore

        if isinstance(core.store, AdminStore):  # the bridge's own stores: PIN state, no PIN
            found = (await core.store.details([args.barcode])).get(args.barcode)
            if found is not None:
                record["has_pin"] = found.has_pin
                record["needs_pin_reset"] = found.needs_pin_reset
        card = core.authenticator.canonical(args.barcode)  # the key locks are kept under
        record["locked"] = await card_locked(core.throttle, card, core.authenticator.clock())
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
        core.authenticator.invalidate(args.barcode)  # other workers and hosts ([state] bus)
        print(json.dumps(_patron_json(patron)))
        return _tell_daemon(config, "invalidate", args.barcode, f"card {args.barcode} changed")

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
        print(f"PIN set for {args.barcode}")
        told = _tell_daemon(config, "clear_lock", args.barcode, f"PIN set for {args.barcode}")
        from bridge.cli_notice import mail_pin_changed  # the desk's notice, by mail

        notice = await mail_pin_changed(config, core.authenticator, args.barcode)
        logs.flush()
        if notice.failed:
            print(f"patron-bridge: PIN set, but {notice.line}", file=sys.stderr)
            return REFUSED
        print(notice.line)
        return told

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
        had_counter = await card_failures(core.throttle, card, core.authenticator.clock())
        if not had_counter and await core.authenticator.lookup(args.barcode) is None:
            raise Refused(f"no card {args.barcode}")
        core.authenticator.clear_lock(args.barcode, actor=getattr(args, "staff", None) or "cli")
        await flush_guard(core.throttle)
        from bridge.runtime.instance import tell

        told = tell(config.path(config.control.socket), "clear_lock", args.barcode)
        print(f"lock cleared for {args.barcode}" + (" (daemon told)" if told.told else ""))
        return _untold(config, told, args.barcode, f"lock cleared for {args.barcode}")

    return run_loop(_with_core(config, body))


def cmd_staff_add(args: argparse.Namespace) -> int:
    from bridge.staff import cli as staff_cli

    config = _config(args)
    try:
        password = staff_cli.read_password(sys.stdin, args.stdin)
        secret = staff_cli.new_secret() if args.totp else None
        role, created = staff_cli.add(config, args.name, args.role, password, totp_secret=secret)
    except staff_cli.StaffRefused as exc:
        raise Refused(str(exc)) from None
    name = args.name.strip().lower()
    print(f"staff account {name} {'added' if created else 'replaced'} ({role.value})")
    if secret is not None:  # shown once, for the authenticator app; never logged
        print(f"TOTP secret: {secret}")
        print(f"TOTP URI: {staff_cli.provisioning_uri(secret, name, 'Patron Bridge')}")
    return OK


def _config_dir(args: argparse.Namespace) -> Path:
    """Where relative paths start: the config file's directory, as for every path in it (the
    current directory when no config file is given or found)."""
    named = args.config or os.environ.get("BRIDGE_CONFIG")
    if named:
        return Path(named).resolve().parent
    default = Path(DEFAULT_CONFIG)
    return default.resolve().parent if default.exists() else Path.cwd()


def cmd_cert_generate(args: argparse.Namespace) -> int:
    from bridge.tls import generate_chain, generate_self_signed

    base = _config_dir(args)
    cert_name, key_name = args.cert, args.key
    if cert_name is None or key_name is None:  # default: where [ldap] looks for them
        ldap = None
        with contextlib.suppress(ConfigError):
            ldap = _config(args).ldap
        cert_name = cert_name or getattr(ldap, "tls_certificate", None) or "var/tls/cert.pem"
        key_name = key_name or getattr(ldap, "tls_key", None) or "var/tls/key.pem"
    cert, key = base / cert_name, base / key_name  # an absolute path stays as given
    hosts = args.host or ["localhost", "127.0.0.1"]
    ca = base / args.ca if args.ca else None
    try:
        if ca is not None:  # a CA plus a server certificate it signed (802.1X supplicants need one)
            ca_key = base / args.ca_key if args.ca_key else ca.with_name("ca-key.pem")
            generate_chain(ca, ca_key, cert, key, hosts)
        else:
            generate_self_signed(cert, key, hosts)
    except OSError as exc:
        raise UsageError(f"cannot write {exc.filename}: {exc.strerror}") from None
    print(f"wrote {cert} and {key}" + (f", CA {ca}" if ca is not None else ""))
    return OK


def cmd_backup(args: argparse.Namespace) -> int:
    from bridge.backup import BackupError, backup

    config = _config(args)
    try:
        result = backup(config, Path(args.file), force=args.force)
    except BackupError as exc:
        raise Refused(str(exc)) from None
    print(f"backed up {result.patrons} patrons (schema {result.schema}) to {result.path}")
    return OK


def cmd_restore(args: argparse.Namespace) -> int:
    from bridge.backup import BackupError, restore
    from plugins.sqlite import MIGRATIONS

    config = _config(args)
    try:
        result = restore(config, Path(args.file), len(MIGRATIONS))
    except BackupError as exc:
        raise Refused(str(exc)) from None
    print(
        f"restored {result.patrons} patrons (schema {result.schema}) into {result.path}; "
        f"the previous database is {result.path}.pre-restore"
    )
    return OK


def cmd_migrate(args: argparse.Namespace) -> int:
    from bridge.upgrade import schema_state

    config = _config(args)
    if args.check:
        state = run_loop(schema_state(config))
        if state.latest is None:
            print(f"the {state.store} store keeps no schema of its own: nothing to migrate")
            return OK
        if state.current is None:
            print(f"no {state.store} database yet: the first start creates schema {state.latest}")
            return REFUSED
        if state.pending > 0:
            print(
                f"{state.pending} migration(s) pending: {state.store} schema {state.current} -> "
                f"{state.latest}, applied at the next start (back up first)"
            )
            return REFUSED
        if state.pending < 0:
            print(
                f"the {state.store} schema ({state.current}) is newer than this version "
                f"knows ({state.latest}): run the version that made it, or restore a backup"
            )
            return USAGE
        print(f"{state.store} schema {state.current} is current: nothing pending")
        return OK

    async def body(core: Any) -> int:  # opening the store applies what is pending
        return OK

    run_loop(_with_core(config, body))
    state = run_loop(schema_state(config))
    if state.latest is None:
        print(f"the {state.store} store keeps no schema of its own: nothing to migrate")
    else:
        print(f"{state.store} schema {state.current} is current")
    return OK


def cmd_reload(args: argparse.Namespace) -> int:
    from bridge.config import control_socket_of
    from bridge.control import reload_all
    from bridge.runtime.instance import lock_path, running_pid

    source = args.config or os.environ.get("BRIDGE_CONFIG") or DEFAULT_CONFIG
    socket_path = control_socket_of(source)
    if socket_path is None:  # not even TOML: say why, as every verb does; nothing was sent
        _config(args)
        raise UsageError(f"{source}: cannot be read")
    if running_pid(lock_path(socket_path)) is None:
        raise Refused("no daemon is running with this config: nothing to reload")
    answer = reload_all(socket_path)  # every worker's socket under [server] workers
    if answer is None:
        raise Refused(f"the daemon did not answer on {socket_path}: nothing was reloaded")
    if not answer.get("ok"):
        print(
            f"patron-bridge: reload refused: {answer.get('error')} (the running config is "
            "unchanged)",
            file=sys.stderr,
        )
        return REFUSED
    applied = ", ".join(str(key) for key in cast(list[str], answer.get("applied") or []))
    restart = ", ".join(str(key) for key in cast(list[str], answer.get("restart_needed") or []))
    parts = [f"applied {applied}" if applied else "no live change"]
    if restart:
        parts.append(f"restart needed for {restart}")
    print("reloaded: " + "; ".join(parts))
    if answer.get("pepper_error"):  # bridge.pepper_hosts: this host lacks a pepper in use
        print(f"patron-bridge: {answer['pepper_error']}", file=sys.stderr)
        return REFUSED
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
    from bridge import cli_admin

    parser.add_argument(
        "--version", action="version", version=cli_admin.VERSION, help="print the version"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    serve = verbs.add_parser("serve", help="run the daemon in the foreground")
    serve.set_defaults(fn=cmd_serve)
    # Set by the supervisor of `[server] workers = N` for each worker it starts; not for people.
    serve.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--listen-map", help=argparse.SUPPRESS)
    verbs.add_parser(
        "check-config", help="validate the config and print it with secrets masked"
    ).set_defaults(fn=cmd_check_config)

    patron = verbs.add_parser("patron", help="add, import, update, delete, list, show, block")
    pverbs = patron.add_subparsers(dest="patron_verb", required=True, metavar="VERB")
    add = pverbs.add_parser("add", help="add one patron")
    add.add_argument("barcode", help="the new card's number")
    add.add_argument("--pin", help="the PIN (visible in the process list: prefer --pin-stdin)")
    add.add_argument("--pin-stdin", action="store_true", help="read the PIN from stdin")
    add.add_argument("--name", help="display name, e.g. 'Surname, Given'")
    add.add_argument("--email", help="e-mail address (PIN reset mail)")
    add.add_argument("--expires", metavar="YYYY-MM-DD", help="card expiry date")
    add.add_argument("--category", metavar="CODE", help="patron category code")
    add.add_argument("--blocked", metavar="REASON", help="add the card blocked, with this reason")
    add.add_argument("--fines", metavar="AMOUNT", help="amount owed, e.g. 2.50")
    add.set_defaults(fn=cmd_patron_add)
    staff_help = "staff id recorded in the audit log"
    cli_admin.add_patron_verbs(pverbs, staff_help)
    show = pverbs.add_parser("show", help="print a patron as JSON (never any PIN material)")
    show.add_argument("barcode", help="the card to show")
    show.set_defaults(fn=cmd_patron_show)
    block = pverbs.add_parser("block", help="block a card")
    block.add_argument("barcode", help="the card to block")
    block.add_argument("reason", help="why (shown to staff and in answers that carry it)")
    block.set_defaults(fn=cmd_patron_block)
    unblock = pverbs.add_parser("unblock", help="unblock a card")
    unblock.add_argument("barcode", help="the card to unblock")
    unblock.set_defaults(fn=cmd_patron_unblock)

    pin = verbs.add_parser("pin", help="staff PIN reset, policy check")
    nverbs = pin.add_subparsers(dest="pin_verb", required=True, metavar="VERB")
    pset = nverbs.add_parser("set", help="set a new PIN (asked twice at a terminal)")
    pset.add_argument("barcode", help="the card whose PIN is set")
    pset.add_argument("--stdin", action="store_true", help="read the PIN once from stdin")
    pset.add_argument("--staff", metavar="ID", help=staff_help)
    pset.set_defaults(fn=cmd_pin_set)
    pcheck = nverbs.add_parser("check", help="exit 0 if the policy accepts PIN, else 1")
    pcheck.add_argument("pin", help="the PIN to check against the configured policy")
    pcheck.set_defaults(fn=cmd_pin_check)

    lockout = verbs.add_parser("lockout", help="clear a card's guessing lock")
    lverbs = lockout.add_subparsers(dest="lockout_verb", required=True, metavar="VERB")
    clear = lverbs.add_parser("clear", help="clear the lock on a card")
    clear.add_argument("barcode", help="the locked card")
    clear.add_argument("--staff", metavar="ID", help=staff_help)
    clear.set_defaults(fn=cmd_lockout_clear)

    staff = verbs.add_parser("staff", help="staff desk accounts")
    sverbs = staff.add_subparsers(dest="staff_verb", required=True, metavar="VERB")
    sadd = sverbs.add_parser("add", help="add (or replace) a local staff account")
    sadd.add_argument("name", help="the account's sign-in name (stored in lower case)")
    sadd.add_argument(
        "--role",
        required=True,
        choices=["desk", "supervisor", "admin"],
        help="desk: look up, reset, unlock; supervisor: also block and new cards; admin: all",
    )
    sadd.add_argument("--stdin", action="store_true", help="read the password once from stdin")
    sadd.add_argument("--totp", action="store_true", help="require a TOTP code at sign-in")
    sadd.set_defaults(fn=cmd_staff_add)

    cert = verbs.add_parser("cert", help="TLS certificates for trials")
    cverbs = cert.add_subparsers(dest="cert_verb", required=True, metavar="VERB")
    gen = cverbs.add_parser("generate", help="write a self-signed certificate and key")
    gen.add_argument(
        "--cert",
        help="certificate file, relative to the config file's directory (default: [ldap] "
        "tls_certificate, else var/tls/cert.pem)",
    )
    gen.add_argument(
        "--key", help="key file (0600), relative like --cert (default: [ldap] tls_key)"
    )
    gen.add_argument("--host", action="append", help="DNS name or IP (repeatable)")
    gen.add_argument("--ca", help="also write a CA here and sign the certificate with it")
    gen.add_argument("--ca-key", help="where the CA's key goes (default: ca-key.pem beside --ca)")
    gen.set_defaults(fn=cmd_cert_generate)
    back = verbs.add_parser("backup", help="copy the SQLite store to FILE (safe while serving)")
    back.add_argument("file", metavar="FILE", help="the backup file to write (mode 0600)")
    back.add_argument("--force", action="store_true", help="replace FILE if it exists")
    back.set_defaults(fn=cmd_backup)
    rest = verbs.add_parser("restore", help="replace the SQLite store with FILE (daemon stopped)")
    rest.add_argument("file", metavar="FILE", help="a backup made by `patron-bridge backup`")
    rest.set_defaults(fn=cmd_restore)
    verbs.add_parser(
        "reload", help="make the running daemon re-read its config (as SIGHUP does)"
    ).set_defaults(fn=cmd_reload)
    mig = verbs.add_parser("migrate", help="apply pending schema migrations (or --check)")
    mig.add_argument(
        "--check", action="store_true", help="exit 1 if migrations are pending; change nothing"
    )
    mig.set_defaults(fn=cmd_migrate)

    oidc = verbs.add_parser("oidc", help="the OpenID Connect provider")
    overbs = oidc.add_subparsers(dest="oidc_verb", required=True, metavar="VERB")
    overbs.add_parser("rotate-key", help="start signing with a new key").set_defaults(
        fn=cmd_oidc_rotate_key
    )

    from bridge.cli_pepper import register as register_pepper

    register_pepper(verbs)
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
    except BrokenPipeError:  # `patron-bridge patron list | head`: the reader left early
        # Python would flush stdout again at exit and print a second error: point it elsewhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_EXIT
