"""Everything the desk pages share: settings, the core, staff accounts and sessions, the sign-in
throttle, the decision history, mail and templates. One `Desk` per listener.

Staff sign-in uses the core's `Throttle` class but an instance of its own, keyed by staff
account name: a guessed staff password never counts against a patron's card, and a patron's
lock never locks out a staff member. Messages are the portal's catalogue with the desk's own
keys over it, so PIN-policy reasons and mail read the same on both.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import structlog

from bridge.core.auth import Authenticator
from bridge.core.patron import Patron
from bridge.core.pin import PinHasher
from bridge.core.reset import ResetTokens
from bridge.core.store import Capability
from bridge.core.throttle import GuessGuard
from bridge.portal.i18n import Translator, load_catalogs
from bridge.portal.mail import Mailer, MailError, changed_message, reset_message
from bridge.portal.sessions import SessionStore
from bridge.portal.settings import LANGUAGES, Language
from bridge.staff.accounts import AccountFile
from bridge.staff.history import DecisionHistory
from bridge.staff.settings import StaffSettings
from bridge.staff.totp import TotpChecker

log = structlog.get_logger("bridge.staff")


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bridge.staff", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def catalogs() -> dict[Language, dict[str, str]]:
    portal, own = load_catalogs("bridge.portal"), load_catalogs("bridge.staff")
    return {lang: {**portal[lang], **own[lang]} for lang in LANGUAGES}


def pin_changed_notice(
    patron: Patron, t: Translator, *, sender: str, library: str
) -> EmailMessage | None:
    """The "your PIN was changed" mail after a staff reset, at the desk or with `patron-bridge
    pin set` (so a reset the card holder did not ask for is seen by them); None when the card
    has no address."""
    if not patron.email:
        return None
    name = patron.given_name or patron.name
    return changed_message(t, sender=sender, to=patron.email, name=name, library=library)


@dataclass(slots=True)
class ResetLinks:
    """What "resend a reset link" needs: the portal's token store and its public URL."""

    tokens: ResetTokens
    base_url: str
    minutes: int


@dataclass(slots=True)
class Desk:
    settings: StaffSettings
    authenticator: Authenticator
    accounts: AccountFile
    hasher: PinHasher
    history: DecisionHistory
    sessions: SessionStore
    # Staff sign-in limits, keyed `staff <name>`: a `Throttle` of the desk's own, or a guard on
    # the shared `[state]` backend (`bridge.state.shared.staff_guard`), so every worker and host
    # spends one budget.
    throttle: GuessGuard
    mailer: Mailer
    sender: str
    mail_enabled: bool
    fines_limit: Decimal | None
    links: ResetLinks | None = None
    shared_state: Any = None  # what to close with the desk (a SharedState), if anything
    shared_sessions: Any = None  # the `[state]` session store with several workers or hosts
    totp: TotpChecker = field(default_factory=TotpChecker)
    base_dir: Path = Path()  # where the config's relative paths (ldap.ca_file) start
    clock: Callable[[], float] = time.time
    env: jinja2.Environment = field(default_factory=templates)
    catalogs: dict[Language, dict[str, str]] = field(default_factory=catalogs)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def can_change_pin(self) -> bool:
        return Capability.CHANGE_PIN in self.authenticator.store.capabilities

    @property
    def can_send_links(self) -> bool:
        return self.mail_enabled and self.links is not None and self.links.tokens.available

    def translator(self, lang: Language) -> Translator:
        return Translator(lang, self.catalogs[lang])

    def is_minor(self, patron: Patron) -> bool:
        return self.settings.is_minor(patron.category)

    # -- background work (mail goes out after the page has answered) ------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify_changed(self, patron: Patron, t: Translator) -> None:
        message = pin_changed_notice(
            patron, t, sender=self.sender, library=self.settings.library_name
        )
        if self.mail_enabled and message is not None:
            self.spawn(self._send(message, "staff_pin_reset_notice"))

    async def send_link(self, patron: Patron, t: Translator, source: str) -> bool:
        """Issue a reset token for this card and mail the link; False when none can be sent."""
        links = self.links
        if links is None or not self.mail_enabled:
            return False
        issued = await links.tokens.issue(patron.barcode, source=source)
        if issued is None:
            return False
        link = links.base_url.rstrip("/") + "/reset?" + urlencode({"token": issued.token})
        message = reset_message(
            t,
            sender=self.sender,
            to=issued.email,
            name=issued.patron.given_name or issued.patron.name,
            library=self.settings.library_name,
            link=link,
            minutes=links.minutes,
        )
        self.spawn(self._send(message, "staff_reset_link"))
        return True

    async def _send(self, message: Any, kind: str) -> None:
        try:
            await self.mailer.send(message)
        except MailError as exc:
            log.error("staff_mail_failed", kind=kind, error=str(exc))
            return
        log.info("staff_mail_sent", kind=kind)

    async def drain(self) -> None:
        """Wait for the mail started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.history.aclose()
        if self.shared_state is not None:
            await self.shared_state.aclose()
        if self.shared_sessions is not None:
            await self.shared_sessions.aclose()


def reset_links(authenticator: Authenticator, base_url: str, minutes: int) -> ResetLinks:
    return ResetLinks(
        ResetTokens(authenticator, ttl=dt.timedelta(minutes=minutes)), base_url, minutes
    )
