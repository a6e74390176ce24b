"""Pepper rotation when several hosts (and their workers) share one store: two phases, so no
host ever writes a hash another host cannot verify.

A hash made with pepper N verifies only where `<pepper_file>.N` is. So a new pepper is first
*staged* (`pepper rotate --stage`: written and its fingerprint recorded, verify-only), copied to
every host, and taken up there by a reload or a start; only then is it *activated* (`pepper
activate N`: the store's `pepper-active` record), and from their next reload on the hosts write
with it. Until a host takes up the activation it keeps writing with the pepper that was active
before, which every host holds, and it leaves hashes made with the newer pepper alone
(`PinHasher.verify_sync` re-hashes only towards a newer pepper).

Each serving host proves what it holds: at start and after every reload it records
`pepper-host.<hostname>:<pepper_file>` = `held=1,2;writer=1` in the store. `pepper activate N`
refuses while a recorded host does not hold N (naming it); `pepper retire N` refuses while a
host still writes with N. A store with no `pepper-active` record (made before this) works as
before: the newest pepper writes.
"""

from __future__ import annotations

import hmac
import os
import socket
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import structlog

from bridge.config import Config
from bridge.core.pepper import PepperMissing, rotated_path

log = structlog.get_logger("bridge.pepper")

ACTIVE = "pepper-active"
HOST = "pepper-host."


@runtime_checkable
class RotationRecords(Protocol):
    """The store's side (plugins/sqlite.py, plugins/postgres.py): `pepper-*` meta records."""

    async def pepper_meta(self) -> dict[str, str]: ...

    async def put_pepper_meta(self, key: str, value: str | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Proof:
    """What one host said it holds, the last time it started or reloaded."""

    host: str
    held: tuple[str, ...]
    writer: str

    def encode(self) -> str:
        return f"held={','.join(self.held)};writer={self.writer}"

    @classmethod
    def decode(cls, host: str, text: str) -> Proof:
        fields = dict(part.partition("=")[::2] for part in text.split(";"))
        held = tuple(i for i in fields.get("held", "").split(",") if i)
        return cls(host, held, fields.get("writer", ""))


def host_id(config: Config) -> str:
    """This host's name in the records: the machine and its pepper file (two daemons on one
    machine with their own files are two hosts; the workers of one daemon are one)."""
    path = os.path.normpath(config.path(config.security.pepper_file))
    return f"{socket.gethostname()}:{path}"


def proofs(meta: dict[str, str]) -> list[Proof]:
    return [Proof.decode(k[len(HOST) :], v) for k, v in sorted(meta.items()) if k.startswith(HOST)]


async def choose_writer(config: Config, store: Any, hasher: Any) -> None:
    """At open: the store's active pepper is the one new hashes use. Raises `PepperMissing`
    (one line naming the file) when this host lacks it."""
    if not isinstance(store, RotationRecords) or hasher is None:
        return
    active = (await store.pepper_meta()).get(ACTIVE)
    if active is None:
        return  # a store from before two-phase rotation: the newest pepper writes
    if active not in hasher.pepper_ids():
        path = rotated_path(config.path(config.security.pepper_file), active)
        raise PepperMissing(
            f"{path} does not exist but pepper {active} is the one this store's hosts write "
            "with: copy it from another bridge host"
        )
    hasher.set_writer(active)


def recorded(meta: dict[str, str]) -> dict[str, str]:
    """Pepper id -> the fingerprint the store recorded for it."""
    return {
        k.split(".")[1]: v
        for k, v in meta.items()
        if k.startswith("pepper.") and k.endswith(".fingerprint")
    }


def matching(meta: dict[str, str], hasher: Any) -> tuple[list[str], list[str]]:
    """(held peppers whose fingerprint is the store's, held peppers whose is not)."""
    known = recorded(meta)
    good, wrong = [], []
    for pid, mine in sorted(hasher.pepper_fingerprints().items(), key=lambda kv: int(kv[0])):
        theirs = known.get(pid)
        if theirs is not None and hmac.compare_digest(theirs, mine):
            good.append(pid)
        elif theirs is not None:
            wrong.append(pid)
    return good, wrong


async def prove(config: Config, store: Any, hasher: Any) -> None:
    """Record which peppers this host holds (only those whose fingerprint is the store's) and
    which one it writes with."""
    if not isinstance(store, RotationRecords) or hasher is None:
        return
    held, _ = matching(await store.pepper_meta(), hasher)
    proof = Proof(host_id(config), tuple(held), hasher.current_id)
    await store.put_pepper_meta(HOST + proof.host, proof.encode())


async def sync(config: Config, store: Any, hasher: Any) -> str | None:
    """After a reload: drop a pepper file that is not the store's, take up an activation, then
    prove again. None, or the error line (the host keeps writing with the pepper it had; it
    never writes one it does not hold)."""
    if not isinstance(store, RotationRecords) or hasher is None:
        return None
    error = None
    _, wrong = matching(await store.pepper_meta(), hasher)
    if wrong:
        hasher.drop_peppers(wrong)
        base = config.path(config.security.pepper_file)
        files = ", ".join(str(rotated_path(base, pid)) for pid in wrong)
        error = (
            f"{files}: not the pepper this store recorded: copy the right file from another host"
        )
    try:
        await choose_writer(config, store, hasher)
    except PepperMissing as exc:
        error = str(exc)
    await prove(config, store, hasher)
    if error is None:
        return None
    log.error("pepper_not_held", error=error, key="security.pepper_file")
    return f"{config.source}: security.pepper_file: {error}"


def lacking(meta: dict[str, str], pepper_id: str) -> list[Proof]:
    """The hosts that do not hold this pepper (activating it would strand them)."""
    return [p for p in proofs(meta) if pepper_id not in p.held]


def writing(meta: dict[str, str], pepper_id: str) -> list[Proof]:
    """The hosts that still write with this pepper (retiring it would strand their hashes)."""
    return [p for p in proofs(meta) if p.writer == pepper_id]
