"""`patron-bridge pin set` mails the card holder the notice the staff desk sends, through a real
SMTP server (aiosmtpd with STARTTLS and a login); says so when there is no [smtp], no address,
or the server cannot be reached; never puts the PIN in the mail or on the terminal."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEMO, base_config, run_cli
from tests.pins import NEW_PIN, OTHER_PIN
from tests.portal.support import SMTP_PASSWORD, SMTP_USER, SmtpServer, body_of, free_port


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tls_dir=tmp_path) as server:
        yield server


def smtp_section(port: int, cert: Path | None) -> str:
    ca = f'ca_file = "{cert}"\n' if cert is not None else ""
    return f"""
[smtp]
host = "127.0.0.1"
port = {port}
security = "starttls"
username = "{SMTP_USER}"
password_file = "smtp-password"
sender = "pins@library.example.org"
timeout = 5
{ca}"""


def configured(tmp_path: Path, extra: str) -> Path:
    (tmp_path / "smtp-password").write_text(SMTP_PASSWORD + "\n")
    config = tmp_path / "bridge.toml"
    config.write_text(base_config(tmp_path) + extra)
    return config


def test_pin_set_mails_the_desks_notice(tmp_path: Path, smtp: SmtpServer) -> None:
    desk = '\n[staff]\nlisten = "127.0.0.1:0"\nlibrary_name = "Riverside Public Library"\n'
    config = configured(tmp_path, smtp_section(smtp.port, smtp.cert) + desk)
    card = DEMO["active"]
    result = run_cli(config, "pin", "set", card, "--stdin", "--staff", "dana", input=NEW_PIN + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"PIN set for {card}",
        "notice mailed to a•••@example.org",
    ]
    (notice,) = smtp.inbox.wait(1)
    assert smtp.inbox.logins == [SMTP_USER]  # STARTTLS and the login, as the desk does
    assert notice["To"] == "ana.rivera@example.org"
    assert notice["From"] == "pins@library.example.org"
    assert notice["Subject"] == "Riverside Public Library: your PIN was changed"
    body = body_of(notice)
    assert "was just changed" in body and "Hello Ana" in body
    assert NEW_PIN not in body and NEW_PIN not in result.stdout + result.stderr


def test_no_smtp_no_address_and_a_dead_server_are_said(tmp_path: Path) -> None:
    config = configured(tmp_path, "")
    card = DEMO["fines"]
    plain = run_cli(config, "pin", "set", card, "--stdin", input=NEW_PIN + "\n")
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.splitlines()[-1] == "no notice mailed: no [smtp] section in the config"

    # A server that is not there: the PIN is set, the line says the notice was not mailed.
    config.write_text(base_config(tmp_path) + smtp_section(free_port(), None))
    dead = run_cli(config, "pin", "set", card, "--stdin", input=OTHER_PIN + "\n")
    assert dead.returncode == 1
    assert dead.stdout.splitlines() == [f"PIN set for {card}"]
    assert dead.stderr.strip().splitlines()[-1] == (
        "patron-bridge: PIN set, but the notice could not be mailed: ConnectionRefusedError"
    )


def test_a_card_without_an_address(tmp_path: Path, smtp: SmtpServer) -> None:
    config = configured(tmp_path, smtp_section(smtp.port, smtp.cert))
    card = "21234000000099"
    added = run_cli(
        config, "patron", "add", card, "--name", "Nobody, No", "--pin-stdin", input=OTHER_PIN + "\n"
    )
    assert added.returncode == 0, added.stderr
    result = run_cli(config, "pin", "set", card, "--stdin", input=NEW_PIN + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no notice mailed: the card has no email address"
    assert smtp.inbox.messages == []
