"""asyncio adapter: LDAP and LDAPS listeners, connections, StartTLS, limits.

Thin on purpose: framing and decoding are `ber`/`messages`, the answers are `Session`'s. This
module owns sockets, TLS, back-pressure and the limits that protect the process (connection
count, PDU size, queued requests per connection, idle time).

Requests on one connection are answered in order. A bind the session can answer at once (a
cached PIN, a service account: `Session.handle_now`) costs no coroutine; anything else is run
inline (`eager.run`) until it first waits, so only work that waits (a KDF, a store query)
becomes a task, and the connection's later requests queue behind it.
A malformed PDU gets a Notice of Disconnection (RFC 4511 §4.4.1) and the connection closes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

import structlog

from bridge import eager
from bridge.config import Config, ConfigError
from bridge.ldap import answers as rc
from bridge.ldap import messages as m
from bridge.ldap.ber import ProtocolError, frame_length
from bridge.ldap.directory import Directory
from bridge.ldap.session import Reply, Session, Shared
from bridge.ldap.settings import LdapSettings
from bridge.services import Services
from bridge.settings import is_loopback, parse_listen
from bridge.tls import generate_self_signed, server_context

log = structlog.get_logger("bridge.ldap")


class Connection(asyncio.Protocol):
    def __init__(self, listener: LdapListener, *, tls: bool, require_tls: bool) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.tls = tls
        self.require_tls = require_tls
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.buffer = bytearray()
        self.queue: deque[m.Message] = deque()
        self.busy = False  # a request is running as a task (or TLS is starting)
        self.paused = False  # the peer is not reading; stop producing
        self.closed = False
        self.task: asyncio.Future[Reply] | None = None
        self.last_activity = 0.0
        self.idle_handle: asyncio.TimerHandle | None = None

    # -- transport callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        lst = self.listener
        peer = transport.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) else "local"
        if len(lst.connections) >= lst.settings.max_connections:
            transport.write(m.notice_of_disconnection(rc.BUSY, "too many connections"))
            transport.close()
            self.closed = True
            return
        lst.connections.add(self)
        self.session = Session(lst.shared, source, tls=self.tls, require_tls=self.require_tls)
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self.idle_handle = loop.call_later(lst.settings.idle_timeout, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connections.discard(self)
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.queue.clear()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last_activity = self.loop.time()
        buffer = self.buffer
        settings = self.listener.settings
        try:
            if not buffer and frame_length(data, settings.max_pdu) == len(data):
                # The usual read: exactly one whole PDU, decoded without buffering it.
                self._take(m.decode(data), settings.max_pending)
                self._pump()
                return
            buffer += data
            while buffer:
                size = frame_length(buffer, settings.max_pdu)
                if size is None:
                    break
                pdu = bytes(buffer[:size])
                del buffer[:size]
                if not self._take(m.decode(pdu), settings.max_pending):
                    return
        except ProtocolError as exc:
            log.info("ldap_protocol_error", error=str(exc), source=self._source())
            self._disconnect(rc.PROTOCOL_ERROR, "malformed PDU")
            return
        self._pump()

    def _take(self, msg: m.Message, max_pending: int) -> bool:
        """Queue a decoded request (an Abandon acts at once); False when the connection was
        dropped for queueing too many."""
        if isinstance(msg.op, m.AbandonRequest):
            self._abandon(msg.op.target)
            return True
        self.queue.append(msg)
        if len(self.queue) > max_pending:
            self._disconnect(rc.BUSY, "too many outstanding requests")
            return False
        return True

    # -- request processing -----------------------------------------------------------------
    def _pump(self) -> None:
        session = self.session
        while self.queue and not self.busy and not self.paused and not self.closed:
            assert session is not None
            msg = self.queue.popleft()
            try:
                now = session.handle_now(msg)
                outcome = eager.run(session.handle(msg)) if now is None else now
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the listener
                self._crashed(exc)
                return
            if isinstance(outcome, eager.Pending):
                self.busy = True
                self.task = outcome.task
                outcome.task.add_done_callback(self._task_done)
                return
            self._send(outcome)

    def _task_done(self, task: asyncio.Future[Reply]) -> None:
        self.busy = False
        self.task = None
        if task.cancelled() or self.closed:
            return
        exc = task.exception()
        if exc is not None:
            self._crashed(exc)
            return
        self._send(task.result())
        self._pump()

    def _send(self, reply: Reply) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        if reply.pdus:
            transport.write(b"".join(reply.pdus) if len(reply.pdus) > 1 else reply.pdus[0])
        if reply.after == "close":
            self.closed = True
            transport.close()
        elif reply.after == "starttls":
            self._start_tls()

    def _start_tls(self) -> None:
        """The StartTLS response is queued in plain text; no byte of the handshake may be read
        before the TLS layer is in place, so reading pauses now, synchronously."""
        transport = self.transport
        assert transport is not None
        if self.buffer or self.queue:
            self._disconnect(rc.PROTOCOL_ERROR, "data after StartTLS")
            return
        transport.pause_reading()
        self.busy = True
        ctx = self.listener.tls_context
        assert ctx is not None
        task = asyncio.ensure_future(
            asyncio.get_running_loop().start_tls(transport, self, ctx, server_side=True)
        )
        task.add_done_callback(self._tls_started)

    def _tls_started(self, task: asyncio.Future[asyncio.Transport | None]) -> None:
        self.busy = False
        failure = None if task.cancelled() else task.exception()
        upgraded = None if task.cancelled() or failure is not None else task.result()
        if upgraded is None:
            if failure is not None:
                log.info("ldap_tls_failed", error=type(failure).__name__, source=self._source())
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            return
        self.transport = upgraded
        self.tls = True
        if self.session is not None:
            self.session.tls = True
        self._pump()

    def _abandon(self, target: int) -> None:
        self.queue = deque(q for q in self.queue if q.id != target)

    def _crashed(self, exc: BaseException) -> None:
        log.error("ldap_internal_error", error=type(exc).__name__, source=self._source())
        self._disconnect(rc.OTHER, "internal error")

    def _disconnect(self, code: int, text: str) -> None:
        transport = self.transport
        self.closed = True
        self.queue.clear()
        if transport is not None and not transport.is_closing():
            transport.write(m.notice_of_disconnection(code, text))
            transport.close()

    def _check_idle(self) -> None:
        if self.closed:
            return
        loop = asyncio.get_running_loop()
        timeout = self.listener.settings.idle_timeout
        left = self.last_activity + timeout - loop.time()
        if left > 0 or self.busy:
            self.idle_handle = loop.call_later(max(left, 1.0), self._check_idle)
            return
        self._disconnect(rc.UNAVAILABLE, "idle timeout")

    def _source(self) -> str:
        return self.session.source if self.session is not None else "?"


class LdapListener:
    """Every socket of the `[ldap]` section: `addresses` lists plain listeners, then LDAPS."""

    name = "ldap"

    def __init__(self, settings: LdapSettings, shared: Shared, tls: ssl.SSLContext | None) -> None:
        self.settings = settings
        self.shared = shared
        self.tls_context = tls
        self.addresses: list[str] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: set[Connection] = set()
        self.reuse_port = False  # a worker of `[server] workers = N`: SO_REUSEPORT

    async def listen(self, address: str, *, tls: bool) -> None:
        host, port = parse_listen(address)
        require = self.settings.require_tls_for_bind
        require_tls = (not is_loopback(host)) if require is None else require
        loop = asyncio.get_running_loop()

        def factory() -> Connection:
            return Connection(self, tls=tls, require_tls=require_tls)

        server = await loop.create_server(
            factory,
            host,
            port,
            ssl=self.tls_context if tls else None,
            reuse_address=True,
            reuse_port=self.reuse_port or None,
        )
        self.servers.append(server)
        for sock in server.sockets:
            name: Any = sock.getsockname()
            bound_host = f"[{name[0]}]" if ":" in name[0] else name[0]
            self.addresses.append(f"{bound_host}:{name[1]}")

    async def aclose(self) -> None:
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for server in self.servers:
            await server.wait_closed()


def tls_context(settings: LdapSettings, config: Config) -> ssl.SSLContext | None:
    if settings.tls_certificate is None or settings.tls_key is None:
        return None
    cert = config.path(settings.tls_certificate)
    key = config.path(settings.tls_key)
    if settings.tls_generate and not (cert.exists() and key.exists()):
        generate_self_signed(cert, key, ["localhost", "127.0.0.1"])
    try:
        return server_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{config.source}: ldap.tls_certificate: cannot load: {exc}") from None


async def start(settings: LdapSettings, services: Services) -> LdapListener:
    ctx = tls_context(settings, services.config)
    directory = Directory(settings)
    shared = Shared(services, directory, starttls=ctx is not None, deadline=asyncio.timeout)
    listener = LdapListener(settings, shared, ctx)
    listener.reuse_port = services.reuse_port
    try:
        for address in settings.listen:
            await listener.listen(address, tls=False)
        for address in settings.listen_tls:
            await listener.listen(address, tls=True)
    except BaseException:
        await listener.aclose()
        raise
    log.info("ldap_listening", addresses=listener.addresses, starttls=ctx is not None)
    return listener
