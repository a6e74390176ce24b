"""Serve the staff desk on its own listener inside the daemon's event loop, like the portal
(same socket binding, uvicorn driving, TLS context; no access log: URLs carry card numbers).

Staff passwords are checked with a `PinHasher` of the desk's own (the same pepper and KDF
settings as the core's, a worker pool of its own), so a burst of staff sign-ins never queues
in front of patrons' PIN checks. The decision history starts listening to the audit here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn

from bridge.config import ConfigError
from bridge.core.pin import PinHasher
from bridge.core.throttle import Throttle
from bridge.portal.mail import Mailer, NoMailer, SmtpMailer
from bridge.portal.server import _address, serve_guarded
from bridge.portal.sessions import SessionStore
from bridge.portal.settings import PortalSettings
from bridge.portal.shared_sessions import SharedSessions, recording_sessions
from bridge.services import Services
from bridge.staff.accounts import AccountFile
from bridge.staff.history import DecisionHistory
from bridge.staff.settings import StaffSettings
from bridge.staff.state import Desk, reset_links
from bridge.staff.visit import cookie_name
from bridge.staff.web import create_app
from bridge.state.shared import SharedState, staff_guard
from bridge.tls import listener_context

log = structlog.get_logger("bridge.staff")


@dataclass(slots=True)
class StaffListener:
    name: str
    addresses: list[str]
    desk: Desk
    server: uvicorn.Server
    sock: socket.socket
    task: asyncio.Task[None]
    tls_context: ssl.SSLContext | None = None  # `[staff] tls_cert`; a reload loads it again

    async def aclose(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.server.shutdown(sockets=[self.sock])
        audit = self.desk.authenticator.audit
        if self.desk.history.tap in audit.taps:
            audit.taps.remove(self.desk.history.tap)
        await self.desk.aclose()
        self.desk.hasher.close()


def _mailer(services: Services) -> Mailer:
    smtp = services.config.smtp
    return NoMailer() if smtp is None else SmtpMailer(smtp, Path(services.config.base_dir))


def own_hasher(services: Services) -> PinHasher:
    from bridge.app import make_hasher

    return make_hasher(services.config)


async def build_desk(settings: StaffSettings, services: Services) -> Desk:
    config = services.config
    for key, message in settings.problems():
        raise ConfigError(f"{config.source}: staff.{key}: {message}")
    hasher = await asyncio.to_thread(own_hasher, services)  # its first hash is a KDF run
    history = DecisionHistory(
        config.path(settings.state_path),
        hasher.derived_key("staff-history"),
        keep_days=settings.history_days,
    )
    from bridge.app import throttle_rules

    rules = throttle_rules(config)
    staff_state = staff_guard(config, rules, services.authenticator.store) or SharedState(
        Throttle(rules)
    )
    desk = Desk(
        settings=settings,
        authenticator=services.authenticator,
        accounts=AccountFile(config.path(settings.state_path)),
        hasher=hasher,
        history=history,
        sessions=SessionStore(
            time.time,
            idle_seconds=settings.session_idle_minutes * 60.0,
            max_seconds=settings.session_max_hours * 3600.0,
            max_sessions=10_000,
        ),
        throttle=staff_state.guard,
        shared_state=staff_state,
        mailer=_mailer(services),
        sender=config.smtp.sender if config.smtp is not None else "",
        mail_enabled=config.smtp is not None,
        base_dir=Path(config.base_dir),
        fines_limit=config.client_policy(None).fines_limit,
        links=(
            reset_links(
                services.authenticator, config.portal.base_url, config.portal.reset_token_minutes
            )
            if config.portal is not None
            else None
        ),
    )
    services.audit.taps.append(history.tap)
    history.start()
    return desk


async def start(settings: StaffSettings, services: Services) -> StaffListener:
    config = services.config
    desk = await build_desk(settings, services)
    app = create_app(desk)
    sessions = await recording_sessions(desk.sessions, config, services.authenticator.store)
    if sessions is not None:  # several workers or hosts: sessions in the `[state]` backend
        desk.sessions = sessions
        desk.shared_sessions = sessions.shared
        app = SharedSessions(app, sessions, cookie_name(desk))
    tls_context = listener_context(config, settings.tls_cert, settings.tls_key)
    # The desk has no limit keys of its own: the PIN pages' (`[portal]`, or their defaults).
    server, sock, task = await serve_guarded(
        "staff",
        app,
        settings.listen,
        config.portal or PortalSettings(),
        services,
        tls_context,
        settings.trusted_proxies,
    )
    scheme = "https" if tls_context is not None else "http"
    log.info("staff_listening", address=_address(sock), scheme=scheme)
    return StaffListener("staff", [_address(sock)], desk, server, sock, task, tls_context)
