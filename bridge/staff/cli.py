"""`patron-bridge staff add NAME --role desk|supervisor|admin`: a local staff account.

The password is asked twice at a terminal or read once from standard input, checked against
the staff password policy, hashed with the core's hasher (pepper + KDF) and written to the
`[staff] state_path` file. The daemon reads accounts per request, so no restart is needed.
"""

from __future__ import annotations

import getpass
from typing import TextIO

from bridge.config import Config
from bridge.core.secret import Secret
from bridge.staff.accounts import POLICY_TEXT, AccountFile, check_password, valid_name
from bridge.staff.roles import Role, parse_role
from bridge.staff.totp import new_secret, provisioning_uri

__all__ = ["StaffRefused", "add", "new_secret", "provisioning_uri", "read_password"]


class StaffRefused(Exception):
    """The account cannot be made as asked (exit 1)."""


def read_password(stdin: TextIO, from_stdin: bool) -> Secret:
    if from_stdin or not stdin.isatty():
        line = stdin.readline()
        if not line:
            raise StaffRefused("no password on standard input")
        return Secret(line.rstrip("\r\n"))
    first = Secret(getpass.getpass("Password: "))
    if not first.matches(getpass.getpass("Password again: ")):
        raise StaffRefused("the two passwords do not match")
    return first


def add(
    config: Config, name: str, role_name: str, password: Secret, *, totp_secret: str | None = None
) -> tuple[Role, bool]:
    """Create or replace the account; (role, whether it is new)."""
    from bridge.app import make_hasher

    if config.staff is None:
        raise StaffRefused("no [staff] section in the config")
    name = name.strip().lower()
    if not valid_name(name):
        raise StaffRefused("the account name must be 1-64 of a-z 0-9 . _ - (starting a-z or 0-9)")
    role = parse_role(role_name)
    if role is None:
        raise StaffRefused("the role must be desk, supervisor or admin")
    verdict = check_password(password, name, config.staff.password_min_length)
    if not verdict.ok:
        raise StaffRefused(POLICY_TEXT[verdict.code].format(min=config.staff.password_min_length))
    hasher = make_hasher(config)
    try:
        password_hash = hasher.hash_sync(password)
    finally:
        hasher.close()
    accounts = AccountFile(config.path(config.staff.state_path))
    created = accounts.put(name, role, password_hash, totp_secret)
    return role, created
