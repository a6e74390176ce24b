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
account's `idle_timeout` counts from the last bytes received. One timer per connection,
re-armed lazily, so a busy connection costs no timer work per message.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, cast

import structlog

from bridge.sip2.codec import Framer, FrameTooLong, Message, ProtocolError, TlsOnPlainPort
from bridge.sip2.session import Close, Dispatch, Reply, Session

if TYPE_CHECKING:
    from bridge.sip2.server import Sip2Listener

log = structlog.get_logger("bridge.sip2")

MAX_QUEUED = 64  # pipelined requests waiting before we stop reading
#: Session events worth an audit line (logins, and what could be probing).
AUDITED = frozenset({"login", "login_failed", "bad_checksum"})
WARNINGS = frozenset({"login_failed"})


class Connection(asyncio.Protocol):
    def __init__(self, listener: Sip2Listener) -> None:
        self.listener = listener
        self.loop = asyncio.get_running_loop()
        self.source = "unknown"
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.framer = Framer(listener.settings.max_message_length)
        self.frames: deque[bytes] = deque()
        self.started = self.last = self.loop.time()
        self.closed = False
        self.eof = False
        self.counted = False
        self.task: asyncio.Task[bytes] | None = None  # the request waiting on the core, if any
        self._timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._writing_paused = False

    # -- asyncio.Protocol -------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.listener.admit(self):
            log.warning("sip2_connection_refused", source=self.source, reason="connection cap")
            self.closed = True
            transport.abort()
            return
        self.counted = True
        self.session = Session(self.listener.accounts, self.source, self.listener.options)
        self._arm()
        log.debug("sip2_connected", source=self.source)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self.last = self.loop.time()
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
    def _deadline(self) -> float | None:
        session = self.session
        account = session.account if session is not None else None
        if account is None:
            limit = self.listener.settings.login_timeout
            return self.started + limit if limit else None
        idle = account.settings.idle_timeout
        return self.last + idle if idle else None

    def _arm(self) -> None:
        deadline = self._deadline()
        when = deadline if deadline is not None else self.loop.time() + 60.0
        self._timer = self.loop.call_at(when, self._check)

    def _check(self) -> None:
        self._timer = None
        if self.closed:
            return
        deadline = self._deadline()
        if deadline is not None and self.loop.time() >= deadline:
            phase = "login" if self.session is None or self.session.account is None else "idle"
            log.info("sip2_timeout", source=self.source, phase=phase)
            self.close()
            return
        self._arm()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- answering --------------------------------------------------------------------------
    def _pump(self) -> None:
        """Answer queued requests in order, inline while the handler can, until one has to
        wait for the core (then a task answers it and calls this again)."""
        session = self.session
        transport = self.transport
        if session is None or transport is None:
            return
        handler = self.listener.handler
        frames = self.frames
        while frames and self.task is None and not self.closed:
            action = session.receive(frames.popleft(), self.framer.terminator)
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
            else:
                self._resume_reading()

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

    def _event(self, event: str, login: str, reason: str = "") -> None:
        session = self.session
        account = session.account if session is not None else None
        fields: dict[str, Any] = {
            "source": self.source,
            "client": login or (account.login if account else ""),
        }
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
