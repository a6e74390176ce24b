"""Serve the PIN pages inside the daemon's event loop with uvicorn.

We bind the socket ourselves (so port 0 works and the bound port is reported) and drive
uvicorn's `startup` / `main_loop` / `shutdown` directly rather than `serve()`, which would take
over SIGINT/SIGTERM from the daemon. Uvicorn's access log is off: request lines can carry a
reset token in the query string. HTTPS, when configured, uses the context from `bridge.tls`;
the TLS layer is started by the connection guard (`bridge.portal.guard`, uvicorn's h11 protocol
with the listener's gate and deadlines), not by uvicorn, so pending handshakes are capped too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

import structlog
import uvicorn
from starlette.types import ASGIApp

from bridge.admission import Gate
from bridge.config import ConfigError
from bridge.portal.guard import exempt_sources, guarded_protocol
from bridge.portal.mail import Mailer, NoMailer, SmtpMailer
from bridge.portal.settings import PortalSettings
from bridge.portal.shared_sessions import (
    RecordingSessions,
    Shared,
    SharedSessions,
    recording_sessions,
)
from bridge.portal.state import Portal, read_logo
from bridge.portal.visit import cookie_name
from bridge.portal.web import create_app
from bridge.services import Services
from bridge.settings import parse_listen
from bridge.tls import listener_context

log = structlog.get_logger("bridge.portal")


@dataclass(slots=True)
class PortalListener:
    name: str
    addresses: list[str]
    portal: Portal
    server: uvicorn.Server
    sock: socket.socket
    task: asyncio.Task[None]
    shared: Shared | None = None  # sessions shared by workers and hosts ([state])
    # HTTPS served directly: the context every new handshake uses (a reload loads a rotated
    # certificate into it, bridge.reload)
    tls_context: ssl.SSLContext | None = None

    async def aclose(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.server.shutdown(sockets=[self.sock])
        await self.portal.aclose()
        if self.shared is not None:
            await self.shared.aclose()


def bind(listen: str, *, reuse_port: bool = False) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # a worker of `[server] workers = N`
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _mailer(services: Services) -> Mailer:
    smtp = services.config.smtp
    if smtp is None:
        log.warning("portal_no_smtp", detail="no [smtp] section: reset emails cannot be sent")
        return NoMailer()
    return SmtpMailer(smtp, Path(services.config.base_dir))


async def start(settings: PortalSettings, services: Services) -> PortalListener:
    config = services.config
    for key, message in settings.problems():
        raise ConfigError(f"{config.source}: portal.{key}: {message}")
    try:
        logo = read_logo(config.path(settings.logo_file) if settings.logo_file else None)
    except OSError as exc:
        raise ConfigError(f"{config.source}: portal.logo_file: {exc.strerror}") from None
    portal = Portal.build(
        settings,
        services.authenticator,
        _mailer(services),
        sender=config.smtp.sender if config.smtp is not None else "",
        logo=logo,
        mail_enabled=config.smtp is not None,
    )
    shared = await share_sessions(portal, services)
    app = create_app(portal)
    if shared is not None:
        assert isinstance(portal.sessions, RecordingSessions)
        app = SharedSessions(app, portal.sessions, cookie_name(portal))
    tls_context = listener_context(config, settings.tls_cert, settings.tls_key)
    server, sock, task = await serve_guarded(
        "portal", app, settings.listen, settings, services, tls_context, settings.trusted_proxies
    )
    scheme = "https" if tls_context is not None else "http"
    log.info("portal_listening", address=_address(sock), scheme=scheme, base_url=settings.base_url)
    return PortalListener(
        "portal", [_address(sock)], portal, server, sock, task, shared, tls_context
    )


async def serve_guarded(
    name: str,
    app: ASGIApp,
    listen: str,
    limits: PortalSettings,
    services: Services,
    tls_context: ssl.SSLContext | None,
    trusted_proxies: list[str],
) -> tuple[uvicorn.Server, socket.socket, asyncio.Task[None]]:
    """Serve `app` on `listen` behind the connection guard (`bridge.portal.guard`): every web
    listener of the daemon (PIN pages, OpenID Connect/SAML, staff desk) shares its descriptor
    table with RADIUS, LDAP and SIP2, so none may hold half-sent requests without a deadline
    or take connections past its caps. `limits` gives the caps and deadlines (the `[portal]`
    keys; the other listeners use the portal's, or its defaults)."""
    gate = Gate(
        name,
        max_connections=limits.max_connections,
        max_per_source=limits.max_connections_per_source,
        max_handshakes=limits.max_tls_handshakes,
        fds=services.fds,
        refusals=services.refusals,
        exempt=exempt_sources(trusted_proxies) if trusted_proxies else None,
    )
    protocol = guarded_protocol(
        gate,
        services.refusals,
        request_timeout=limits.request_timeout,
        tls_context=tls_context,
        tls_handshake_timeout=limits.tls_handshake_timeout,
    )
    uv_config = uvicorn.Config(
        app,
        http=protocol,
        # The gate caps connections; this caps requests in progress (503 beyond it).
        limit_concurrency=limits.max_connections + 1,
        timeout_keep_alive=limits.keep_alive_timeout,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        lifespan="off",
        access_log=False,
        log_config=None,
        log_level="warning",
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies) or None,
        server_header=False,
        timeout_graceful_shutdown=10,  # a stalled client cannot hold up the daemon's stop
    )
    uv_config.load()
    sock = bind(listen, reuse_port=services.reuse_port)
    server = uvicorn.Server(uv_config)
    # What Server._serve does before startup(); lifespan is "off", so this is a no-op object.
    server.lifespan = uv_config.lifespan_class(uv_config)
    try:
        await server.startup(sockets=[sock])
    except BaseException:
        sock.close()
        raise
    task = asyncio.get_running_loop().create_task(server.main_loop(), name=name)
    return server, sock, task


async def share_sessions(
    portal: Portal, services: Services, shared: Shared | None = None
) -> Shared | None:
    """With shared state, sessions (and the CSRF key) live there: `bridge.portal.
    shared_sessions` (or in `shared`, e.g. the OIDC provider's single sign-on sessions). The
    portal's own store is swapped for a recording one."""
    old = portal.sessions
    sessions = await recording_sessions(old, services.config, services.authenticator.store, shared)
    if sessions is None or sessions.shared is None:
        return None
    shared = sessions.shared
    callbacks = portal.authenticator.on_invalidate
    if old.end_patron in callbacks:
        callbacks.remove(old.end_patron)
    callbacks.append(sessions.end_patron)
    portal.sessions = sessions
    return shared
