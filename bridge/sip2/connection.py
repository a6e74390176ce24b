"""One SIP2 client connection: an asyncio Protocol that answers in its callbacks.

Why a Protocol and not streams, and why no task per connection: a self-check's cached 63 costs
little in the core, so the per-message overhead of `StreamReader`, or of waking a task for each
message, was most of the server's CPU. Here `data_received` frames the bytes and answers each
request at once when the handler can (`Handler.answer_now`: a PIN the core verified lately, a
keep-alive 99 while the store's health is fresh, a 35); only a request that must wait for the
core (a KDF, the ILS) becomes a task, and the requests after it queue until it is answered, so
answers always go out one per request in request order. Reading pauses when too many requests
queue up, or when the peer stops reading our answers.

Timeouts: until login, the listener's `login_timeout` counts from connect; after it, the
account's `idle_timeout` counts from the last bytes received; and half a message must be
completed within `message_timeout` of its first byte, however slowly it trickles. One deadline
per connection, re-armed lazily (earlier only when half a message begins), so a busy connection
costs no timer work per message; the deadlines share the listener's ticks (`deadlines`: one
timer per 1/32 s, not one per connection, so a deadline is met up to a tick late).

Denial of service: the listener's `Gate` admits each connection when it is accepted (caps per
source and in total, the descriptor reserve) and may evict one that has not logged in yet to make
room; on a TLS listener the connection starts TLS itself once admitted, holding a handshake slot
until the handshake ends (`tls_handshake_timeout`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import structlog

from bridge.admission import socket_fd, start_tls_now
from bridge.logs import debugging
from bridge.sip2.codec import (
    Framer,
    FrameTooLong,
    Message,
    ProtocolError,
    Request,
    TlsOnPlainPort,
)
from bridge.sip2.session import Close, Dispatch, Reply, Session

if TYPE_CHECKING:
    from bridge.sip2.server import Sip2Listener

log = structlog.get_logger("bridge.sip2")

MAX_QUEUED = 64  # pipelined requests waiting before we stop reading
#: Session events worth an audit line (logins, and what could be probing).
AUDITED = frozenset({"login", "login_failed", "bad_checksum"})
WARNINGS = frozenset({"login_failed"})


class Connection(asyncio.Protocol):
    # Every connection starts with these values: class attributes until a connection sets its
    # own (a discovery layer opens a connection per patron login, so storing sixteen constants
    # in each new instance was a measurable part of a session). What every request reads
    # (`closed`, `task`, `handshaking`) is set in `__init__`: read through the class, an
    # attribute misses the interpreter's instance-attribute shortcut on each read.
    tls = False  # start TLS once admitted (a TLS listener is plain TCP until then)
    handshaking = False
    evicted = False  # closed by the gate (which logged it)
    admitted = False  # counted by the listener's gate
    partial_since: float | None = None  # first byte of half a message
    _timer_at = 0.0
    source = "unknown"
    transport: asyncio.Transport | None = None
    session: Session | None = None
    closed = False
    eof = False
    counted = False
    task: asyncio.Task[bytes] | None = None  # the request waiting on the core, if any
    _tick: int | None = None  # the listener's deadline tick this connection waits in
    _reading_paused = False
    _writing_paused = False

    def __init__(self, listener: Sip2Listener, *, tls: bool = False) -> None:
        self.listener = listener
        if tls:
            self.tls = True
        self.loop = loop = asyncio.get_running_loop()
        self.framer = Framer(listener.settings.max_message_length)
        self.frames: deque[bytes] = deque()
        self.started = self.last = loop.time()
        self.closed = self.handshaking = False
        self.task = None

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.listener.admit(self, socket_fd(transport)):
            self.closed = True
            transport.abort()
            return
        self.counted = True
        self.session = Session(self.listener.accounts, self.source, self.listener.options)
        self._arm()
        if debugging():
            log.debug("sip2_connected", source=self.source)
        if self.tls:
            self._start_tls(transport)

    def _start_tls(self, transport: asyncio.Transport) -> None:
        """Nothing may be read before the TLS layer is in place (`start_tls_now`)."""
        listener = self.listener
        context = listener.tls_context
        if context is None or not listener.gate.begin_handshake(self):
            self.close()
            return
        self.handshaking = True
        timeout = listener.settings.tls_handshake_timeout
        start_tls_now(transport, self, context, timeout, self._tls_started)

    def _tls_started(self, task: asyncio.Future[asyncio.Transport | None]) -> None:
        self.handshaking = False
        self.listener.gate.end_handshake(self)
        failure = None if task.cancelled() else task.exception()
        upgraded = None if task.cancelled() or failure is not None else task.result()
        if upgraded is None or upgraded.is_closing():  # closing: aborted (evicted, a deadline)
            if failure is not None and not self.evicted:
                timeout = isinstance(failure, TimeoutError | ConnectionAbortedError)
                kind = "handshake_deadline" if timeout else "tls_failed"
                self.listener.refused(kind, self.source, error=type(failure).__name__)
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            # A connection lost during its handshake never hears `connection_lost` from the
            # TLS layer: clean up here, or the listener would keep it (and its buffers) for ever.
            self.connection_lost(None)
            return
        self.transport = upgraded
        self._pump()

    def evict(self, kind: str) -> None:
        """The gate needs this connection's place (not logged in yet): close at once."""
        self.evicted = True
        self.closed = True
        self.frames.clear()
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.loop.time()
        # One whole request in this read, nothing before it waiting: answered here without
        # the queue when the handler can (a self-check's cached 63 or 23).
        frame = self.framer.single(data)
        if frame is not None:
            if not self.frames and self.task is None:
                session = self.session
                transport = self.transport
                if session is not None and transport is not None and not self.handshaking:
                    read = session.request(frame)
                    if read is not None and self._answer_read(read, frame, session, transport):
                        return
            self.frames.append(frame)
            if len(self.frames) >= MAX_QUEUED:
                self._pause_reading()
            self._pump()
            return
        try:
            frames = self.framer.feed(data)
        except TlsOnPlainPort:
            log.warning(
                "sip2_tls_on_plain_port",
                source=self.source,
                detail="a TLS ClientHello arrived on the plain-text SIP2 port; closing",
            )
            self.close()
            return
        except FrameTooLong:
            log.warning(
                "sip2_message_too_long",
                source=self.source,
                limit=self.listener.settings.max_message_length,
            )
            self.close()
            return
        if self.framer.pending:  # half a message: it must be whole by its deadline
            if frames or self.partial_since is None:
                self.partial_since = self.last
                self._arm()
        elif self.partial_since is not None:
            self.partial_since = None
        if frames:
            self.frames.extend(frames)
            if len(self.frames) >= MAX_QUEUED:
                self._pause_reading()
            self._pump()

    def eof_received(self) -> bool:
        if self.framer.pending:
            log.info("sip2_partial_message", source=self.source, pending=self.framer.pending)
        self.eof = True
        self._pump()
        # Keep the write side open until queued answers are written (TLS cannot half-close).
        return self.transport is None or self.transport.get_extra_info("sslcontext") is None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self.frames.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()  # e.g. waiting on a slow store: nobody is left to answer
        if self.counted:
            self.counted = False
            self.listener.release(self)
        if debugging():
            log.debug("sip2_disconnected", source=self.source)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._resume_reading()

    # -- helpers ----------------------------------------------------------------------------
    def _pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (
            self._reading_paused
            and not self._writing_paused
            and len(self.frames) < MAX_QUEUED
            and self.transport is not None
            and not self.closed
        ):
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after writing what is already written; queued requests are dropped."""
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        self._cancel_timer()

    # -- timeouts ---------------------------------------------------------------------------
    def _deadline(self) -> tuple[float | None, str]:
        """The earliest deadline that applies now (None: none), and its reason kind."""
        session = self.session
        account = session.account if session is not None else None
        settings = self.listener.settings
        when: float | None
        if account is None:
            limit = settings.login_timeout
            when, kind = (self.started + limit if limit else None), "login_deadline"
        else:
            idle = account.settings.idle_timeout
            when, kind = (self.last + idle if idle else None), "idle"
        if self.partial_since is not None and settings.message_timeout:
            partial = self.partial_since + settings.message_timeout
            if when is None or partial < when:
                when, kind = partial, "message_deadline"
        return when, kind

    def _arm(self) -> None:
        """(Re)schedule the timer when the earliest deadline moved before it."""
        deadline, _ = self._deadline()
        when = deadline if deadline is not None else self.loop.time() + 60.0
        deadlines = self.listener.deadlines
        if self._tick is not None:
            if self._timer_at <= when:
                return
            deadlines.discard(self, self._tick)
        self._timer_at = when
        self._tick = deadlines.add(self, when)

    def check_deadline(self) -> None:
        """The listener's tick this connection waited in has come (`Deadlines`)."""
        self._tick = None
        if self.closed:
            return
        deadline, kind = self._deadline()
        if deadline is not None and self.loop.time() >= deadline:
            if kind == "idle":
                log.info("sip2_timeout", source=self.source, phase="idle")
            else:  # what a flood of slow connections looks like: rate-limited per source
                self.listener.refused(kind, self.source)
            if self.handshaking and self.transport is not None:
                self.closed = True
                self.transport.abort()
                return
            self.close()
            return
        self._arm()

    def _cancel_timer(self) -> None:
        if self._tick is not None:
            self.listener.deadlines.discard(self, self._tick)
            self._tick = None

    # -- answering --------------------------------------------------------------------------
    def _pump(self) -> None:
        """Answer queued requests in order, inline while the handler can, until one has to
        wait for the core (then a task answers it and calls this again)."""
        session = self.session
        transport = self.transport
        if session is None or transport is None or self.handshaking:
            return  # TLS: the first request can arrive before start_tls hands over its transport
        handler = self.listener.handler
        frames = self.frames
        while frames and self.task is None and not self.closed:
            frame = frames.popleft()
            # A plain 23/63/35 is read straight off the frame and answered without a
            # `Message` when the handler can (most of what a busy self-check sends).
            read = session.request(frame)
            if read is not None and self._answer_read(read, frame, session, transport):
                continue  # answered (or the connection closed: the loop ends)
            action = session.receive(frame, self.framer.terminator)
            if type(action) is Dispatch:
                request = action.message
                try:
                    response = handler.answer_now(request, session)
                except ProtocolError:
                    log.info("sip2_unreadable_request", source=self.source, code=request.code)
                    transport.write(session.resend(self.framer.terminator))
                    continue
                except Exception as error:  # noqa: BLE001 - a bug must not kill the listener
                    log.error(
                        "sip2_connection_failed", source=self.source, error=type(error).__name__
                    )
                    self.close()
                    return
                if response is None:
                    self.task = task = self.loop.create_task(self._answer_later(request))
                    task.add_done_callback(self._answered)
                    return
                transport.write(session.answer(request, response))
            elif type(action) is Reply:
                transport.write(action.data)
                if action.event:
                    self._event(action.event, action.login, action.reason)
                if action.close:
                    log.info("sip2_login_attempts_exhausted", source=self.source)
                    self.close()
            elif type(action) is Close:
                log.info("sip2_closed", source=self.source, reason=action.reason)
                self.close()
        if not frames and self.task is None and not self.closed:
            if self.eof:
                self.close()
            elif self._reading_paused:
                self._resume_reading()

    def _answer_read(
        self, read: Request, frame: bytes, session: Session, transport: asyncio.Transport
    ) -> bool:
        """Answer a request read straight off its frame, inline; False when the handler cannot
        (then `Session.receive` and `answer_now` take the frame the general way)."""
        try:
            answer = self.listener.handler.answer_request(read, session)
        except ProtocolError:
            log.info("sip2_unreadable_request", source=self.source, code=read[0])
            transport.write(session.resend(self.framer.terminator))
            return True
        except Exception as error:  # noqa: BLE001 - a bug must not kill the listener
            log.error("sip2_connection_failed", source=self.source, error=type(error).__name__)
            self.close()
            return True
        if answer is None:
            return False
        transport.write(session.answer_request(read, frame, answer))
        return True

    async def _answer_later(self, request: Message) -> bytes:
        session = self.session
        assert session is not None
        try:
            response = await self.listener.handler.dispatch(request, session)
        except ProtocolError:
            log.info("sip2_unreadable_request", source=self.source, code=request.code)
            return session.resend(self.framer.terminator)
        return session.answer(request, response)

    def _answered(self, task: asyncio.Task[bytes]) -> None:
        self.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("sip2_connection_failed", source=self.source, error=type(error).__name__)
            self.close()
            return
        if not self.closed and self.transport is not None:
            self.transport.write(task.result())
        self._pump()

    def _login(self) -> str:
        """The logged-in account's name, or "" before login."""
        account = self.session.account if self.session is not None else None
        return account.login if account is not None else ""

    def _event(self, event: str, login: str, reason: str = "") -> None:
        if event == "login":
            self.listener.gate.proven(self)
            if not reason:  # every session's line: its fields encoded once per login and address
                self.listener.services.audit.client_event(
                    "sip2_login", source=self.source, client=login or self._login()
                )
                return
        fields: dict[str, Any] = {"source": self.source, "client": login or self._login()}
        if reason:
            fields["reason"] = reason
        if event in AUDITED:
            # a failed terminal login is something to act on (a wrong password in a
            # self-check's config, a unit moved to another network): warning, with the reason
            audit = self.listener.services.audit
            if event in WARNINGS:
                audit.event(f"sip2_{event}", severity="warning", **fields)
            else:
                audit.event(f"sip2_{event}", **fields)
        else:
            log.info(f"sip2_{event}", **fields)
