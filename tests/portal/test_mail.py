"""The SMTP client against a real aiosmtpd server: plain, STARTTLS with login, and failures."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bridge.portal.i18n import Translator, load_catalogs
from bridge.portal.mail import MailError, NoMailer, SmtpMailer, reset_message
from bridge.portal.settings import SmtpSettings
from tests.portal.support import SMTP_PASSWORD, SMTP_USER, SmtpServer, body_of, free_port


def message() -> object:
    t = Translator("es", load_catalogs()["es"])
    return reset_message(
        t,
        sender="pins@library.example.org",
        to="ana.rivera@example.org",
        name="Ana",
        library="Biblioteca Riverside",
        link="https://pins.example.org/reset?token=abc",
        minutes=30,
    )


def test_plain_delivery(tmp_path: Path) -> None:
    with SmtpServer() as server:
        mailer = SmtpMailer(SmtpSettings(port=server.port), tmp_path)
        asyncio.run(mailer.send(message()))  # type: ignore[arg-type]
        (got,) = server.inbox.wait(1)
    assert got["To"] == "ana.rivera@example.org"
    assert "elija un PIN nuevo" in got["Subject"]
    assert "https://pins.example.org/reset?token=abc" in body_of(got)
    assert got["Auto-Submitted"] == "auto-generated"


def test_starttls_and_login(tmp_path: Path) -> None:
    with SmtpServer(tls_dir=tmp_path) as server:
        settings = SmtpSettings(
            port=server.port,
            security="starttls",
            username=SMTP_USER,
            password=SMTP_PASSWORD,
            ca_file=str(server.cert),
        )
        asyncio.run(SmtpMailer(settings, tmp_path).send(message()))  # type: ignore[arg-type]
        server.inbox.wait(1)
        assert server.inbox.logins == [SMTP_USER]


@pytest.mark.parametrize(
    "change",
    [
        {"password": "wrong-password"},  # login refused
        {"ca_file": None},  # certificate not trusted
        {"security": "none"},  # the server requires STARTTLS before AUTH
    ],
)
def test_failures_raise_mail_error(tmp_path: Path, change: dict[str, object]) -> None:
    with SmtpServer(tls_dir=tmp_path) as server:
        fields: dict[str, object] = {
            "port": server.port,
            "security": "starttls",
            "username": SMTP_USER,
            "password": SMTP_PASSWORD,
            "ca_file": str(server.cert),
            **change,
        }
        mailer = SmtpMailer(SmtpSettings(**fields), tmp_path)  # type: ignore[arg-type]
        with pytest.raises(MailError) as caught:
            asyncio.run(mailer.send(message()))  # type: ignore[arg-type]
        assert SMTP_PASSWORD not in str(caught.value)
        assert not server.inbox.messages


def test_no_server_and_no_mailer(tmp_path: Path) -> None:
    mailer = SmtpMailer(SmtpSettings(port=free_port(), timeout=5), tmp_path)
    with pytest.raises(MailError, match="ConnectionRefusedError"):
        asyncio.run(mailer.send(message()))  # type: ignore[arg-type]
    with pytest.raises(MailError):
        asyncio.run(NoMailer().send(message()))  # type: ignore[arg-type]
