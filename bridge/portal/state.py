"""Everything the pages share: settings, the core, sessions, limits, messages, mail, templates.

One `Portal` per listener. It registers `sessions.end_patron` with the authenticator's
`on_invalidate`, so a PIN change, reset, block or lock anywhere (any protocol, the CLI through
the control socket) ends that patron's sessions here. Work that must not shape a response (the
forgot-PIN lookup and its email) runs as tracked background tasks, awaited on close.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import mimetypes
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import jinja2
import structlog

from bridge.core.auth import Authenticator
from bridge.core.patron import ClientPolicy
from bridge.core.reset import ResetTokens
from bridge.core.store import Capability, StoreUnavailable
from bridge.portal.i18n import Translator, load_catalogs
from bridge.portal.limits import WindowLimiter
from bridge.portal.mail import Mailer, MailError, changed_message
from bridge.portal.sessions import SessionStore
from bridge.portal.settings import Language, PortalSettings

log = structlog.get_logger("bridge.portal")


@dataclass(frozen=True, slots=True)
class Logo:
    data: bytes
    media_type: str


def read_logo(path: Path | None) -> Logo | None:
    if path is None:
        return None
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Logo(path.read_bytes(), media_type)


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("bridge.portal", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(slots=True)
class Portal:
    settings: PortalSettings
    authenticator: Authenticator
    reset: ResetTokens
    mailer: Mailer
    sender: str
    policy: ClientPolicy
    sessions: SessionStore
    per_card: WindowLimiter
    per_source: WindowLimiter
    bad_links: WindowLimiter
    per_email: WindowLimiter
    logo: Logo | None = None
    mail_enabled: bool = True  # False without an [smtp] section: no reset emails at all
    cookie: str = "session"  # the session cookie's name (`__Host-` prefixed over HTTPS)
    clock: Callable[[], float] = time.time
    env: jinja2.Environment = field(default_factory=templates)
    catalogs: dict[Language, dict[str, str]] = field(default_factory=load_catalogs)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def build(
        cls,
        settings: PortalSettings,
        authenticator: Authenticator,
        mailer: Mailer,
        *,
        sender: str,
        logo: Logo | None = None,
        mail_enabled: bool = True,
        clock: Callable[[], float] = time.time,
        token_clock: Callable[[], dt.datetime] | None = None,
    ) -> Portal:
        window = settings.reset_window_minutes * 60.0
        reset = ResetTokens(
            authenticator,
            ttl=dt.timedelta(minutes=settings.reset_token_minutes),
            **({"clock": token_clock} if token_clock is not None else {}),
        )
        portal = cls(
            settings=settings,
            authenticator=authenticator,
            reset=reset,
            mailer=mailer,
            sender=sender,
            policy=settings.policy.client_policy(),
            sessions=SessionStore(
                clock,
                idle_seconds=settings.session_idle_minutes * 60.0,
                max_seconds=settings.session_max_hours * 3600.0,
                max_sessions=settings.max_sessions,
            ),
            per_card=WindowLimiter(settings.reset_requests_per_card, window),
            per_source=WindowLimiter(settings.reset_requests_per_source, window),
            bad_links=WindowLimiter(settings.bad_links_per_source, window),
            per_email=WindowLimiter(settings.reset_requests_per_email, window),
            logo=logo,
            mail_enabled=mail_enabled,
            clock=clock,
        )
        authenticator.on_invalidate.append(portal.sessions.end_patron)
        return portal

    # -- what the store can do --------------------------------------------------------------
    @property
    def can_change_pin(self) -> bool:
        return Capability.CHANGE_PIN in self.authenticator.store.capabilities

    @property
    def can_reset(self) -> bool:
        return self.mail_enabled and self.reset.available

    def translator(self, lang: Language) -> Translator:
        return Translator(lang, self.catalogs[lang])

    # -- background work --------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify_changed(self, barcode: str, t: Translator, kind: str) -> None:
        """Mail the patron that their PIN changed (someone else may have done it), after the
        page has answered."""
        if self.mail_enabled:
            self.spawn(self._notify_changed(barcode, t, kind))

    async def _notify_changed(self, barcode: str, t: Translator, kind: str) -> None:
        try:
            patron = await self.authenticator.lookup(barcode)
        except StoreUnavailable:
            return
        if patron is None or not patron.email:
            return
        message = changed_message(
            t,
            sender=self.sender,
            to=patron.email,
            name=patron.given_name or patron.name,
            library=self.settings.library_name,
        )
        await self.send_mail(message, kind)

    async def send_mail(self, message: EmailMessage, kind: str) -> None:
        try:
            await self.mailer.send(message)
        except MailError as exc:
            log.error("portal_mail_failed", kind=kind, error=str(exc))
            return
        log.info("portal_mail_sent", kind=kind)

    async def drain(self) -> None:
        """Wait for the background work started so far (and what it starts)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Finish background work and stop listening for invalidations."""
        await self.drain()
        if self.sessions.end_patron in self.authenticator.on_invalidate:
            self.authenticator.on_invalidate.remove(self.sessions.end_patron)
