"""The mail `patron-bridge pin set` sends after a staff PIN reset: the same "your PIN was changed"
notice the staff desk sends (`bridge.staff.state.pin_changed_notice`), so a reset made from a
terminal is as visible to the card holder as one made at the desk.

Sent before the command returns (a command has no page to answer first), through the configured
`[smtp]` server; what happened is one line for the person at the terminal, with the address
masked as on the desk's card page. Nothing here prints a PIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from bridge.config import Config
from bridge.core.auth import Authenticator
from bridge.portal.i18n import Translator
from bridge.portal.mail import MailError, SmtpMailer
from bridge.portal.settings import Language
from bridge.staff.standing import mask_email
from bridge.staff.state import catalogs, pin_changed_notice

log = structlog.get_logger("bridge.cli")


@dataclass(frozen=True, slots=True)
class Notice:
    line: str
    sent: bool  # False also when there was nothing to send (no [smtp], no address)
    failed: bool = False


def _language_and_library(config: Config) -> tuple[Language, str]:
    """The desk's language and library name when it is configured, else the PIN pages'."""
    for section in (config.staff, config.portal):
        if section is not None:
            return section.default_language, section.library_name
    return "en", "Public Library"


async def mail_pin_changed(config: Config, authenticator: Authenticator, barcode: str) -> Notice:
    """Mail the card holder that staff set a new PIN; the line says what became of it."""
    if config.smtp is None:
        return Notice("no notice mailed: no [smtp] section in the config", sent=False)
    patron = await authenticator.lookup(barcode)
    language, library = _language_and_library(config)
    t = Translator(language, catalogs()[language])
    sender = config.smtp.sender
    message = None
    if patron is not None:
        message = pin_changed_notice(patron, t, sender=sender, library=library)
    if patron is None or message is None:
        return Notice("no notice mailed: the card has no email address", sent=False)
    try:
        await SmtpMailer(config.smtp, Path(config.base_dir)).send(message)
    except MailError as exc:
        log.error("cli_mail_failed", kind="pin_reset_notice", error=str(exc))
        return Notice(f"the notice could not be mailed: {exc}", sent=False, failed=True)
    log.info("cli_mail_sent", kind="pin_reset_notice")
    return Notice(f"notice mailed to {mask_email(patron.email)}", sent=True)
