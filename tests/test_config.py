"""Config: strict keys and types, one line naming the file and the key, secrets from files and
the environment, masked by check-config and never echoed in an error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bridge.config import ConfigError, load, loads, masked
from tests.harness import ROOT, run_cli

SECRET = "s3cr3t-Value-91"  # a service password; must never appear in output or errors
STORE = '[store]\nplugin = "sqlite"\npath = "patrons.db"\n'

SIP2_ACCOUNT = """
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
{password}
"""


def write(tmp_path: Path, text: str, name: str = "bridge.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert SECRET not in message
    return message


def test_development_config_loads() -> None:
    config = load(ROOT / "conf" / "bridge.toml")
    assert config.store_plugin == "sqlite"
    assert config.pin.min_length == 4 and config.throttle.card_lock_after == 10
    assert config.path("x.db") == ROOT / "conf" / "x.db"


def test_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = load(write(tmp_path, STORE))
    assert config.security.kdf == "argon2id" and config.cache.ttl == 30
    assert config.path(config.security.pepper_file) == tmp_path / "var" / "pepper.key"
    assert config.path("/abs/file") == Path("/abs/file")
    policy = config.client_policy(None)
    assert not policy.allow_expired and policy.fines_limit is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (STORE + "[pin]\nmin_lenght = 4\n", "pin.min_lenght: unknown key"),
        (STORE + "[bogus]\nx = 1\n", "bogus: unknown key"),
        (
            STORE + "[throttle]\ncard_lock_after = 0\n",
            "throttle.card_lock_after: Expected `int` >= 1",
        ),
        (
            STORE + "[throttle]\nmax_pending_checks = 0\n",
            "throttle.max_pending_checks: Expected `int` >= 1",
        ),
        (
            STORE + "[throttle]\nmax_pending_per_source = 300\n",
            "throttle.max_pending_per_source: greater than throttle.max_pending_checks",
        ),
        (
            STORE + "[throttle]\nmax_active_checks = 257\n",
            "throttle.max_active_checks: greater than throttle.max_pending_checks",
        ),
        (
            STORE + "[throttle]\ncheck_wait_deadline = 0\n",
            "throttle.check_wait_deadline: Expected `float` > 0",
        ),
        (STORE + "[throttle]\nmax_active_checks = -1\n", "throttle.max_active_checks: Expected"),
        (STORE + '[pin]\nmin_length = "4"\n', "pin.min_length: Expected `int`, got `str`"),
        (STORE + '[pin]\nforbid_repeats = "false"\n', "pin.forbid_repeats: Expected `bool`"),
        (STORE + "[cache]\nttl = true\n", "cache.ttl: Expected `float`, got `bool`"),
        (STORE + '[audit]\nbarcode = "plain"\n', "audit.barcode: Invalid enum value"),
        (STORE + "[pin]\nmin_length = 6\n", "pin.min_length: greater than pin.max_length"),
        (STORE + '[pin]\nblocklist_file = "nope.txt"\n', "pin.blocklist_file: cannot read"),
        ('[security]\nkdf = "scrypt"\n', "store: required table is missing"),
        ('[store]\npath = "x.db"\n', "store.plugin: required key is missing"),
        (STORE + SIP2_ACCOUNT.format(password=""), "sip2.accounts[0].password: required key"),
        (
            STORE + SIP2_ACCOUNT.format(password="password = 5"),
            "sip2.accounts[0].password: Expected `str`, got `int`",
        ),
        (STORE + '[sip2]\nlisten = ["localhost"]\n', "sip2.listen[0]: bad listen address"),
        ("[store\nplugin = 1\n", "(syntax): "),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"missing.toml: \(file\): cannot read"):
        load(missing)
    with pytest.raises(ConfigError, match=r"\(file\): cannot read"):
        load(tmp_path)  # a directory
    binary = write(tmp_path, "", "binary.toml")
    binary.write_bytes(b"\xff\xfe[store]\n")
    with pytest.raises(ConfigError, match=r"binary.toml: \(file\): not UTF-8"):
        load(binary)


def test_password_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "sip.pw").write_text(SECRET + "\n")
    config = load(
        write(tmp_path, STORE + SIP2_ACCOUNT.format(password='password_file = "secrets/sip.pw"'))
    )
    assert config.sip2 is not None and config.sip2.accounts[0].password == SECRET  # stripped

    monkeypatch.setenv("BRIDGE_TEST_SIP_PW", SECRET)
    config = load(
        write(tmp_path, STORE + SIP2_ACCOUNT.format(password='password_env = "BRIDGE_TEST_SIP_PW"'))
    )
    assert config.sip2 is not None and config.sip2.accounts[0].password == SECRET


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        ('password_file = "nope.pw"', "sip2.accounts[0].password_file: cannot read"),
        ('password_env = "BRIDGE_TEST_UNSET_VAR"', "password_env: variable BRIDGE_TEST_UNSET_VAR"),
        (
            f'password = "{SECRET}"\npassword_env = "HOME"',
            "give only one of password, password_env",
        ),
        ("password_file = 3", "password_file: expected a path string"),
    ],
)
def test_secret_reference_errors(tmp_path: Path, password: str, expected: str) -> None:
    os.environ.pop("BRIDGE_TEST_UNSET_VAR", None)
    assert expected in error_of(tmp_path, STORE + SIP2_ACCOUNT.format(password=password))


def test_secret_never_echoed_in_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config that holds a secret and has a mistake elsewhere: the error names the mistake."""
    monkeypatch.setenv("BRIDGE_TEST_SIP_PW", SECRET)
    for password in (f'password = "{SECRET}"', 'password_env = "BRIDGE_TEST_SIP_PW"'):
        text = STORE + SIP2_ACCOUNT.format(password=password) + "bogus = 1\n"
        assert "sip2.accounts[0].bogus: unknown key" in error_of(tmp_path, text)
    # A secret of the wrong shape is described, not quoted.
    text = STORE + '[[radius.clients]]\nname = "wifi"\nnetwork = "127.0.0.0/8"\n'
    text += f'secret = ["{SECRET}"]\n[radius]\nlisten = []\n'
    with pytest.raises(ConfigError) as info:
        loads(text, source="inline.toml")
    assert SECRET not in str(info.value)


def test_masked_hides_every_secret(tmp_path: Path) -> None:
    text = STORE + SIP2_ACCOUNT.format(password=f'password = "{SECRET}"')
    text += f"""
[radius]
listen = ["127.0.0.1:0"]
[[radius.clients]]
name = "wifi"
network = "127.0.0.0/8"
secret = "{SECRET}"
"""
    config = load(write(tmp_path, text))
    shown = masked(config)
    assert SECRET not in json.dumps(shown, default=str)
    assert shown["sip2"]["accounts"][0]["password"] == "***"
    assert shown["radius"]["clients"][0]["secret"] == "***"
    assert shown["sip2"]["accounts"][0]["login"] == "selfcheck"


def test_check_config_cli(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        STORE + SIP2_ACCOUNT.format(password=f'password = "{SECRET}"'),
    )
    result = run_cli(path, "check-config")
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    shown = json.loads(result.stdout)
    assert shown["sip2"]["accounts"][0]["password"] == "***"
    assert shown["store"]["plugin"] == "sqlite"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (STORE + "[pin]\nmin_lenght = 4\n", "pin.min_lenght"),
        (STORE + "pathh = 'x'\n", "store.pathh"),
        (STORE + 'readers = "four"\n', "store.readers"),
        ('[store]\nplugin = "no-such-store"\n', "store.plugin"),
        (STORE + SIP2_ACCOUNT.format(password=f'password = "{SECRET}"') + "extra = 1\n", "extra"),
    ],
)
def test_check_config_exit_2_one_line(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    result = run_cli(path, "check-config")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0] and key in lines[0]
    assert SECRET not in result.stdout + result.stderr


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, STORE + "[pin]\nmin_lenght = 4\n")
    result = run_cli(path, "serve")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "pin.min_lenght" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "absent.toml", "check-config")
    assert result.returncode == 2 and "absent.toml" in result.stderr


def test_binary_password_file_is_one_line_without_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "sip.pw").write_bytes(b"\xe9" + SECRET.encode())
    message = error_of(tmp_path, STORE + SIP2_ACCOUNT.format(password='password_file = "sip.pw"'))
    assert "password_file" in message and "not UTF-8" in message and "0xe9" not in message
