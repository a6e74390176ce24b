"""Local staff accounts: the password policy, the account file, and `patron-bridge staff add`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.staff.accounts import AccountFile, check_password, valid_name
from bridge.staff.roles import Role
from tests.harness import base_config, run_cli
from tests.staff.support import STAFF_SECTION


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short pass", "length"),
        ("aaaaaaaaaaaaaaaa", "repeating"),
        ("abababababababab", "repeating"),
        ("my name is dana ok", "contains_name"),
        ("x" * 300 + "yz", "too_long"),
        ("tab\tinside password", "not_text"),
        ("river desk pass 42", ""),
    ],
)
def test_password_policy(password: str, code: str) -> None:
    verdict = check_password(Secret(password), "dana", 12)
    assert verdict.ok is (code == "")
    assert verdict.code == code


@given(st.text(max_size=300))
def test_password_policy_is_total(text: str) -> None:
    verdict = check_password(Secret(text), "dana", 12)
    assert verdict.ok is (verdict.code == "")
    if verdict.ok:
        assert len(text) >= 12


@given(st.text(max_size=80))
def test_names_are_plain(name: str) -> None:
    if valid_name(name):
        assert name.isascii() and name == name.lower() and 1 <= len(name) <= 64
        assert "|" not in name and "/" not in name


def test_account_file(tmp_path: Path) -> None:
    accounts = AccountFile(tmp_path / "staff.db")
    assert accounts.put("dana", Role.DESK, "$argon2id$x")
    assert not accounts.put("dana", Role.SUPERVISOR, "$argon2id$y")
    found = accounts.get("dana")
    assert found is not None and found.role is Role.SUPERVISOR
    assert accounts.get("nobody") is None
    assert accounts.get("'; drop table staff_accounts; --") is None
    with sqlite3.connect(tmp_path / "staff.db") as conn:
        conn.execute("UPDATE staff_accounts SET role = 'root'")
    assert accounts.get("dana") is None  # an unknown role grants nothing


def test_cli_staff_add(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(base_config(tmp_path) + STAFF_SECTION)
    made = run_cli(
        config, "staff", "add", "Dana", "--role", "desk", "--stdin", input="river desk pass 42\n"
    )
    assert made.returncode == 0, made.stderr
    assert "staff account dana added (desk)" in made.stdout
    account = AccountFile(tmp_path / "staff.db").get("dana")
    assert account is not None and account.password_hash.startswith("$argon2id$")
    assert "river desk" not in (tmp_path / "staff.db").read_bytes().decode("latin-1")
    short = run_cli(config, "staff", "add", "sam", "--role", "desk", "--stdin", input="short\n")
    assert short.returncode == 1 and "at least 12 characters" in short.stderr
    bad_role = run_cli(config, "staff", "add", "sam", "--role", "root", "--stdin", input="x\n")
    assert bad_role.returncode == 2


def test_cli_staff_add_needs_the_section(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(base_config(tmp_path))
    made = run_cli(
        config, "staff", "add", "dana", "--role", "desk", "--stdin", input="river desk pass 42\n"
    )
    assert made.returncode == 1 and "no [staff] section" in made.stderr
