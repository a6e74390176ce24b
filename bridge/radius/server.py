"""The asyncio UDP adapter: datagrams in, the authenticator asked, replies out.

Thin by design: decoding, authenticity checks, duplicate rules, outcome mapping and accounting
fields live in the pure modules next to it. Per datagram: find the client by source address
(unknown: drop, log once a minute), decode once, verify (Message-Authenticator or the accounting
Request Authenticator) before the duplicate cache sees it, then

- Access-Request: PAP only; the PIN is decrypted to exact bytes and given to the core: a PIN
  it has verified lately (`settle`) is answered at once, one that needs the store is checked in
  a task and the reply sent from that task's completion. Rejects wait `reject_delay` on a timer
  (`loop.call_later`), so the delay holds no KDF worker, no task and no socket;
- Status-Server: Access-Accept while the store is healthy (cached `health_ttl`), silence while
  it is not, so NASes fail over;
- Accounting-Request: one audit line, written before the Accounting-Response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, cast

import structlog

from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.patron import Context, Decision, Outcome
from bridge.core.secret import Secret
from bridge.core.store import StoreError
from bridge.radius import accounting
from bridge.radius.answers import Answer, answer, refusal
from bridge.radius.attributes import encode_table, merge
from bridge.radius.clients import (
    AuthenticatorPolicy,
    Client,
    ClientTable,
    HealthCache,
    LogLimiter,
)
from bridge.radius.dedup import DuplicateCache, Key, Verdict
from bridge.radius.eap import frontend as eap_frontend
from bridge.radius.packet import (
    ACCESS_ACCEPT,
    ACCESS_REJECT,
    ACCESS_REQUEST,
    ACCOUNTING_REQUEST,
    ACCOUNTING_RESPONSE,
    PROXY_STATE,
    REPLY_MESSAGE,
    STATUS_SERVER,
    Packet,
    ProtocolError,
    SharedSecret,
    access_fields,
    accounting_authenticator_ok,
    decode,
    decrypt_password,
    encode_attributes,
    encode_reply,
    message_authenticator_ok,
)
from bridge.radius.settings import RadiusClient, RadiusSettings
from bridge.services import Services
from bridge.settings import parse_listen

log = structlog.get_logger("bridge.radius")

RECEIVE_BUFFER = 4 * 1024 * 1024
UNKNOWN_LOG_INTERVAL = 60.0
DROP_LOG_INTERVAL = 1.0
CONTEXT_MEMO = 4096

Address = tuple[Any, ...]


def build_client(spec: RadiusClient, services: Services) -> Client:
    base = encode_table(spec.reply)
    return Client(
        name=spec.name,
        network=ipaddress.ip_network(spec.network, strict=False),
        secret=SharedSecret(spec.secret.encode("utf-8")),
        require_message_authenticator=spec.require_message_authenticator,
        limit_proxy_state=spec.limit_proxy_state,
        policy=services.config.client_policy(spec.policy),
        accept_attributes=encode_attributes(base),
        category_attributes={
            category: encode_attributes(merge(spec.reply, table))
            for category, table in spec.categories.items()
        },
    )


@dataclass(slots=True)
class Endpoint(asyncio.DatagramProtocol):
    """One bound socket; its own duplicate cache (RFC 5080 keys on the receiving socket)."""

    server: RadiusServer
    dedup: DuplicateCache
    transport: asyncio.DatagramTransport | None = None
    address: str = ""
    # The loop's entry for every datagram: `server.received` with this endpoint bound, set
    # per instance (a method forwarding to it was one more Python frame per request). A
    # callable attribute where DatagramProtocol has a method: mypy calls that an override.
    datagram_received: Callable[[bytes, Address], None] = field(  # type: ignore[assignment]
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        self.datagram_received = partial(self.server.received, self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)

    def error_received(self, exc: Exception) -> None:
        log.warning("radius_socket_error", listener=self.address, error=type(exc).__name__)

    def send(self, reply: bytes, addr: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


class Pending(NamedTuple):
    """One Access-Request between its decision and its reply.

    Made with `tuple.__new__` (`_new_tuple`) on the hot path: a dataclass's `__init__` is a
    Python call, about 600 instructions more per request."""

    endpoint: Endpoint
    client: Client
    packet: Packet
    addr: Address
    key: Key
    proxy_state: bool = False


_new_tuple = tuple.__new__

# Every request reads a duplicate verdict. An Enum member read through its class
# (`Verdict.REPLAY`) is a Python-level lookup on 3.11, about 900 instructions under callgrind;
# a module global is a dict read.
_IN_FLIGHT, _REPLAY = Verdict.IN_FLIGHT, Verdict.REPLAY


@dataclass(slots=True)
class RadiusServer:
    settings: RadiusSettings
    authenticator: Authenticator
    audit: Audit
    clients: ClientTable
    loop: asyncio.AbstractEventLoop
    health: HealthCache
    unknown_log: LogLimiter = field(default_factory=lambda: LogLimiter(UNKNOWN_LOG_INTERVAL))
    drop_log: LogLimiter = field(default_factory=lambda: LogLimiter(DROP_LOG_INTERVAL))
    endpoints: list[Endpoint] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    health_probe: asyncio.Task[bool] | None = None
    # (client name, outcome, category) -> the answer and its encoded reply attributes
    replies: dict[tuple[str, Outcome, str], tuple[Answer, bytes]] = field(default_factory=dict)
    contexts: dict[str, Context] = field(default_factory=dict)  # source address -> its Context
    authenticators: AuthenticatorPolicy = field(default_factory=AuthenticatorPolicy)
    drops: dict[str, int] = field(default_factory=dict)  # reason (before any detail) → count
    eap: eap_frontend.EapFrontEnd | None = None  # [radius.eap]: 802.1X EAP-TTLS/PAP

    # -- entry ----------------------------------------------------------------------------
    def received(self, endpoint: Endpoint, data: bytes, addr: Address) -> None:
        host = addr[0]
        client = self.clients.match(host)
        if client is None:
            self.drops["unknown client"] = self.drops.get("unknown client", 0) + 1
            suppressed = self.unknown_log.allow(host, self.loop.time())
            if suppressed is not None:
                log.warning("radius_unknown_client", source=host, suppressed=suppressed)
            return
        try:
            packet = decode(data)
        except ProtocolError as exc:
            self.drop(client, host, f"malformed: {exc.kind}", str(exc))
            return
        code = packet.code
        if code == ACCESS_REQUEST:
            self.access_request(endpoint, client, packet, addr)
        elif code == ACCOUNTING_REQUEST:
            self.accounting_request(endpoint, client, packet, addr)
        elif code == STATUS_SERVER:
            self.status_server(endpoint, client, packet, addr)
        else:
            self.drop(client, host, "unsupported packet code", str(code))

    def _log_limited(
        self, event: str, client: Client, host: str, reason: str, detail: str = ""
    ) -> None:
        """At most one line per source and reason kind per second, counting the ones held back.

        `reason` is a fixed text (the kind: "malformed: truncated packet"); what varies from
        packet to packet (lengths, attribute numbers) goes in `detail`, which is logged with
        the line that is written but never part of the key, so a sender cannot turn every
        packet into a line by varying a number."""
        suppressed = self.drop_log.allow((host, reason), self.loop.time())
        if suppressed is not None:
            extra = {"detail": detail} if detail else {}
            log.warning(
                event,
                client=client.name,
                source=host,
                reason=reason,
                suppressed=suppressed,
                **extra,
            )

    def drop(self, client: Client, host: str, reason: str, detail: str = "") -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1
        self._log_limited("radius_dropped", client, host, reason, detail)

    def refused(self, client: Client, host: str, reason: str, detail: str = "") -> None:
        """An authenticated request the bridge will not check (CHAP, EAP, bad password field):
        rejected, and logged like a drop (at most once per source and reason per second)."""
        self._log_limited("radius_refused", client, host, reason, detail)

    # -- Access-Request -------------------------------------------------------------------
    def access_request(
        self, endpoint: Endpoint, client: Client, packet: Packet, addr: Address
    ) -> None:
        host = addr[0]
        secret = client.secret
        fields = access_fields(packet)
        if packet.mac_offset >= 0:
            if not message_authenticator_ok(packet, secret):
                self.drop(client, host, "bad Message-Authenticator (wrong secret?)")
                return
            if client.require_message_authenticator == "auto":
                self.authenticators.learn(client.name, host)
        elif self.authenticators.required(client, host):
            self.drop(client, host, "no Message-Authenticator (required for this client)")
            return
        elif client.limit_proxy_state and fields.proxy_state:
            self.drop(client, host, "Proxy-State without Message-Authenticator")
            return
        key: Key = (host, addr[1], packet.identifier)
        seen = endpoint.dedup.check(key, packet.authenticator, self.loop.time())
        if seen.verdict is _IN_FLIGHT:
            log.debug("radius_duplicate_absorbed", client=client.name, source=host)
            return
        if seen.verdict is _REPLAY:
            assert seen.reply is not None
            endpoint.send(seen.reply, addr)
            log.debug("radius_duplicate_replayed", client=client.name, source=host)
            return
        pending = _new_tuple(Pending, (endpoint, client, packet, addr, key, fields.proxy_state))
        if fields.eap and self.eap is not None:
            self.eap.access_request(self, pending)  # bridge/radius/eap/frontend.py
            return
        user, hidden = fields.user_name, fields.user_password
        if fields.unsupported is not None or user is None or hidden is None:
            self.refused(client, host, fields.unsupported or "no User-Name or no User-Password")
            self.refuse(pending)
            return
        try:
            pin = Secret(decrypt_password(hidden, secret, packet.authenticator))
        except ProtocolError as exc:
            self.refused(client, host, exc.kind, str(exc))
            self.authenticator.record_bad_input(host)  # a malformed PIN counts, like in the core
            self.refuse(pending)
            return
        barcode = user.decode("utf-8", "replace")
        # One per NAS address: the same immutable value for all its requests. Keyed by the
        # address alone (a string, its hash kept): the client table gives an address one
        # client, and a reload that changes the table clears this memo.
        ctx = self.contexts.get(host)
        if ctx is None:
            if len(self.contexts) >= CONTEXT_MEMO:
                self.contexts.clear()
            ctx = self.contexts[host] = Context("radius", client.name, host, client.policy)
        # A cached PIN (a controller re-authenticating a laptop) is answered right here; only
        # a request that needs the store becomes a task.
        try:
            decision = self.authenticator.settle(barcode, pin, ctx)
            if decision is not None:
                self.decided(pending, decision)
                return
        except Exception as exc:  # noqa: BLE001 - logged; one request must not stop the listener
            self.failed(pending, exc)
            return
        task = self.loop.create_task(self.authenticator.authenticate(barcode, pin, ctx))
        self.tasks.add(task)
        task.add_done_callback(partial(self.task_done, pending))

    def task_done(self, pending: Pending, task: asyncio.Task[Decision]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            pending.endpoint.dedup.forget(pending.key, pending.packet.authenticator)
            return
        exc = task.exception()
        if exc is not None:
            self.failed(pending, exc)
            return
        self.decided(pending, task.result())

    def failed(self, pending: Pending, exc: BaseException) -> None:
        log.error("radius_auth_failed", client=pending.client.name, error=type(exc).__name__)
        pending.endpoint.dedup.forget(pending.key, pending.packet.authenticator)

    def decided(self, pending: Pending, decision: Decision) -> None:
        """Reply with the answer for the decision's outcome; the answer and its encoded
        attributes are looked up once per (client, outcome, category), not built per request."""
        client = pending.client
        patron = decision.patron
        category = patron.category if patron is not None else ""
        key = (client.name, decision.outcome, category)
        known = self.replies.get(key)
        if known is None:
            result = answer(decision, self.settings.store_unavailable)
            known = (result, self.reply_attributes(client, result, category))
            if len(self.replies) >= CONTEXT_MEMO:
                self.replies.clear()
            self.replies[key] = known
        self.reply(pending, known[0], known[1])

    def reply(self, pending: Pending, result: Answer, attributes: bytes) -> None:
        """Send `result` with `attributes` (Reply-Message and any accept attributes,
        pre-encoded) plus the request's Proxy-States; a reject waits out `reject_delay`."""
        packet = pending.packet
        code = result.code
        if code is None:
            pending.endpoint.dedup.forget(pending.key, packet.authenticator)
            reason = result.message or "store unavailable"  # SHED says "busy"
            log.info("radius_silent", client=pending.client.name, reason=reason)
            return
        self.respond(pending, code, attributes)

    def respond(self, pending: Pending, code: int, attributes: bytes) -> None:
        """Send reply `code` with `attributes` (pre-encoded) plus the request's Proxy-States,
        and record it for retransmissions; a reject waits out `reject_delay`. Every answer to
        an Access-Request goes through here (PAP, and each EAP round)."""
        packet = pending.packet
        if pending.proxy_state:
            proxy_states = packet.all(PROXY_STATE)
            attributes += encode_attributes((PROXY_STATE, value) for value in proxy_states)
        data = encode_reply(code, packet, attributes, pending.client.secret)
        delay = self.settings.reject_delay
        if code == ACCESS_REJECT and delay > 0:
            # A timer, not a sleeping task: the delay holds no worker, task or socket. Timers
            # that fire after shutdown find the transport closed and send nothing.
            self.loop.call_later(delay, self.send, pending, data)
            return
        # self.send, inlined: this is every immediate answer.
        endpoint = pending.endpoint
        transport = endpoint.transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, pending.addr)
        endpoint.dedup.complete(pending.key, packet.authenticator, data, self.loop.time())

    def refuse(self, pending: Pending) -> None:
        """Reject a request the server will not check (`answers.refusal`)."""
        result = refusal()
        self.reply(pending, result, self.reply_attributes(pending.client, result, ""))

    @staticmethod
    def reply_attributes(client: Client, result: Answer, category: str) -> bytes:
        """Reply-Message plus, on an accept, the client's attributes for the patron's
        category."""
        encoded = encode_attributes([(REPLY_MESSAGE, result.message.encode("utf-8"))])
        if result.patron_attributes:
            encoded += client.attributes_for(category)
        return encoded

    def send(self, pending: Pending, data: bytes) -> None:
        pending.endpoint.send(data, pending.addr)
        pending.endpoint.dedup.complete(
            pending.key, pending.packet.authenticator, data, self.loop.time()
        )

    # -- Status-Server (RFC 5997) -----------------------------------------------------------
    def status_server(
        self, endpoint: Endpoint, client: Client, packet: Packet, addr: Address
    ) -> None:
        if not message_authenticator_ok(packet, client.secret):
            self.drop(client, addr[0], "Status-Server without a valid Message-Authenticator")
            return
        if not self.settings.status_server:
            return
        healthy = self.health.get(self.loop.time())
        if healthy is None:
            task = self.loop.create_task(self.probe_then_answer(endpoint, client, packet, addr))
            self.tasks.add(task)
            task.add_done_callback(self.reap)
            return
        self.answer_status(endpoint, client, packet, addr, healthy)

    async def probe_then_answer(
        self, endpoint: Endpoint, client: Client, packet: Packet, addr: Address
    ) -> None:
        if self.health_probe is None or self.health_probe.done():
            self.health_probe = self.loop.create_task(self.probe())
        healthy = await asyncio.shield(self.health_probe)
        self.answer_status(endpoint, client, packet, addr, healthy)

    async def probe(self) -> bool:
        try:
            async with asyncio.timeout(self.settings.health_timeout):
                health = await self.authenticator.health()
        except (TimeoutError, StoreError) as exc:  # any store failure means "do not answer"
            log.warning("radius_health_failed", error=type(exc).__name__)
            ok = False
        else:
            ok = health.ok
        self.health.put(ok, self.loop.time())
        return ok

    def reap(self, task: asyncio.Task[Any]) -> None:
        """Forget a finished background task, logging (by type only) an error it ended with."""
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("radius_task_failed", error=type(task.exception()).__name__)

    def answer_status(
        self, endpoint: Endpoint, client: Client, packet: Packet, addr: Address, healthy: bool
    ) -> None:
        if not healthy:
            log.info("radius_status_silent", client=client.name, reason="store unhealthy")
            return
        message = encode_attributes([(REPLY_MESSAGE, b"Patron Bridge: store reachable")])
        endpoint.send(encode_reply(ACCESS_ACCEPT, packet, message, client.secret), addr)

    # -- Accounting-Request (RFC 2866) ------------------------------------------------------
    def accounting_request(
        self, endpoint: Endpoint, client: Client, packet: Packet, addr: Address
    ) -> None:
        host = addr[0]
        if packet.mac_offset >= 0 and not message_authenticator_ok(packet, client.secret):
            self.drop(client, host, "bad Message-Authenticator (wrong secret?)")
            return
        if not accounting_authenticator_ok(packet, client.secret):
            self.drop(client, host, "bad accounting Request Authenticator (wrong secret?)")
            return
        # Accounting and access share the Identifier space per RFC, but keep them apart anyway.
        key: Key = (host, addr[1], 0x100 | packet.identifier)
        seen = endpoint.dedup.check(key, packet.authenticator, self.loop.time())
        if seen.verdict is _REPLAY:
            assert seen.reply is not None
            endpoint.send(seen.reply, addr)
            return
        if seen.verdict is _IN_FLIGHT:
            return
        # The audit line is queued before the response leaves: once the NAS hears the answer
        # it discards its copy, so the record must already be ours.
        self.audit.event(
            "accounting",
            barcode=accounting.user_name(packet),
            protocol="radius",
            client=client.name,
            source=host,
            **accounting.summary(packet),
        )
        attributes = encode_attributes((PROXY_STATE, v) for v in packet.all(PROXY_STATE))
        data = encode_reply(
            ACCOUNTING_RESPONSE,
            packet,
            attributes,
            client.secret,
            message_authenticator=packet.mac_offset >= 0,
        )
        endpoint.send(data, addr)
        endpoint.dedup.complete(key, packet.authenticator, data, self.loop.time())

    # -- life -------------------------------------------------------------------------------
    async def aclose(self) -> None:
        if self.eap is not None:
            self.eap.close()
        for endpoint in self.endpoints:
            if endpoint.transport is not None:
                endpoint.transport.close()
        tasks = list(self.tasks)
        if self.health_probe is not None:
            tasks.append(self.health_probe)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass(slots=True)
class RadiusListener:
    server: RadiusServer
    name: str = "radius"
    addresses: list[str] = field(default_factory=list)

    async def aclose(self) -> None:
        await self.server.aclose()


def _same(endpoint: Endpoint) -> Endpoint:
    return endpoint


def _format(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(settings: RadiusSettings, services: Services) -> RadiusListener:
    loop = asyncio.get_running_loop()
    server = RadiusServer(
        settings=settings,
        authenticator=services.authenticator,
        audit=services.audit,
        clients=ClientTable(build_client(spec, services) for spec in settings.clients),
        loop=loop,
        health=HealthCache(settings.health_ttl),
    )
    if settings.eap is not None:
        server.eap = eap_frontend.start(settings.eap, services.config, loop)
        if services.radius_fds and services.worker is not None:
            server.eap.state_prefix = bytes([services.worker])  # steered to this worker
    listener = RadiusListener(server)
    if not settings.clients:
        log.warning("radius_no_clients", detail="every packet will be dropped")
    try:
        for index, spec in enumerate(settings.listen):
            host, port = parse_listen(spec)
            endpoint = Endpoint(
                server, DuplicateCache(settings.duplicate_window, settings.duplicate_max_entries)
            )
            fd = services.radius_fds.get(index)
            if fd is not None:  # bound and steered by the supervisor
                transport, _ = await loop.create_datagram_endpoint(
                    partial(_same, endpoint), sock=socket.socket(fileno=fd)
                )
            else:
                transport, _ = await loop.create_datagram_endpoint(
                    partial(_same, endpoint),
                    local_addr=(host, port),
                    reuse_port=services.reuse_port or None,
                )
            endpoint.transport = transport  # uvloop calls connection_made a little later
            endpoint.address = _format(transport.get_extra_info("sockname"))
            server.endpoints.append(endpoint)
            listener.addresses.append(endpoint.address)
    except BaseException:
        await server.aclose()
        raise
    log.info("radius_listening", addresses=listener.addresses, clients=len(server.clients))
    return listener
