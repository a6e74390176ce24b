"""Persistent, logged-in SIP2 connections to the ILS, shared by every PIN check.

Why a pool: an ILS's SIP2 server is built for a few long-lived self-check connections, and a
connect + 93 login per PIN check costs it a process or a thread each time (NYPL-Simplified
PR #1067 overloaded a SirsiDynix that way). So the bridge keeps up to `pool_size` connections
open, logs each in once (93), keeps idle ones alive with 99, and sends one request at a time
on each (SIP2 has no request ids: interleaving would mix answers up).

Failure rules:
- A connection that broke before the reply (EOF, reset, refused write) is dropped and the
  request is retried once on a freshly opened connection: the ILS never answered, so nothing
  was done twice. A request the ILS answered, or one that timed out waiting (the ILS may still
  act on it), is never retried.
- `request_timeout` bounds the whole request, waiting for a free connection included; the
  caller turns it into `StoreUnavailable`.
- More than `max_in_flight` requests waiting or running: refused at once, so a stampede cannot
  queue up minutes of work behind a slow ILS.
- Every connect, login and request failure feeds the circuit breaker; while it is open,
  requests fail at once and reconnects wait for its (doubling) pause: the backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import structlog

from bridge import tls
from bridge.core.secret import Secret
from bridge.sip2.client import ClientSession, Resend
from bridge.sip2.codec import Framer, Message, ProtocolError
from bridge.sip2.messages import AcsStatus, LoginRequest, LoginResponse, ScStatus
from plugins.breaker import Breaker
from plugins.sip2.settings import Sip2StoreSettings

log = structlog.get_logger("plugins.sip2")

READ_SIZE = 65536
MAX_REPLY = 64 * 1024


class UpstreamError(Exception):
    """The ILS could not be asked (the store turns every one into `StoreUnavailable`)."""


class Broken(UpstreamError):
    """The connection failed before a reply arrived: safe to retry on a new connection."""


class Refused(UpstreamError):
    """Refused without asking: circuit open, too many requests waiting, login refused."""


class Timeout(UpstreamError):
    """No reply within the request timeout."""


class Connection:
    """One logged-in connection: a socket pair, its framer and its SIP2 client session."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        settings: Sip2StoreSettings,
        now: float,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.session = ClientSession(
            error_detection=settings.error_detection,
            charset=settings.charset,
            terminator=settings.terminator_bytes,
        )
        self.framer = Framer(MAX_REPLY)
        self.last_used = now
        self.fresh = True  # opened for this request, no request sent yet

    async def call(self, message: Message) -> Message:
        """Send one request, return its reply. `Broken` when the socket fails before it."""
        try:
            self.writer.write(self.session.request(message))
            await self.writer.drain()
            while True:
                chunk = await self.reader.read(READ_SIZE)
                if not chunk:
                    raise Broken("the ILS closed the connection")
                for frame in self.framer.feed(chunk):
                    result = self.session.receive(frame)
                    if isinstance(result, Resend):
                        self.writer.write(result.data)
                        await self.writer.drain()
                        continue
                    return result
        except (ConnectionError, OSError) as exc:
            raise Broken(f"connection lost ({type(exc).__name__})") from None
        finally:
            self.fresh = False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Pool:
    def __init__(
        self,
        settings: Sip2StoreSettings,
        *,
        base_dir: str = ".",
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.monotonic = monotonic
        self.clock = clock
        self.breaker = Breaker(
            failures=settings.breaker_failures,
            reset=settings.breaker_reset,
            reset_max=settings.breaker_reset_max,
            probe_timeout=settings.connect_timeout + settings.request_timeout,
        )
        self._ssl: ssl.SSLContext | None = None
        if settings.tls:
            ca = None
            if settings.ca_file:
                path = Path(settings.ca_file)
                ca = path if path.is_absolute() else Path(base_dir) / path
            self._ssl = tls.client_context(ca, verify=settings.tls_verify)
        self._idle: deque[Connection] = deque()
        self._open = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._in_flight = 0
        self._closed = False
        self._keepalive: asyncio.Task[None] | None = None
        self.upstream_status: AcsStatus | None = None  # the ILS's last 98
        self.stats = {"connects": 0, "requests": 0, "retries": 0}

    # -- public -----------------------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        return self._open

    def start(self) -> None:
        """Start the keep-alive task (needs a running loop)."""
        if self.settings.keepalive and self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(self._keepalive_loop())

    async def request(self, message: Message) -> Message:
        """One request/reply with the ILS, under the breaker, the in-flight cap and the timeout."""
        if self._closed:
            raise Refused("the store is closed")
        if self._in_flight >= self.settings.max_in_flight:
            raise Refused("too many requests waiting for the ILS")
        if not self.breaker.allow(self.monotonic()):
            raise Refused(f"ILS circuit {self.breaker.describe(self.monotonic())}")
        self._in_flight += 1
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                reply = await self._request(message)
        except TimeoutError:
            self.breaker.failure(self.monotonic())
            raise Timeout(
                f"no reply from the ILS within {self.settings.request_timeout}s"
            ) from None
        except UpstreamError:
            self.breaker.failure(self.monotonic())
            raise
        except ProtocolError as exc:  # an answer we cannot use (wrong code, endless resends)
            self.breaker.failure(self.monotonic())
            raise UpstreamError(f"unusable reply from the ILS: {exc}") from None
        finally:
            self._in_flight -= 1
        self.breaker.success(self.monotonic())
        self.stats["requests"] += 1
        return reply

    async def status(self) -> AcsStatus:
        """Ask the ILS for its 98 (the health probe and the source of BX)."""
        reply = await self.request(ScStatus().to_message())
        try:
            return AcsStatus.from_message(reply)
        except ProtocolError as exc:
            raise UpstreamError(f"unreadable 98 from the ILS: {exc}") from None

    async def aclose(self) -> None:
        self._closed = True
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(Refused("the store is closed"))
        while self._idle:
            self._idle.popleft().close()
            self._open -= 1

    # -- one request ------------------------------------------------------------------------
    async def _request(self, message: Message) -> Message:
        conn = await self._acquire()
        was_fresh = conn.fresh
        try:
            reply = await conn.call(message)
        except Broken as exc:
            self._discard(conn)
            if was_fresh:
                raise
            # A pooled connection died while idle (ILS restarted, firewall timeout): once more,
            # on a connection opened for this request.
            log.info("sip2_upstream_retry", reason=str(exc))
            self.stats["retries"] += 1
            conn = await self._acquire(fresh=True)
            try:
                reply = await conn.call(message)
            except BaseException:
                self._discard(conn)
                raise
        except BaseException:
            # Timeout (cancelled mid-call), protocol error: the connection's state is unknown.
            self._discard(conn)
            raise
        self._release(conn)
        return reply

    async def _acquire(self, *, fresh: bool = False) -> Connection:
        while True:
            if self._closed:
                raise Refused("the store is closed")
            if not fresh and self._idle:
                return self._idle.pop()  # most recently used: warm; keep-alive tends the rest
            if self._open < self.settings.pool_size:
                self._open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            if fresh and self._idle:
                # Full pool: trade an idle connection for a new one.
                self._idle.popleft().close()
                self._open -= 1
                continue
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    handed = waiter.result()
                    if handed is not None:
                        self._release(handed)
                    else:
                        self._wake_one()
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
            if conn is not None and not fresh:
                return conn
            if conn is not None:
                self._idle.append(conn)

    def _release(self, conn: Connection) -> None:
        conn.last_used = self.monotonic()
        if self._closed or not self.settings.persistent:
            self._discard(conn)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    def _discard(self, conn: Connection) -> None:
        conn.close()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        """A slot freed up: let one waiter open a connection."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self) -> Connection:
        s = self.settings
        try:
            async with asyncio.timeout(s.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    s.host, s.port, ssl=self._ssl, limit=MAX_REPLY
                )
        except TimeoutError:
            raise Broken(f"connect to {s.host}:{s.port} timed out") from None
        except (OSError, ssl.SSLError) as exc:
            raise Broken(f"cannot connect to {s.host}:{s.port} ({type(exc).__name__})") from None
        conn = Connection(reader, writer, s, self.monotonic())
        self.stats["connects"] += 1
        if s.login:
            login = LoginRequest(s.login, Secret(s.password), s.location)
            try:
                reply = await conn.call(login.to_message())
                ok = LoginResponse.from_message(reply).ok
            except BaseException:
                conn.close()
                raise
            if not ok:
                conn.close()
                log.error("sip2_upstream_login_refused", host=s.host, port=s.port, login=s.login)
                raise Refused("the ILS refused the SIP2 login")
            conn.fresh = True  # the login does not count as this connection's request
        log.info("sip2_upstream_connected", host=s.host, port=s.port, open=self._open)
        return conn

    # -- keep-alive -------------------------------------------------------------------------
    async def _keepalive_loop(self) -> None:
        """Send 99 on connections idle longer than `keepalive`; drop the ones that fail."""
        period = self.settings.keepalive
        while not self._closed:
            await asyncio.sleep(max(period / 4, 0.05))
            now = self.monotonic()
            stale = [c for c in self._idle if now - c.last_used >= period]
            for conn in stale:
                if conn not in self._idle:
                    continue
                self._idle.remove(conn)
                try:
                    async with asyncio.timeout(self.settings.request_timeout):
                        reply = await conn.call(ScStatus().to_message())
                    self.upstream_status = AcsStatus.from_message(reply)
                except (UpstreamError, TimeoutError, ProtocolError) as exc:
                    log.info("sip2_upstream_keepalive_failed", error=type(exc).__name__)
                    self._discard(conn)
                    continue
                self._release(conn)
