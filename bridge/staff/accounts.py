"""Local staff accounts: names, roles and password hashes in the bridge's own SQLite file.

Why a file of the bridge's own and not the patron store: most stores are an ILS the bridge only
reads (Koha, Evergreen, a REST API), staff are not patrons, and the desk must work the same
whichever store is configured. The file also holds the per-card decision history
(`bridge.staff.history`). Passwords are hashed with the core's `PinHasher` (pepper + Argon2id in
its worker pool), so a copy of the file alone cannot be attacked offline without the pepper.
Every SQLite call here is synchronous and is run in a worker thread by its callers.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bridge.core.secret import Secret
from bridge.staff.roles import Role

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
MAX_PASSWORD = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS staff_accounts (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created REAL NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    totp_secret TEXT
)
"""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password_hash: str
    disabled: bool = False
    # Base32 TOTP secret when the account has a second factor (it must be readable to check a
    # code, so the file is as sensitive as the pepper's directory: mode 0600, no backups).
    totp_secret: str | None = None


@dataclass(frozen=True, slots=True)
class PasswordVerdict:
    ok: bool
    code: str = ""  # "length", "too_long", "repeating", "contains_name", "not_text"


def valid_name(name: str) -> bool:
    return NAME.fullmatch(name) is not None


def check_password(password: Secret, name: str, min_length: int) -> PasswordVerdict:
    """The staff password policy: long (a passphrase), not one repeated character, not the
    account name. Staff passwords guard every patron's PIN, so 12 characters is the floor."""
    text = password.text()
    if text is None or not text.isprintable():
        return PasswordVerdict(False, "not_text")
    if len(text) < min_length:
        return PasswordVerdict(False, "length")
    if len(text) > MAX_PASSWORD:
        return PasswordVerdict(False, "too_long")
    if len(set(text)) <= 2:
        return PasswordVerdict(False, "repeating")
    if name and name.casefold() in text.casefold():
        return PasswordVerdict(False, "contains_name")
    return PasswordVerdict(True)


POLICY_TEXT = {
    "not_text": "the password must be printable text",
    "length": "the password must have at least {min} characters",
    "too_long": f"the password must have at most {MAX_PASSWORD} characters",
    "repeating": "the password must not repeat one or two characters",
    "contains_name": "the password must not contain the account name",
}


class AccountFile:
    """The `staff_accounts` table (synchronous; callers use a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(staff_accounts)")}
        if "totp_secret" not in columns:  # a file made before TOTP existed
            conn.execute("ALTER TABLE staff_accounts ADD COLUMN totp_secret TEXT")
        with contextlib.suppress(OSError):
            self.path.chmod(0o600)
        return conn

    def put(
        self, name: str, role: Role, password_hash: str, totp_secret: str | None = None
    ) -> bool:
        """Add or replace an account. True when it is new."""
        with contextlib.closing(self._connect()) as conn, conn:
            existed = conn.execute(
                "SELECT 1 FROM staff_accounts WHERE name = ?", (name,)
            ).fetchone()
            conn.execute(
                "INSERT OR REPLACE INTO staff_accounts (name, role, password_hash, created, "
                "disabled, totp_secret) VALUES (?, ?, ?, ?, 0, ?)",
                (name, role.value, password_hash, time.time(), totp_secret),
            )
        return existed is None

    def get(self, name: str) -> Account | None:
        if not valid_name(name):
            return None
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT name, role, password_hash, disabled, totp_secret FROM staff_accounts "
                "WHERE name = ?",
                (name,),
            ).fetchone()
        finally:
            conn.close()
        if row is None:
            return None
        try:
            role = Role(row[1])
        except ValueError:
            return None
        return Account(row[0], role, row[2], bool(row[3]), row[4])

    def all(self) -> list[Account]:
        """Every account (the admin's list), by name."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT name, role, password_hash, disabled, totp_secret FROM staff_accounts "
                "ORDER BY name"
            ).fetchall()
        finally:
            conn.close()
        found = []
        for row in rows:
            role = Role(row[1]) if row[1] in {r.value for r in Role} else None
            if role is not None:
                found.append(Account(row[0], role, row[2], bool(row[3]), row[4]))
        return found

    def update(
        self,
        name: str,
        *,
        role: Role | None = None,
        disabled: bool | None = None,
        password_hash: str | None = None,
        totp_secret: str | None = None,
        clear_totp: bool = False,
    ) -> bool:
        """Change what is given of one account; False when there is no such account."""
        sets: list[str] = []
        values: list[object] = []
        for column, value in (
            ("role", None if role is None else role.value),
            ("disabled", None if disabled is None else int(disabled)),
            ("password_hash", password_hash),
            ("totp_secret", totp_secret),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                values.append(value)
        if clear_totp:
            sets.append("totp_secret = NULL")
        if not sets or not valid_name(name):
            return False
        with contextlib.closing(self._connect()) as conn, conn:
            cur = conn.execute(
                f"UPDATE staff_accounts SET {', '.join(sets)} WHERE name = ?",  # noqa: S608 - fixed columns
                (*values, name),
            )
            return cur.rowcount == 1

    def names(self) -> list[tuple[str, str]]:
        conn = self._connect()
        try:
            rows = conn.execute("SELECT name, role FROM staff_accounts ORDER BY name").fetchall()
        finally:
            conn.close()
        return [(str(a), str(b)) for a, b in rows]
