"""The asyncio adapter: TCP (and optional TLS) listeners and the connections they accept.

Thin on purpose: bytes go to the `Framer`, frames to the `Session` (pure protocol rules), and
requests the session cannot answer alone to the `Handler` (the core); `connection.Connection`
does the per-socket work (timeouts, closing on a TLS ClientHello or an oversized line, answers
in request order). This module binds the listeners, caps connections per source address, picks
the circulation implementation and closes everything on shutdown.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

import structlog

from bridge import tls
from bridge.admission import Gate
from bridge.config import ConfigError
from bridge.services import Services
from bridge.settings import parse_listen
from bridge.sip2.circulation import Circulation, CirculationProvider, RefuseCirculation
from bridge.sip2.connection import Connection
from bridge.sip2.deadlines import Deadlines
from bridge.sip2.handler import Handler
from bridge.sip2.session import Account, Accounts, SessionOptions
from bridge.sip2.settings import Sip2Settings
from bridge.sip2.upstream import UpstreamMisconfigured, circulation_for_upstream

log = structlog.get_logger("bridge.sip2")


def circulation_for(services: Services, upstream: str = "") -> Circulation:
    """The circulation seam: `[sip2] upstream` forwards to the ILS behind the store
    (`bridge.sip2.upstream`); else a store that offers circulation serves it; otherwise every
    circulation request gets a well-formed refusal."""
    store = services.authenticator.store
    if upstream:
        try:
            return circulation_for_upstream(upstream, services.config.store_plugin, store)
        except UpstreamMisconfigured as exc:
            raise ConfigError(f"{services.config.source}: {exc}") from None
    if isinstance(store, CirculationProvider):
        return store.sip2_circulation()
    return RefuseCirculation()


class Sip2Listener:
    """The running SIP2 front end (the `Listener` the app closes on shutdown)."""

    name = "sip2"

    def __init__(self, settings: Sip2Settings, services: Services, handler: Handler) -> None:
        self.settings = settings
        self.services = services
        self.handler = handler
        policy = services.config.client_policy
        self.accounts = Accounts(
            [Account.from_settings(a, policy(a.policy)) for a in settings.accounts]
        )
        self.options = SessionOptions(settings.sc_status_before_login, settings.login_attempts)
        self.addresses: list[str] = []
        self.tls_addresses: list[str] = []
        self._servers: list[asyncio.Server] = []
        self._connections: set[Connection] = set()
        self.deadlines = Deadlines()  # every connection's login/idle/message deadline
        self.tls_context: ssl.SSLContext | None = None
        self.refusals = services.refusals
        self.gate = Gate(
            "sip2",
            max_connections=settings.max_connections,
            max_per_source=settings.max_connections_per_source,
            max_handshakes=settings.max_tls_handshakes,
            fds=services.fds,
            refusals=services.refusals,
        )

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for addr in self.settings.listen:
            host, port = parse_listen(addr)
            server = await loop.create_server(
                self._protocol, host, port, reuse_port=self.services.reuse_port or None
            )
            self._servers.append(server)
            self.addresses.extend(_bound(server))
        if self.settings.tls_listen:
            config = self.services.config
            assert self.settings.tls_cert is not None and self.settings.tls_key is not None
            self.tls_context = tls.server_context(
                Path(config.path(self.settings.tls_cert)), Path(config.path(self.settings.tls_key))
            )
            for addr in self.settings.tls_listen:
                host, port = parse_listen(addr)
                server = await loop.create_server(
                    self._tls_protocol, host, port, reuse_port=self.services.reuse_port or None
                )
                self._servers.append(server)
                self.tls_addresses.extend(_bound(server))
        self.addresses.extend(self.tls_addresses)
        if not self.accounts:
            log.warning("sip2_no_accounts", detail="no [[sip2.accounts]]: every login fails")

    def _protocol(self) -> Connection:
        return Connection(self)

    def _tls_protocol(self) -> Connection:
        return Connection(self, tls=True)

    def admit(self, conn: Connection, fd: int = -1) -> bool:
        """Count a new connection (its descriptor number `fd`) against the gate's caps; False
        when it must be closed at once (the gate logged why)."""
        if not self.gate.admit(conn, fd):
            return False
        self._connections.add(conn)
        return True

    def release(self, conn: Connection) -> None:
        self._connections.discard(conn)
        self.gate.release(conn)

    def refused(self, kind: str, source: str, **fields: Any) -> None:
        """A connection cut for a reason worth an operator's eye, rate-limited per source."""
        self.refusals.refused("sip2", kind, source, **fields)

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [c.task for c in self._connections if c.task is not None]
        for conn in list(self._connections):
            conn.close()
        for task in tasks:
            if not task.done():
                task.cancel()  # e.g. waiting on a slow store
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()
        self.deadlines.close()


def _bound(server: asyncio.Server) -> list[str]:
    out = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out


async def start(
    settings: Sip2Settings, services: Services, *, circulation: Circulation | None = None
) -> Sip2Listener:
    """Bind every configured address (port 0 picks one) and start answering."""
    circulation = circulation or circulation_for(services, settings.upstream)
    handler = Handler(settings, services, circulation, clock=time.time)
    listener = Sip2Listener(settings, services, handler)
    try:
        await listener.open()
    except BaseException:
        await listener.aclose()
        raise
    log.info("sip2_listening", addresses=listener.addresses)
    return listener
