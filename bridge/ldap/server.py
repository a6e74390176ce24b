"""asyncio adapter: LDAP and LDAPS listeners, connections, StartTLS, limits.

Thin on purpose: framing and decoding are `ber`/`messages`, the answers are `Session`'s. This
module owns sockets, TLS, back-pressure and the limits that protect the process (connection
count, PDU size, queued requests per connection, idle time).

Requests on one connection are answered in order. A bind the session can answer at once (a
cached PIN, a service account: `Session.handle_now`) costs no coroutine; anything else is run
inline (`eager.run`) until it first waits, so only work that waits (a KDF, a store query)
becomes a task, and the connection's later requests queue behind it.
A malformed PDU gets a Notice of Disconnection (RFC 4511 §4.4.1) and the connection closes.

Denial of service: every connection passes the listener's `Gate` when it is accepted (caps per
source and in total, the descriptor reserve, TLS handshakes in progress; `bridge.admission`).
Deadlines that a trickle cannot extend, all on one timer per connection that is re-armed when the
connection's state changes, never per read: the first bind within `bind_timeout` of connecting
(TLS included), a PDU whose first byte arrived complete within `pdu_timeout`, a TLS handshake
(LDAPS and StartTLS) within `tls_handshake_timeout`, and `idle_timeout` without a request. LDAPS
listeners accept plain TCP and start TLS themselves, so a pending handshake is admitted, counted
and evicted like any other connection before it costs an SSL object.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from typing import Any, cast

import structlog

from bridge import eager
from bridge.admission import Gate, socket_fd, start_tls_now
from bridge.config import Config, ConfigError
from bridge.ldap import answers as rc
from bridge.ldap import messages as m
from bridge.ldap.ber import SEQUENCE, ProtocolError, frame_length
from bridge.ldap.directory import Directory
from bridge.ldap.session import Reply, Session, Shared
from bridge.ldap.settings import LdapSettings
from bridge.ratelog import RefusalLog
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
        self.source = "?"
        self.admitted = False  # counted by the listener's gate
        self.bound = False  # a first BindRequest arrived
        self.handshaking = False  # TLS handshake in progress
        self.evicted = False  # closed by the gate (which logged it)
        self.connected = self.last_activity = self.loop.time()
        self.partial_since: float | None = None  # first byte of an incomplete PDU
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    # -- transport callbacks ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        lst = self.listener
        peer = transport.get_extra_info("peername")
        self.source = source = str(peer[0]) if isinstance(peer, tuple) else "local"
        if not lst.gate.admit(self, socket_fd(transport)):
            self.closed = True
            if not self.tls:  # a notice in clear text means nothing to an LDAPS client
                transport.write(m.notice_of_disconnection(rc.BUSY, "too many connections"))
                transport.close()
            else:
                transport.abort()
            return
        lst.connections.add(self)
        self.session = Session(lst.shared, source, tls=self.tls, require_tls=self.require_tls)
        self._arm()
        if self.tls:  # LDAPS: the listener is plain TCP, TLS starts here
            self._start_tls()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.listener.connections.discard(self)
        self.listener.gate.release(self)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.queue.clear()

    def evict(self, kind: str) -> None:
        """The gate needs this connection's place (it has not bound, or is still in its TLS
        handshake): close at once."""
        self.evicted = True
        self.closed = True
        self.queue.clear()
        if self.transport is not None:
            self.transport.abort()

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
            n = len(data)
            if not buffer and (
                # one whole PDU in short form (most), seen without a call; else frame_length
                (
                    n >= 2
                    and data[0] == SEQUENCE
                    and data[1] == n - 2 < 0x80
                    and n <= settings.max_pdu
                )
                or frame_length(data, settings.max_pdu) == n
            ):
                # The usual read: exactly one whole PDU, decoded without buffering it, and
                # when nothing is queued before it and it can be answered at once, answered
                # without passing through the queue.
                msg = m.decode(data)
                if (
                    self.bound
                    and not (self.queue or self.busy or self.paused)
                    and type(msg.op) is not m.AbandonRequest
                ):
                    assert self.session is not None
                    self._run(self.session, msg)
                    return
                self._take(msg, settings.max_pending)
                self._pump()
                return
            buffer += data
            completed = False
            while buffer:
                size = frame_length(buffer, settings.max_pdu)
                if size is None:
                    break
                pdu = bytes(buffer[:size])
                del buffer[:size]
                completed = True
                if not self._take(m.decode(pdu), settings.max_pending):
                    return
        except ProtocolError as exc:
            log.info("ldap_protocol_error", error=str(exc), source=self._source())
            self._disconnect(rc.PROTOCOL_ERROR, "malformed PDU")
            return
        if not buffer:
            self.partial_since = None
        elif completed or self.partial_since is None:
            # A PDU has begun and not ended: it must end by the deadline, however it trickles.
            self.partial_since = self.last_activity
            self._arm()
        self._pump()

    def _take(self, msg: m.Message, max_pending: int) -> bool:
        """Queue a decoded request (an Abandon acts at once); False when the connection was
        dropped for queueing too many."""
        if isinstance(msg.op, m.AbandonRequest):
            self._abandon(msg.op.target)
            return True
        if not self.bound and isinstance(msg.op, m.BindRequest):
            self.bound = True
            self.listener.gate.proven(self)
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
            if not self._run(session, self.queue.popleft()):
                return

    def _run(self, session: Session, msg: m.Message) -> bool:
        """Answer one request: False when it became a task (later requests wait for it) or
        crashed the connection."""
        try:
            now = session.handle_now(msg)
            outcome = eager.run(session.handle(msg)) if now is None else now
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the listener
            self._crashed(exc)
            return False
        if isinstance(outcome, eager.Pending):
            self.busy = True
            self.task = outcome.task
            outcome.task.add_done_callback(self._task_done)
            return False
        self._send(outcome)
        return True

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
        lst = self.listener
        transport.pause_reading()
        if not lst.gate.begin_handshake(self):
            self.closed = True
            transport.abort()
            return
        self.busy = self.handshaking = True
        ctx = lst.tls_context
        assert ctx is not None
        start_tls_now(transport, self, ctx, lst.settings.tls_handshake_timeout, self._tls_started)

    def _tls_started(self, task: asyncio.Future[asyncio.Transport | None]) -> None:
        self.busy = self.handshaking = False
        self.listener.gate.end_handshake(self)
        failure = None if task.cancelled() else task.exception()
        upgraded = None if task.cancelled() or failure is not None else task.result()
        if upgraded is None or upgraded.is_closing():  # closing: aborted (evicted, a deadline)
            if failure is not None and not self.evicted:
                timeout = isinstance(failure, TimeoutError | ConnectionAbortedError)
                kind = "handshake_deadline" if timeout else "tls_failed"
                self._refused(kind, error=type(failure).__name__)
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            # A connection lost during its handshake never hears `connection_lost` from the
            # TLS layer: clean up here, or the listener would keep it (and its buffers) for ever.
            self.connection_lost(None)
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

    # -- deadlines: one timer, re-armed on state changes and when it fires -------------------
    def _deadline(self) -> tuple[float, str]:
        """The earliest deadline that applies now, and its reason kind."""
        settings = self.listener.settings
        when, kind = float("inf"), ""
        if not self.bound:
            when, kind = self.connected + settings.bind_timeout, "bind_deadline"
        if self.partial_since is not None:
            pdu = self.partial_since + settings.pdu_timeout
            if pdu < when:
                when, kind = pdu, "pdu_deadline"
        if not self.busy:
            idle = self.last_activity + settings.idle_timeout
            if idle < when:
                when, kind = idle, "idle_timeout"
        return when, kind

    def _arm(self) -> None:
        """(Re)schedule the timer when the earliest deadline moved before it."""
        when, _ = self._deadline()
        if when == float("inf"):
            when = self.loop.time() + self.listener.settings.idle_timeout
        if self.timer is not None:
            if self.timer_at <= when:
                return
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self.timer = None
        if self.closed:
            return
        when, kind = self._deadline()
        if self.loop.time() < when:
            self._arm()
            return
        if kind != "idle_timeout":
            self._refused(kind)
        if self.handshaking:  # no clear-text notice inside a TLS handshake
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            return
        self._disconnect(rc.UNAVAILABLE, kind.replace("_", " "))

    def _refused(self, kind: str, **fields: str) -> None:
        self.listener.refusals.refused("ldap", kind, self.source, **fields)

    def _source(self) -> str:
        return self.source


class LdapListener:
    """Every socket of the `[ldap]` section: `addresses` lists plain listeners, then LDAPS."""

    name = "ldap"

    def __init__(
        self,
        settings: LdapSettings,
        shared: Shared,
        tls: ssl.SSLContext | None,
        gate: Gate,
        refusals: RefusalLog,
    ) -> None:
        self.settings = settings
        self.shared = shared
        self.tls_context = tls
        self.gate = gate
        self.refusals = refusals
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

        # LDAPS too is plain TCP here: the connection starts TLS once its gate admitted it.
        server = await loop.create_server(
            factory, host, port, reuse_address=True, reuse_port=self.reuse_port or None
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
        log.info("ldap_certificate_created", certificate=str(cert), key=str(key), self_signed=True)
    try:
        return server_context(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{config.source}: ldap.tls_certificate: cannot load: {exc}") from None


async def start(settings: LdapSettings, services: Services) -> LdapListener:
    ctx = tls_context(settings, services.config)
    directory = Directory(settings)
    # the core's date (read once a second), the one its standing decisions use
    shared = Shared(
        services,
        directory,
        starttls=ctx is not None,
        today=services.authenticator.today,
        deadline=asyncio.timeout,
    )
    gate = Gate(
        "ldap",
        max_connections=settings.max_connections,
        max_per_source=settings.max_connections_per_source,
        max_handshakes=settings.max_tls_handshakes,
        fds=services.fds,
        refusals=services.refusals,
    )
    listener = LdapListener(settings, shared, ctx, gate, services.refusals)
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
