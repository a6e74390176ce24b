"""`patron-bridge pepper rotate [--stage] | activate ID | status | retire ID`: rotate the pepper,
and see how many PIN hashes still wait to be re-hashed after a rotation or a raised KDF cost.

Peppers live beside the configured `security.pepper_file`: that file is pepper 1, `pepper rotate`
writes pepper N as `<pepper_file>.N` (mode 0600) and records its fingerprint in the store, so
every start checks it as it checks pepper 1. The store's `pepper-active` record names the one new
hashes use: `pepper rotate` on one host stages and activates at once; with several hosts on one
store, `pepper rotate --stage` adds it verify-only and `pepper activate N` makes it the writer
once every host has proved it holds it (`bridge.pepper_hosts`). A hash made with an older pepper
still verifies with it and is re-hashed with the active one on the patron's next successful
login (as a hash made with weaker KDF parameters is). The running daemon learns of a rotation
through a reload (the commands ask for one over the control socket). Pepper 1 is never retired:
it also keys the audit barcode hashes and reset-token MACs.

Only the bridge's own stores (sqlite, postgres) keep bridge hashes; the commands refuse others.
Nothing here ever prints a PIN, a hash or a pepper: only ids, file names and counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bridge.config import Config
from bridge.core.pepper import PEPPER_BYTES, rotated_path
from bridge.core.pin import PEPPERED, split_pepper
from bridge.files import write_private
from bridge.pepper_hosts import ACTIVE, HOST, RotationRecords, lacking, proofs, prove, writing


@runtime_checkable
class PepperAdmin(Protocol):
    """What a store offers for the pepper commands (plugins/sqlite.py, plugins/postgres.py)."""

    async def pin_hashes(self) -> list[str]: ...

    async def forget_pepper(self, pepper_id: str) -> None: ...


@dataclass(slots=True)
class Census:
    """How many hashes use each pepper, and how many wait for a re-hash."""

    current: str
    by_pepper: dict[str, int] = field(default_factory=dict)
    kdf_outdated: int = 0  # peppered hashes made with other KDF parameters than configured
    imported: int = 0  # ILS hashes (bcrypt, md5, pbkdf2): re-hashed at the next login

    def as_json(self, files: dict[str, str]) -> dict[str, object]:
        return {
            "current": self.current,
            "peppers": {
                pid: {"hashes": n, "file": files.get(pid, "")} for pid, n in self.by_pepper.items()
            },
            "kdf_outdated": self.kdf_outdated,
            "imported": self.imported,
        }


def census(hasher: Any, hashes: list[str]) -> Census:
    counts: Counter[str] = Counter({pid: 0 for pid in hasher.pepper_ids()})
    result = Census(hasher.current_id)
    for stored in hashes:
        if not stored.startswith(PEPPERED):
            result.imported += 1
            continue
        pepper_id, _ = split_pepper(stored)
        counts[pepper_id] += 1
        if hasher.kdf_outdated(stored):
            result.kdf_outdated += 1
    result.by_pepper = {pid: counts[pid] for pid in sorted(counts, key=int)}
    return result


def _admin(core: Any) -> PepperAdmin:
    from bridge.cli import Refused

    if not isinstance(core.store, PepperAdmin):
        raise Refused(
            f"the {type(core.store).__name__} store keeps no bridge PIN hashes: no pepper to rotate"
        )
    return core.store


def _files(config: Config, ids: list[str]) -> dict[str, str]:
    base = config.path(config.security.pepper_file)
    paths = {pid: base if pid == "1" else rotated_path(base, pid) for pid in ids}
    return {pid: os.path.normpath(path) for pid, path in paths.items()}


def _plural(n: int) -> str:
    return f"{n} hash" if n == 1 else f"{n} hashes"


def _tell_daemon(config: Config) -> str | None:
    """Ask a running daemon to reload (it reads the new pepper file); None when none runs,
    else the line to print (an error line when it could not be told)."""
    from bridge.control import reload_all
    from bridge.runtime.instance import lock_path, running_pid

    socket_path = config.path(config.control.socket)
    pid = running_pid(lock_path(socket_path))
    if pid is None:
        return None
    answer = reload_all(socket_path)
    if answer is None or not answer.get("ok"):
        why = "no answer" if answer is None else str(answer.get("error"))
        return (
            f"ERROR: the daemon (pid {pid}) could not be told through {socket_path} ({why}): "
            "it cannot verify PINs set with the new pepper until it reloads; run "
            "`patron-bridge reload` or restart it"
        )
    if answer.get("pepper_error"):
        return f"ERROR: the daemon (pid {pid}) reloaded but {answer['pepper_error']}"
    return f"the running daemon (pid {pid}) reloaded"


def cmd_rotate(args: argparse.Namespace) -> int:
    from bridge.cli import OK, REFUSED, Refused, _config, _with_core
    from bridge.loop import run as run_loop

    config = _config(args)
    base = config.path(config.security.pepper_file)
    found: dict[str, str] = {}

    async def check(core: Any) -> int:  # every pepper in use is present and right
        _admin(core)
        found["next"] = str(max(int(pid) for pid in core.hasher.pepper_ids()) + 1)
        store = core.store
        if isinstance(store, RotationRecords) and ACTIVE not in await store.pepper_meta():
            # pin the writer before a newer pepper exists that a start could take as newest
            await store.put_pepper_meta(ACTIVE, core.hasher.current_id)
        return OK

    run_loop(_with_core(config, check))
    new_id = found["next"]
    path = rotated_path(base, new_id)
    if path.exists():
        raise Refused(f"{path} exists but its pepper is not in use: move it away first")
    write_private(path, os.urandom(PEPPER_BYTES))

    async def record(core: Any) -> int:  # opening checks and records the new fingerprint
        if new_id not in core.hasher.pepper_ids():
            return REFUSED
        core.audit.event(
            "pepper_rotated", actor="cli", pepper_id=new_id, file=str(path), staged=args.stage
        )
        return OK

    try:
        code = run_loop(_with_core(config, record))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if code != OK:
        path.unlink(missing_ok=True)
        raise Refused(f"{path} was written but not taken up: removed, nothing changed")
    shown, base_shown = os.path.normpath(path), os.path.normpath(base)
    if args.stage:
        print(f"pepper {new_id} staged: {shown} (mode 0600); it verifies, nothing writes it yet")
        print(f"back up {shown} with {base_shown}; copy it to every bridge host, reload them,")
        print(f"then run `patron-bridge pepper activate {new_id}`")
        told = _tell_daemon(config)
        if told is not None:
            print(told)
            return REFUSED if told.startswith("ERROR") else OK
        return OK
    print(f"pepper {new_id} added: {shown} (mode 0600)")
    print(f"back up {shown} with {base_shown}: hashes made with it need it")
    return _activate(config, new_id, without=[])


def _activate(config: Config, pepper_id: str, without: list[str]) -> int:
    """Make a staged pepper the writer, once every recorded host holds it."""
    from bridge.cli import OK, REFUSED, Refused, _with_core
    from bridge.loop import run as run_loop
    from bridge.runtime.instance import lock_path, running_pid

    socket_path = config.path(config.control.socket)
    daemon = running_pid(lock_path(socket_path)) is not None
    if daemon:  # its proof first: what it holds now
        told = _tell_daemon(config)
        if told is not None and told.startswith("ERROR"):
            print(told)
            return REFUSED

    async def body(core: Any) -> int:
        store = _admin(core)
        if not isinstance(store, RotationRecords):
            raise Refused(f"the {type(store).__name__} store keeps no rotation records")
        if pepper_id not in core.hasher.pepper_ids():
            raise Refused(
                f"there is no pepper {pepper_id} here: copy "
                f"{_files(config, [pepper_id])[pepper_id]} from the host that staged it"
            )
        if not daemon:  # this host's next start loads what the CLI just loaded
            await prove(config, store, core.hasher)
        for host in without:  # a host that is gone for good
            await store.put_pepper_meta(HOST + host, None)
        missing = lacking(await store.pepper_meta(), pepper_id)
        if missing:
            names = "; ".join(f"{p.host} (holds {','.join(p.held)})" for p in missing)
            raise Refused(
                f"pepper {pepper_id} is not held by every host: {names}. Copy the file there "
                f"and reload that host, or `--without HOST` for one that is gone"
            )
        await store.put_pepper_meta(ACTIVE, pepper_id)
        core.audit.event("pepper_activated", actor="cli", pepper_id=pepper_id)
        return OK

    code: int = run_loop(_with_core(config, body))
    if code != OK:
        return code
    print(f"pepper {pepper_id} is active: new hashes use it")
    told = _tell_daemon(config)
    if told is None:
        print("no daemon is running here: it uses the new pepper from its next start")
    else:
        print(told)
        if told.startswith("ERROR"):
            return REFUSED
    print("other hosts switch at their next reload (`systemctl reload patron-bridge`)")
    return OK


def cmd_activate(args: argparse.Namespace) -> int:
    from bridge.cli import _config

    return _activate(_config(args), _pepper_id(args.id), list(args.without or []))


def _pepper_id(text: str) -> str:
    from bridge.cli import UsageError

    if not text.isdigit() or text.startswith("0"):
        raise UsageError(f"pepper id {text!r} is not a number")
    return text


def cmd_status(args: argparse.Namespace) -> int:
    from bridge.cli import OK, _config, _with_core
    from bridge.loop import run as run_loop

    config = _config(args)

    async def body(core: Any) -> int:
        result = census(core.hasher, await _admin(core).pin_hashes())
        files = _files(config, list(result.by_pepper))
        if args.json:
            print(json.dumps(result.as_json(files), indent=2))
            return OK
        for pid, n in result.by_pepper.items():
            mark = ", current" if pid == result.current else ""
            print(f"pepper {pid}: {_plural(n)} ({files[pid]}{mark})")
        moving = sum(n for pid, n in result.by_pepper.items() if pid != result.current)
        print(f"older pepper: {moving} left to re-hash")
        print(f"weaker KDF parameters than configured: {result.kdf_outdated} left to re-hash")
        print(f"imported ILS hashes: {result.imported} left to re-hash")
        print("(each is re-hashed at the patron's next successful login)")
        store = core.store
        if isinstance(store, RotationRecords):
            for proof in proofs(await store.pepper_meta()):
                held = ",".join(proof.held)
                print(f"host {proof.host}: holds {held}, writes {proof.writer}")
        return OK

    code: int = run_loop(_with_core(config, body))
    return code


def cmd_retire(args: argparse.Namespace) -> int:
    from bridge.cli import OK, Refused, _config, _with_core
    from bridge.loop import run as run_loop

    config = _config(args)
    pepper_id = _pepper_id(str(args.id))
    if pepper_id == "1":
        raise Refused(
            "pepper 1 (security.pepper_file) is never retired: it also keys the audit barcode "
            "hashes and the reset-token MACs"
        )

    async def body(core: Any) -> int:
        store = _admin(core)
        hasher = core.hasher
        if pepper_id not in hasher.pepper_ids():
            raise Refused(f"there is no pepper {pepper_id}")
        if pepper_id == hasher.current_id:
            raise Refused(f"pepper {pepper_id} is the current one: rotate first")
        if isinstance(store, RotationRecords):
            busy = writing(await store.pepper_meta(), pepper_id)
            if busy:
                names = ", ".join(p.host for p in busy)
                raise Refused(
                    f"pepper {pepper_id} is still written by {names}: reload that host first"
                )
        result = census(hasher, await store.pin_hashes())
        left = result.by_pepper.get(pepper_id, 0)
        if left:
            raise Refused(
                f"{_plural(left)} still {'uses' if left == 1 else 'use'} pepper {pepper_id}: "
                f"each moves to pepper "
                f"{result.current} at the patron's next login (or a staff PIN reset)"
            )
        await store.forget_pepper(pepper_id)
        path = Path(_files(config, [pepper_id])[pepper_id])
        await asyncio.to_thread(path.unlink, missing_ok=True)
        core.audit.event("pepper_retired", actor="cli", pepper_id=pepper_id, file=str(path))
        print(f"pepper {pepper_id} retired: {path} removed, its fingerprint forgotten")
        return OK

    code: int = run_loop(_with_core(config, body))
    return code


def register(verbs: Any) -> None:
    """Add `pepper rotate | status | retire` to the CLI's parser."""
    pepper = verbs.add_parser("pepper", help="rotate the pepper; re-hash progress")
    sub = pepper.add_subparsers(dest="pepper_verb", required=True, metavar="VERB")
    rotate = sub.add_parser("rotate", help="add a new pepper for new hashes")
    rotate.add_argument(
        "--stage",
        action="store_true",
        help="several hosts: add it verify-only; `pepper activate ID` once every host has it",
    )
    rotate.set_defaults(fn=cmd_rotate)
    activate = sub.add_parser("activate", help="make a staged pepper the one new hashes use")
    activate.add_argument("id", help="the staged pepper's id")
    activate.add_argument(
        "--without", action="append", metavar="HOST", help="forget a host that is gone for good"
    )
    activate.set_defaults(fn=cmd_activate)
    status = sub.add_parser("status", help="hashes per pepper, and how many wait for a re-hash")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(fn=cmd_status)
    retire = sub.add_parser("retire", help="remove an old pepper no hash uses any more")
    retire.add_argument("id", help="the pepper id (2, 3, ...)")
    retire.set_defaults(fn=cmd_retire)
