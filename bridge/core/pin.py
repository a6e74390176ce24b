"""The library's PIN rules, and the one place PINs are hashed and verified.

Hashing: the PIN is first keyed with the pepper (HMAC-SHA256, the pepper lives in a file outside
the database), then run through a salted memory-hard KDF (Argon2id by default, scrypt as the
alternative). The result is a self-describing PHC string, so costs can be raised later: a hash
made with weaker parameters verifies and reports `needs_rehash`, and the core re-hashes it after
the next successful login. Pre-hashed PINs imported from an ILS (bcrypt, Evergreen md5+bcrypt,
PBKDF2) verify too and always need a rehash into our format.

KDF work runs in a thread pool (cryptography releases the GIL), never on the event loop. An
unknown card costs the same KDF as a known one (`dummy_verify`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from bridge.core.secret import Secret
from bridge.files import write_private

# ---------------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------------

ASCII_DIGITS: Final = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class PolicyResult:
    ok: bool
    reason: str = ""
    code: str = "ok"


@dataclass(frozen=True, slots=True)
class PinPolicy:
    """Default is the library's published rule: exactly four ASCII digits, no letters or special
    characters, no repeating numbers (all digits the same like 2222, or a repeated pair like
    1212). 5961 is fine. Length and a blocklist are configurable."""

    min_length: int = 4
    max_length: int = 4
    forbid_repeats: bool = True
    blocklist: frozenset[str] = frozenset()
    # How long a one-time PIN issued at the staff desk stays usable (at My Account, to set a
    # new PIN); after it, the patron needs staff or a reset link again.
    one_time_hours: int = 72

    def check(self, pin: Secret | str, *, old: Secret | str | None = None) -> PolicyResult:
        text = pin.text() if isinstance(pin, Secret) else pin
        if text is None or text == "":
            return PolicyResult(False, "Please enter a PIN.", "empty")
        length = self._length_phrase()
        if not ASCII_DIGITS.fullmatch(text):
            return PolicyResult(
                False,
                f"Your PIN must be {length}: numbers 0-9 only, no letters, spaces or symbols.",
                "not_digits",
            )
        if not self.min_length <= len(text) <= self.max_length:
            return PolicyResult(False, f"Your PIN must be {length}.", "length")
        if self.forbid_repeats and _is_repeating(text):
            return PolicyResult(
                False,
                "Your PIN cannot be a repeating number such as 2222 or 1212. "
                "Choose digits with no pattern.",
                "repeating",
            )
        if text in self.blocklist:
            return PolicyResult(
                False, "That PIN is too common and easy to guess. Please choose another.", "common"
            )
        if old is not None:
            old_text = old.text() if isinstance(old, Secret) else old
            if old_text is not None and hmac.compare_digest(old_text, text):
                return PolicyResult(
                    False, "Your new PIN must be different from your current PIN.", "same_as_old"
                )
        return PolicyResult(True)

    def _length_phrase(self) -> str:
        if self.min_length == self.max_length:
            return f"exactly {self.min_length} digits"
        return f"{self.min_length} to {self.max_length} digits"


def _is_repeating(text: str) -> bool:
    """All digits the same (2222) or one short unit repeated (1212, 123123)."""
    n = len(text)
    return any(n % unit == 0 and text[:unit] * (n // unit) == text for unit in range(1, n // 2 + 1))


def load_blocklist(path: Path) -> frozenset[str]:
    """One PIN a line; blank lines and `#` comments ignored."""
    entries = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(line)
    return frozenset(entries)


# ---------------------------------------------------------------------------------------------
# Hashing
# ---------------------------------------------------------------------------------------------

PEPPER_BYTES: Final = 32
_PEPPER_LABEL: Final = b"patron-bridge pin v1|"


# `$argon2id$v=19$m=M,t=T,p=P$salt$hash`, unpadded standard base64 (salt >= 8, hash >= 4 bytes).
_ARGON2ID_PHC: Final = re.compile(
    r"\$argon2id\$v=19\$m=(?P<m>[0-9]{1,8}),t=(?P<t>[0-9]{1,3}),p=(?P<p>[0-9]{1,3})"
    r"\$[A-Za-z0-9+/]{11,}\$[A-Za-z0-9+/]{6,}"
)
_ARGON2_MAX_MEMORY_KIB: Final = 1048576  # the config's ceiling; a row asking more is corrupt


class HashFormatError(ValueError):
    """A stored hash string this hasher does not understand (message never contains the hash)."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    algorithm: str = "argon2id"  # or "scrypt"
    argon2_memory_kib: int = 19456
    argon2_iterations: int = 2
    argon2_lanes: int = 1
    scrypt_log2_n: int = 14
    scrypt_r: int = 8
    scrypt_p: int = 1


@dataclass(frozen=True, slots=True)
class HashCheck:
    ok: bool
    needs_rehash: bool


def read_or_create_pepper(path: Path) -> bytes:
    """Read the pepper; on first start create it with mode 0600. Never logged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = os.urandom(PEPPER_BYTES)
        write_private(path, data)
        return data
    if len(data) < 16:
        raise HashFormatError(f"{path}: pepper file is shorter than 16 bytes")
    return data


PEPPER_ONE: Final = "1"
PEPPERED: Final = ("$argon2id$", "$scrypt$")
_PEPPER_TAG: Final = re.compile(r"\$pepper=([1-9][0-9]{0,5})")


def tag_pepper(phc: str, pepper_id: str) -> str:
    return phc if pepper_id == PEPPER_ONE else f"{phc}$pepper={pepper_id}"


def split_pepper(stored: str) -> tuple[str, str]:
    """(pepper id, the KDF string without the tag): an untagged peppered hash is pepper 1."""
    head, sep, tail = stored.rpartition("$")
    if sep and stored.startswith(PEPPERED):
        match = _PEPPER_TAG.fullmatch(sep + tail)
        if match is not None:
            return match.group(1), head
    return PEPPER_ONE, stored


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict: a character outside the alphabet is an error, not silently dropped."""
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


class PinHasher:
    """Pepper + KDF + worker pool. One per process; stores receive it when they open."""

    def __init__(
        self,
        pepper: bytes,
        params: KdfParams | None = None,
        workers: int | None = None,
        rotated: Mapping[str, bytes] | None = None,
    ):
        self._pepper = pepper  # pepper 1, the configured file: also keys `derived_key`
        self._peppers: dict[str, bytes] = {PEPPER_ONE: pepper, **(rotated or {})}
        self.current_id = max(self._peppers, key=int)  # new hashes use the newest pepper
        self.params = params or KdfParams()
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="kdf")
        self.in_flight = 0  # hashes submitted and not yet finished (metrics: busy and queued)
        self._dummy = self.hash_sync(Secret(os.urandom(8).hex()))

    def __repr__(self) -> str:
        return f"PinHasher({self.params.algorithm}, workers={self.workers})"

    def add_peppers(self, rotated: Mapping[str, bytes]) -> str:
        """A rotation reached the daemon (reload): the new peppers verify from now on; which
        one new hashes use is the store's `pepper-active` (`bridge.pepper_hosts.sync`), so a
        staged pepper is never written before every host holds it. Peppers already held stay.
        Returns the current id. One dict swap: hashes in flight keep the mapping they started
        with."""
        self._peppers = {**self._peppers, **rotated}
        return self.current_id

    def set_writer(self, pepper_id: str) -> None:
        """Make a held pepper the one new hashes use (the store's `pepper-active`)."""
        if pepper_id not in self._peppers:
            raise HashFormatError(f"pepper {pepper_id} is not loaded")
        self.current_id = pepper_id

    def pepper_fingerprints(self) -> dict[str, str]:
        """Each held pepper's fingerprint (`bridge.core.pepper.fingerprint`), to compare with
        what the store recorded; never the pepper."""
        from bridge.core.pepper import fingerprint

        return {pid: fingerprint(data) for pid, data in self._peppers.items()}

    def drop_peppers(self, ids: list[str]) -> None:
        """Stop using peppers that are not the store's (a wrong file picked up by a reload):
        a hash naming one is then unreadable (never counted as a wrong PIN) rather than
        checked with the wrong key. Pepper 1 and the writer stay."""
        keep = {PEPPER_ONE, self.current_id}
        self._peppers = {k: v for k, v in self._peppers.items() if k in keep or k not in ids}

    def pepper_ids(self) -> list[str]:
        return sorted(self._peppers, key=int)

    def derived_key(self, label: str) -> bytes:
        """A key for another purpose (audit barcode hashing, token MACs), derived from the
        pepper so the pepper itself is used only for PINs."""
        return hmac.new(self._pepper, b"derive|" + label.encode(), hashlib.sha256).digest()

    # -- keyed pre-hash --------------------------------------------------------------------
    def _keyed(self, pin: Secret, pepper_id: str = PEPPER_ONE) -> bytes:
        pepper = self._peppers.get(pepper_id)
        if pepper is None:  # the start check refuses this; a row edited by hand gets here
            raise HashFormatError(f"hash names pepper {pepper_id}, which is not loaded")
        return hmac.new(pepper, _PEPPER_LABEL + pin.reveal(), hashlib.sha256).digest()

    # -- synchronous primitives (run in the pool) ------------------------------------------
    def hash_sync(self, pin: Secret) -> str:
        """Hash with the current pepper; its id is appended (`$pepper=N`) unless it is 1, so
        strings made before rotation existed mean pepper 1."""
        pepper_id = self.current_id
        return tag_pepper(self._hash_with(pin, pepper_id), pepper_id)

    def _hash_with(self, pin: Secret, pepper_id: str) -> str:
        p = self.params
        key = self._keyed(pin, pepper_id)
        if p.algorithm == "argon2id":
            kdf = Argon2id(
                salt=os.urandom(16),
                length=32,
                iterations=p.argon2_iterations,
                lanes=p.argon2_lanes,
                memory_cost=p.argon2_memory_kib,
            )
            return kdf.derive_phc_encoded(key)
        if p.algorithm == "scrypt":
            salt = os.urandom(16)
            digest = Scrypt(
                salt=salt, length=32, n=1 << p.scrypt_log2_n, r=p.scrypt_r, p=p.scrypt_p
            )
            out = digest.derive(key)
            params = f"ln={p.scrypt_log2_n},r={p.scrypt_r},p={p.scrypt_p}"
            return f"$scrypt${params}${_b64(salt)}${_b64(out)}"
        raise HashFormatError(f"unknown KDF algorithm {p.algorithm!r}")

    def verify_sync(self, pin: Secret, stored: str) -> HashCheck:
        pepper_id, stored = split_pepper(stored)
        check = self._verify_with(pin, stored, pepper_id)
        if check.ok and int(pepper_id) < int(self.current_id) and stored.startswith(PEPPERED):
            # an older pepper: re-hashed with the current one (never a newer one back to an
            # older: a host that has not yet taken up an activation leaves those alone)
            return HashCheck(True, True)
        return check

    def kdf_outdated(self, stored: str) -> bool:
        """True when a peppered hash was made with other KDF parameters than the configured
        ones (`pepper status`; the same test `needs_rehash` makes after a login)."""
        _, stored = split_pepper(stored)
        try:
            if stored.startswith("$argon2id$"):
                return self._argon_outdated(stored)
            params = stored.split("$")[2]
        except IndexError:  # a damaged row: counted, never fatal to the report
            return True
        p = self.params
        want = f"ln={p.scrypt_log2_n},r={p.scrypt_r},p={p.scrypt_p}"
        return p.algorithm != "scrypt" or params != want

    def _verify_with(self, pin: Secret, stored: str, pepper_id: str) -> HashCheck:
        if stored.startswith("$argon2id$"):
            # cryptography raises InvalidKey both for a wrong PIN and for a malformed string,
            # so the form is checked first: a corrupt row must not read as "wrong PIN".
            match = _ARGON2ID_PHC.fullmatch(stored)
            if match is None:
                raise HashFormatError("malformed argon2id hash")
            memory, iterations, lanes = (int(match.group(g)) for g in ("m", "t", "p"))
            if not (8 <= memory <= _ARGON2_MAX_MEMORY_KIB and 1 <= iterations <= 64):
                raise HashFormatError("argon2id parameters out of range")
            if not 1 <= lanes <= 64:
                raise HashFormatError("argon2id parameters out of range")
            try:
                Argon2id.verify_phc_encoded(self._keyed(pin, pepper_id), stored)
                ok = True
            except InvalidKey:
                ok = False
            except ValueError as exc:
                raise HashFormatError("malformed argon2id hash") from exc
            return HashCheck(ok, ok and self._argon_outdated(stored))
        if stored.startswith("$scrypt$"):
            return self._verify_scrypt(pin, stored, pepper_id)
        from bridge.core import legacy_hashes  # imported ILS hashes: rare, never hot

        ok = legacy_hashes.verify(pin, stored)
        return HashCheck(ok, ok)

    def _argon_outdated(self, stored: str) -> bool:
        p = self.params
        if p.algorithm != "argon2id":
            return True
        want = f"m={p.argon2_memory_kib},t={p.argon2_iterations},p={p.argon2_lanes}"
        return stored.split("$")[3] != want

    def _verify_scrypt(self, pin: Secret, stored: str, pepper_id: str) -> HashCheck:
        try:
            _, _, params, salt_b64, hash_b64 = stored.split("$")
            fields = dict(item.split("=", 1) for item in params.split(","))
            log2_n, r, p = int(fields["ln"]), int(fields["r"]), int(fields["p"])
            salt, expected = _unb64(salt_b64), _unb64(hash_b64)
        except (ValueError, KeyError) as exc:
            raise HashFormatError("malformed scrypt hash") from exc
        if len(salt) < 8 or not 4 <= len(expected) <= 64:
            raise HashFormatError("malformed scrypt hash")
        if not (1 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16):
            raise HashFormatError("scrypt parameters out of range")
        try:
            Scrypt(salt=salt, length=len(expected), n=1 << log2_n, r=r, p=p).verify(
                self._keyed(pin, pepper_id), expected
            )
            ok = True
        except InvalidKey:
            ok = False
        cur = self.params
        outdated = cur.algorithm != "scrypt" or (log2_n, r, p) != (
            cur.scrypt_log2_n,
            cur.scrypt_r,
            cur.scrypt_p,
        )
        return HashCheck(ok, ok and outdated)

    # -- async API --------------------------------------------------------------------------
    async def hash(self, pin: Secret) -> str:
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self.hash_sync, pin)
        finally:
            self.in_flight -= 1

    async def verify(self, pin: Secret, stored: str) -> HashCheck:
        self.in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, self.verify_sync, pin, stored
            )
        finally:
            self.in_flight -= 1

    def load(self) -> tuple[int, int, int]:
        """(queued, busy, workers): what the pool is doing now, for the metrics scrape. A hash
        beyond the worker count waits in the executor's queue."""
        busy = min(self.in_flight, self.workers)
        return self.in_flight - busy, busy, self.workers

    async def dummy_verify(self, pin: Secret) -> None:
        """Spend the same KDF work as a real verification (unknown cards: no timing oracle)."""
        await self.verify(pin, self._dummy)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
