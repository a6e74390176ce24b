"""The pepper file and the store's record of it: a lost or wrong pepper never passes silently.

Every PIN hash the bridge makes is keyed with the pepper, a secret kept in a file apart from the
database. A store restored without it, or a second host given another file, would start, accept
no PIN at all, and count every right PIN as a wrong guess. So the store records a fingerprint of
the pepper (HMAC-SHA256 keyed with the pepper over a constant label: it identifies the pepper and
reveals nothing of it) when it first opens with the bridge's own stores, and every start checks
it before anything is written:

- the file matches the fingerprint: go on;
- the file is missing and the store holds peppered hashes (or a fingerprint): refuse; the bridge
  never creates a new pepper over existing hashes;
- the file does not match the fingerprint: refuse;
- no fingerprint yet (a new store, or one made before fingerprints existed): record it.

Fingerprints are kept per pepper id (`pepper.<id>.fingerprint` in the store's meta table), so
pepper rotation can hold several peppers side by side (see "rotation" below).
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from bridge.core.store import StoreError
from bridge.files import write_private

log = structlog.get_logger("bridge.pepper")

PEPPER_BYTES: Final = 32
PEPPER_ID: Final = "1"
_LABEL: Final = b"patron-bridge pepper fingerprint v1"
# Hash forms keyed with the pepper; imported ILS hashes (bcrypt, md5, pbkdf2) are not.
PEPPERED_PREFIXES: Final = ("$argon2id$", "$scrypt$")


class PepperError(StoreError):
    """Starting with this pepper would make every stored PIN fail (message names the file)."""


class PepperMissing(PepperError):
    pass


class PepperMismatch(PepperError):
    pass


class PepperDamaged(PepperError):
    pass


def meta_key(pepper_id: str) -> str:
    return f"pepper.{pepper_id}.fingerprint"


def fingerprint(pepper: bytes) -> str:
    """A keyed hash of a constant: the same pepper always gives the same text, and the text
    says nothing about the pepper (HMAC's key is not recoverable from its output)."""
    return "hmac-sha256:" + hmac.new(pepper, _LABEL, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredPepper:
    """What a store knows of the pepper before it is opened for writing."""

    fingerprints: Mapping[str, str] = field(default_factory=dict)  # pepper id -> fingerprint
    has_hashes: bool = False  # the store holds PIN hashes keyed with a pepper


@dataclass(slots=True)
class Pepper:
    """The configured pepper file. `new`: it did not exist, so a pepper was made in memory and
    is written only once the store has agreed (`persist`)."""

    path: Path
    data: bytes = field(repr=False)
    new: bool = False
    id: str = PEPPER_ID

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.data)

    def persist(self) -> bool:
        """Write a new pepper to its file (mode 0600); True when it was written now."""
        if not self.new:
            return False
        write_private(self.path, self.data)
        self.new = False
        log.info(
            "pepper_created",
            path=str(self.path),
            backup="copy it to every bridge host and keep a backup apart from the database",
        )
        return True


def load_pepper(path: Path) -> Pepper:
    """Read the pepper file; when there is none, make a pepper in memory (not yet written)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return Pepper(path, os.urandom(PEPPER_BYTES), new=True)
    if len(data) < 16:
        raise PepperDamaged(f"{path}: pepper file is shorter than 16 bytes")
    return Pepper(path, data)


def judge(pepper: Pepper, stored: StoredPepper) -> bool:
    """Raise when this pepper cannot serve the store; True when its fingerprint is to be
    recorded (the store has none for this pepper id yet)."""
    known = stored.fingerprints.get(pepper.id)
    if pepper.new and (known is not None or stored.has_hashes):
        raise PepperMissing(
            f"{pepper.path} does not exist but the store holds PIN hashes made with a pepper: "
            "restore the file from a backup or another bridge host (a new pepper would make "
            "every PIN fail)"
        )
    if known is not None and not hmac.compare_digest(known, pepper.fingerprint):
        raise PepperMismatch(
            f"{pepper.path} is not the pepper this store's PIN hashes were made with: restore "
            "the right file from a backup or another bridge host"
        )
    return known is None


def confirm(pepper: Pepper, recorded: str) -> None:
    """After recording (insert-if-absent), the fingerprint the store now holds must be ours:
    two hosts with different new peppers starting together on an empty store do not both win."""
    if not hmac.compare_digest(recorded, pepper.fingerprint):
        raise PepperMismatch(
            f"{pepper.path} is not the pepper this store recorded (another host started with a "
            "different pepper file): copy that host's file here"
        )


def state(pepper_path: Path, stored: StoredPepper | None) -> dict[str, object]:
    """`check-config`'s report: the file, and whether the store agrees (never the pepper)."""
    report: dict[str, object] = {"file": str(pepper_path)}
    try:
        pepper = load_pepper(pepper_path)
    except PepperDamaged:
        report["state"] = "damaged (shorter than 16 bytes)"
        return report
    except OSError as exc:
        report["state"] = f"unreadable ({exc.strerror})"
        return report
    if stored is None:
        report["state"] = "missing: created at first start" if pepper.new else "present"
        return report
    report["store_has_hashes"] = stored.has_hashes
    report["store_fingerprint"] = "recorded" if pepper.id in stored.fingerprints else "none yet"
    try:
        judge(pepper, stored)
    except PepperMissing:
        report["state"] = "MISSING: the store holds hashes; the bridge will refuse to start"
        return report
    except PepperMismatch:
        report["state"] = "WRONG: does not match the store; the bridge will refuse to start"
        return report
    if pepper.new:
        report["state"] = "missing: created at first start (the store holds no hashes yet)"
    else:
        report["state"] = "matches the store" if pepper.id in stored.fingerprints else "present"
    return report


# -- rotation: more peppers beside the configured file ------------------------------------------
#
# The configured `security.pepper_file` is pepper 1 (it also keys the audit barcode hashes and
# reset-token MACs, so it is never retired). `pepper rotate` writes pepper N (N >= 2) to the
# file `<pepper_file>.N` beside it, mode 0600, and records its fingerprint; the highest id is the
# one new hashes use. A config with one file works as before: there are no `.N` files.

_ROTATED_SUFFIX: Final = re.compile(r"\.([2-9]|[1-9][0-9]{1,5})")


def rotated_path(base: Path, pepper_id: str) -> Path:
    return base.with_name(f"{base.name}.{pepper_id}")


def load_rotated(base: Path) -> list[Pepper]:
    """Every `<pepper_file>.N` beside the configured file, by id (a damaged one raises)."""
    found: list[Pepper] = []
    if not base.parent.is_dir():
        return found
    for path in base.parent.glob(glob.escape(base.name) + ".*"):
        match = _ROTATED_SUFFIX.fullmatch(path.name[len(base.name) :])
        if match is None:
            continue
        data = path.read_bytes()
        if len(data) < 16:
            raise PepperDamaged(f"{path}: pepper file is shorter than 16 bytes")
        found.append(Pepper(path, data, id=match.group(1)))
    return sorted(found, key=lambda p: int(p.id))


def judge_rotated(base: Path, rotated: list[Pepper], stored: StoredPepper) -> list[Pepper]:
    """Raise when a pepper the store recorded (other than 1) is missing or is not its file;
    return the files whose fingerprint is to be recorded (written, not yet recorded: a rotation
    interrupted before it recorded, finished here)."""
    by_id = {p.id: p for p in rotated}
    for pepper_id, known in sorted(stored.fingerprints.items()):
        if pepper_id == PEPPER_ID:
            continue
        pepper = by_id.get(pepper_id)
        if pepper is None:
            raise PepperMissing(
                f"{rotated_path(base, pepper_id)} does not exist but the store records pepper "
                f"{pepper_id}: restore the file from a backup or another bridge host"
            )
        if not hmac.compare_digest(known, pepper.fingerprint):
            raise PepperMismatch(
                f"{pepper.path} is not pepper {pepper_id} of this store: restore the right file "
                "from a backup or another bridge host"
            )
    return [p for p in rotated if p.id not in stored.fingerprints]


def rotated_state(base: Path, stored: StoredPepper) -> dict[str, str]:
    """`check-config`'s report on the rotated peppers: id -> state (never the pepper)."""
    try:
        rotated = {p.id: p for p in load_rotated(base)}
    except PepperDamaged as exc:
        return {"error": str(exc)}
    except OSError as exc:
        return {"error": f"unreadable ({exc.strerror})"}
    report: dict[str, str] = {}
    for pepper_id in sorted(set(rotated) | set(stored.fingerprints) - {PEPPER_ID}, key=int):
        pepper, known = rotated.get(pepper_id), stored.fingerprints.get(pepper_id)
        path = rotated_path(base, pepper_id)
        if pepper is None:
            report[pepper_id] = f"MISSING: {path}; the bridge will refuse to start"
        elif known is None:
            report[pepper_id] = f"{path}: present, recorded at the next start"
        elif hmac.compare_digest(known, pepper.fingerprint):
            report[pepper_id] = f"{path}: matches the store"
        else:
            report[pepper_id] = f"WRONG: {path}; the bridge will refuse to start"
    return report
