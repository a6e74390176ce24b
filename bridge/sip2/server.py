"""The asyncio adapter: TCP (and optional TLS) listeners, one read loop per connection.

Thin on purpose: bytes go to the `Framer`, frames to the `Session` (pure protocol rules), and
requests the session cannot answer alone to the `Handler` (the core). This module owns only what
needs a socket or a timer: per-source connection caps, the login and idle timeouts, closing on a
TLS ClientHello or an oversized line, and writing answers in request order (pipelined requests
are read, answered and written one after another).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import structlog

from bridge import tls
from bridge.services import Services
from bridge.settings import parse_listen
from bridge.sip2.circulation import Circulation, CirculationProvider, RefuseCirculation
from bridge.sip2.codec import Framer, FrameTooLong, ProtocolError, TlsOnPlainPort
from bridge.sip2.handler import Handler
from bridge.sip2.session import Account, Accounts, Close, Dispatch, Reply, Session, SessionOptions
from bridge.sip2.settings import Sip2Settings

log = structlog.get_logger("bridge.sip2")

READ_SIZE = 65536
WRITE_HIGH_WATER = 256 * 1024
TLS_HANDSHAKE_TIMEOUT = 10.0
#: Session events worth an audit line (logins, and what could be probing).
AUDITED = frozenset({"login", "login_failed", "bad_checksum"})


def circulation_for(services: Services) -> Circulation:
    """The circulation seam: a store that offers circulation (e.g. SIP2 to an upstream ILS)
    serves it; otherwise every circulation request gets a well-formed refusal."""
    store = services.authenticator.store
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
        self._per_source: Counter[str] = Counter()
        self._connections: set[Connection] = set()

    async def open(self) -> None:
        for addr in self.settings.listen:
            host, port = parse_listen(addr)
            server = await asyncio.start_server(self._accept, host, port, limit=READ_SIZE)
            self._servers.append(server)
            self.addresses.extend(_bound(server))
        if self.settings.tls_listen:
            config = self.services.config
            assert self.settings.tls_cert is not None and self.settings.tls_key is not None
            context = tls.server_context(
                Path(config.path(self.settings.tls_cert)), Path(config.path(self.settings.tls_key))
            )
            for addr in self.settings.tls_listen:
                host, port = parse_listen(addr)
                server = await asyncio.start_server(
                    self._accept,
                    host,
                    port,
                    ssl=context,
                    ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT,
                    limit=READ_SIZE,
                )
                self._servers.append(server)
                self.tls_addresses.extend(_bound(server))
        self.addresses.extend(self.tls_addresses)
        if not self.accounts:
            log.warning("sip2_no_accounts", detail="no [[sip2.accounts]]: every login fails")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if self._per_source[source] >= self.settings.max_connections_per_source:
            log.warning("sip2_connection_refused", source=source, reason="too many connections")
            writer.close()
            return
        self._per_source[source] += 1
        conn = Connection(self, reader, writer, source)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]

    async def aclose(self) -> None:
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn.close()
        for server in self._servers:
            await server.wait_closed()


def _bound(server: asyncio.Server) -> list[str]:
    out = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        out.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return out


class Connection:
    """One client: reads, frames, lets the session decide, asks the handler, writes."""

    __slots__ = (
        "_closed",
        "_loop",
        "_started",
        "_timer",
        "framer",
        "last",
        "listener",
        "reader",
        "session",
        "source",
        "writer",
    )

    def __init__(
        self,
        listener: Sip2Listener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        source: str,
    ) -> None:
        self.listener = listener
        self.reader = reader
        self.writer = writer
        self.source = source
        self.session = Session(listener.accounts, source, listener.options)
        self.framer = Framer(listener.settings.max_message_length)
        self._loop = asyncio.get_running_loop()
        self._started = self.last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    # -- timeouts ---------------------------------------------------------------------------
    def _deadline(self) -> float | None:
        """When this connection times out: the login deadline counts from connect; once
        logged in, the account's idle timeout counts from the last message."""
        account = self.session.account
        if account is None:
            limit = self.listener.settings.login_timeout
            return self._started + limit if limit else None
        idle = account.settings.idle_timeout
        return self.last + idle if idle else None

    def _arm(self) -> None:
        deadline = self._deadline()
        when = deadline if deadline is not None else self._loop.time() + 60.0
        self._timer = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        deadline = self._deadline()
        if deadline is not None and self._loop.time() >= deadline:
            phase = "login" if self.session.account is None else "idle"
            log.info("sip2_timeout", source=self.source, phase=phase)
            self.close()
            return
        self._arm()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- the loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        log.debug("sip2_connected", source=self.source)
        self._arm()
        try:
            await self._loop_messages()
        except (ConnectionError, OSError) as exc:
            log.info("sip2_connection_error", source=self.source, error=type(exc).__name__)
        finally:
            self.close()
            log.debug("sip2_disconnected", source=self.source)

    async def _loop_messages(self) -> None:
        reader = self.reader
        writer = self.writer
        framer = self.framer
        session = self.session
        handler = self.listener.handler
        transport = writer.transport
        while not self._closed:
            data = await reader.read(READ_SIZE)
            if not data:
                if framer.pending:
                    log.info("sip2_partial_message", source=self.source, pending=framer.pending)
                return
            self.last = self._loop.time()
            try:
                frames = framer.feed(data)
            except TlsOnPlainPort:
                log.warning(
                    "sip2_tls_on_plain_port",
                    source=self.source,
                    detail="a TLS ClientHello arrived on the plain-text SIP2 port; closing",
                )
                return
            except FrameTooLong:
                log.warning(
                    "sip2_message_too_long",
                    source=self.source,
                    limit=self.listener.settings.max_message_length,
                )
                return
            for frame in frames:
                action = session.receive(frame, framer.terminator)
                if type(action) is Dispatch:
                    request = action.message
                    try:
                        response = await handler.dispatch(request, session)
                    except ProtocolError:
                        log.info("sip2_unreadable_request", source=self.source, code=request.code)
                        writer.write(session.resend(framer.terminator))
                        continue
                    writer.write(session.answer(request, response))
                elif type(action) is Reply:
                    writer.write(action.data)
                    if action.event:
                        self._event(action.event, action.login)
                    if action.close:
                        log.info("sip2_login_attempts_exhausted", source=self.source)
                        await writer.drain()
                        return
                elif type(action) is Close:
                    log.info("sip2_closed", source=self.source, reason=action.reason)
                    return
            if transport.get_write_buffer_size() > WRITE_HIGH_WATER:
                await writer.drain()

    def _event(self, event: str, login: str) -> None:
        account = self.session.account
        fields = {"source": self.source, "client": login or (account.login if account else "")}
        if event in AUDITED:
            self.listener.services.audit.event(f"sip2_{event}", **fields)
        else:
            log.info(f"sip2_{event}", **fields)


async def start(
    settings: Sip2Settings, services: Services, *, circulation: Circulation | None = None
) -> Sip2Listener:
    """Bind every configured address (port 0 picks one) and start answering."""
    handler = Handler(settings, services, circulation or circulation_for(services), clock=time.time)
    listener = Sip2Listener(settings, services, handler)
    try:
        await listener.open()
    except BaseException:
        await listener.aclose()
        raise
    log.info("sip2_listening", addresses=listener.addresses)
    return listener
