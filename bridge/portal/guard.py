"""The PIN pages' connection guard: uvicorn's h11 protocol with the listener's `Gate`, a whole-
request deadline and (when the pages serve HTTPS themselves) a capped TLS handshake.

Uvicorn alone holds a half-sent request for ever: its keep-alive timer is cancelled by any byte
and there is no header timeout, so 1,100 connections each sending half a request header filled
the descriptor table. This subclass changes only connection-level events, never a read:

- `connection_made`: the gate admits the connection (caps per source and in total, descriptor
  reserve; a trusted proxy is exempt from the per-source cap) or it is closed at once;
- a request must be whole (header and body) within `request_timeout` of the connection opening,
  or of the previous response when the connection is kept alive; else 408 and close. The timer
  is armed when the connection opens or a response completes and cancelled once h11 has the
  whole request, so a trickle cannot extend it;
- a connection whose request header has arrived is "proven" (not a candidate for eviction when
  the listener is full); an idle keep-alive connection becomes a candidate again;
- HTTPS: TLS starts here, after admission, holding one of `max_tls_handshakes` slots until it
  ends (`tls_handshake_timeout`);
- a request refused while the client is still sending it (a header past `max_header_bytes`, a
  malformed request) gets a lingering close, as Apache and nginx do: the answer, a FIN, then
  what still arrives is read and dropped for up to `LINGER_SECONDS` / `LINGER_BYTES`. Closing
  with unread bytes in the socket makes the kernel send a reset, and a reset can destroy the
  answer in the client's buffer before it reads it (seen in CI with a 60 KB SAML URL).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, ClassVar, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from bridge.admission import Gate, socket_fd, start_tls_now
from bridge.ratelog import RefusalLog

REQUEST_TIMEOUT_ANSWER = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
)
FINISHED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20


class GuardedH11Protocol(H11Protocol):
    """Set by `guarded_protocol` on a subclass per listener (uvicorn builds the protocol)."""

    gate: ClassVar[Gate]
    refusals: ClassVar[RefusalLog]
    request_timeout: ClassVar[float]
    tls_context: ClassVar[ssl.SSLContext | None]
    tls_handshake_timeout: ClassVar[float]

    source = "?"
    admitted = False
    handshaking = False
    _refused = False
    evicted = False
    _timer: asyncio.TimerHandle | None = None
    _early: list[bytes] | None = None  # decrypted bytes that arrived before start_tls returned
    _lingering: int | None = None  # bytes dropped since the lingering close began

    # -- connection events ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        if not self.gate.admit(self, socket_fd(transport)):
            self._refused = True
            transport.abort()
            return
        self._arm(self.request_timeout)
        if self.tls_context is None:
            super().connection_made(transport)
            return
        self.transport = transport  # until TLS is up, so eviction and deadlines can abort it
        if not self.gate.begin_handshake(self):
            self._refused = True
            self.gate.release(self)
            transport.abort()
            return
        self.handshaking = True
        self._early = []
        start_tls_now(
            transport, self, self.tls_context, self.tls_handshake_timeout, self._tls_started
        )

    def _tls_started(self, task: asyncio.Future[asyncio.Transport | None]) -> None:
        self.handshaking = False
        self.gate.end_handshake(self)
        failure = None if task.cancelled() else task.exception()
        upgraded = None if task.cancelled() or failure is not None else task.result()
        if upgraded is None or upgraded.is_closing():  # closing: aborted (evicted, a deadline)
            if failure is not None and not self.evicted:
                timeout = isinstance(failure, TimeoutError | ConnectionAbortedError)
                kind = "handshake_deadline" if timeout else "tls_failed"
                self.refusals.refused(
                    self.gate.listener, kind, self.source, error=type(failure).__name__
                )
            self._refused = True  # uvicorn never saw this connection
            self._cancel()
            self.gate.release(self)
            self.transport.abort()
            return
        early, self._early = self._early or [], None
        super().connection_made(upgraded)
        for data in early:
            super().data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._lingering is not None:  # the rest of a refused request: drop it
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.abort()
            return
        if self._early is not None:  # TLS finished, start_tls has not handed over yet
            self._early.append(data)
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        self.gate.release(self)
        if self._refused or self._early is not None or self.flow is None:
            return  # uvicorn never saw this connection
        super().connection_lost(exc)

    def evict(self, kind: str) -> None:
        """The gate needs this connection's place (no whole request header yet): close now."""
        self.evicted = True
        self._cancel()
        self.connections.discard(self)  # uvicorn counts it for limit_concurrency until then
        if self.transport is not None:
            self.transport.abort()

    # -- refusing a request the client is still sending ---------------------------------------
    def send_400_response(self, msg: str) -> None:
        """Uvicorn's 400 for a request h11 cannot parse, closed by lingering (module docstring)."""
        transport = self.transport
        if not transport.can_write_eof():  # TLS: no half-close; the TLS close_notify must do
            super().send_400_response(msg)
            return
        for event in (
            h11.Response(
                status_code=400,
                headers=[
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"connection", b"close"),
                ],
                reason=b"Bad Request",
            ),
            h11.Data(data=msg.encode("ascii")),
            h11.EndOfMessage(),
        ):
            output = self.conn.send(event)
            if output:
                transport.write(output)
        transport.write_eof()
        self._lingering = 0
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(LINGER_SECONDS, transport.abort)

    # -- the request deadline ---------------------------------------------------------------
    def handle_events(self) -> None:
        super().handle_events()
        if self._timer is not None and self.conn.their_state is not h11.IDLE:
            self.gate.proven(self)  # a whole request header: a real client
            if self.conn.their_state in FINISHED:
                self._cancel()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():  # kept alive: the next request has its deadline
            self.gate.unproven_again(self)
            self._arm(self.timeout_keep_alive + self.request_timeout)
        super().on_response_complete()

    def _arm(self, delay: float) -> None:
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.refusals.refused(self.gate.listener, "request_deadline", self.source)
        if self.handshaking or self._early is not None:
            transport.abort()
            return
        if self.conn.our_state is h11.IDLE:
            transport.write(REQUEST_TIMEOUT_ANSWER)
        transport.close()


def guarded_protocol(
    gate: Gate,
    refusals: RefusalLog,
    *,
    request_timeout: float,
    tls_context: ssl.SSLContext | None = None,
    tls_handshake_timeout: float = 10.0,
) -> type[GuardedH11Protocol]:
    """A protocol class for uvicorn's `http` setting bound to one listener's gate."""
    attrs: dict[str, Any] = {
        "gate": gate,
        "refusals": refusals,
        "request_timeout": request_timeout,
        "tls_context": tls_context,
        "tls_handshake_timeout": tls_handshake_timeout,
    }
    return cast(type[GuardedH11Protocol], type("PortalProtocol", (GuardedH11Protocol,), attrs))


def exempt_sources(trusted: list[str]) -> Callable[[str], bool]:
    """Whether a source address is one of the trusted proxies (every patron's request arrives
    from it, so the per-source cap must not apply)."""
    import ipaddress

    if "*" in trusted:
        return lambda _source: True
    networks = [ipaddress.ip_network(n, strict=False) for n in trusted]

    def exempt(source: str) -> bool:
        try:
            ip = ipaddress.ip_address(source)
        except ValueError:
            return False
        return any(ip in net for net in networks if net.version == ip.version)

    return exempt
