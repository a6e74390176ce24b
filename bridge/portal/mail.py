"""The emails the pages send, and the SMTP client that sends them off the event loop.

`smtplib` blocks, so each message is sent in a worker thread (`asyncio.to_thread`); the page
that asked has already answered by then, so a slow or absent mail server changes neither the
text nor the timing of any page. STARTTLS or implicit TLS and a login are used when configured;
certificates are checked through `bridge.tls`. Errors are logged by type only: SMTP replies can
echo addresses, and the message body holds a reset link.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Protocol

from bridge.portal.i18n import Translator
from bridge.portal.settings import SmtpSettings
from bridge.tls import client_context


class MailError(Exception):
    """The message could not be handed to the mail server."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class NoMailer:
    """No `[smtp]` section: nothing can be sent (the pages then point to the branch desk)."""

    async def send(self, message: EmailMessage) -> None:
        raise MailError("no [smtp] section configured")


class SmtpMailer:
    def __init__(self, settings: SmtpSettings, base_dir: Path) -> None:
        self.settings = settings
        ca = settings.ca_file
        self._ca = None if ca is None else (Path(ca) if Path(ca).is_absolute() else base_dir / ca)

    async def send(self, message: EmailMessage) -> None:
        await asyncio.to_thread(self._send_sync, message)

    def _send_sync(self, message: EmailMessage) -> None:
        s = self.settings
        try:
            if s.security == "tls":
                context = client_context(self._ca, verify=s.verify)
                with smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=context) as smtp:
                    self._deliver(smtp, message)
            else:
                with smtplib.SMTP(s.host, s.port, timeout=s.timeout) as smtp:
                    if s.security == "starttls":
                        smtp.starttls(context=client_context(self._ca, verify=s.verify))
                        smtp.ehlo()
                    self._deliver(smtp, message)
        except (smtplib.SMTPException, OSError) as exc:
            raise MailError(type(exc).__name__) from None

    def _deliver(self, smtp: smtplib.SMTP, message: EmailMessage) -> None:
        s = self.settings
        if s.username is not None and s.password is not None:
            smtp.login(s.username, s.password)
        smtp.send_message(message)


def _message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body)
    return message


def reset_message(
    t: Translator, *, sender: str, to: str, name: str, library: str, link: str, minutes: int
) -> EmailMessage:
    body = t("mail.reset.body", name=name, library=library, link=link, minutes=minutes)
    return _message(sender, to, t("mail.reset.subject", library=library), body)


def changed_message(
    t: Translator, *, sender: str, to: str, name: str, library: str
) -> EmailMessage:
    body = t("mail.changed.body", name=name, library=library)
    return _message(sender, to, t("mail.changed.subject", library=library), body)
