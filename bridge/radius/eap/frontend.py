"""The adapter between the UDP server and the EAP state machines.

The server hands over every authenticated Access-Request that carries EAP-Message (after its
Message-Authenticator, client and duplicate checks). Here: the EAP packet is joined from its
attributes, its conversation found by State (or opened for an EAP-Response/Identity, within
the limits), stepped, and the step becomes an Access-Challenge, an Access-Accept with EAP-Success
and the MPPE keys, or an Access-Reject with EAP-Failure. The inner PAP pair goes to the same
`Authenticator` as plain RADIUS PAP, with protocol `radius-eap`; the reject delay is applied once,
to the final Access-Reject.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog
from OpenSSL import SSL

from bridge.config import Config, ConfigError
from bridge.core.patron import ACCEPTED, Context, Decision
from bridge.core.secret import Secret
from bridge.radius.answers import Answer, answer
from bridge.radius.eap import codec
from bridge.radius.eap.conversation import (
    Authenticate,
    Challenge,
    Conversation,
    Discard,
    Fail,
    Resume,
    Step,
    Succeed,
)
from bridge.radius.eap.fragments import fragment_size
from bridge.radius.eap.mppe import key_attributes
from bridge.radius.eap.realm import realm_of
from bridge.radius.eap.resumption import ResumptionCache
from bridge.radius.eap.settings import EapSettings
from bridge.radius.eap.table import ConversationTable
from bridge.radius.eap.tunnel import Tunnel, server_context
from bridge.radius.packet import (
    ACCESS_ACCEPT,
    ACCESS_CHALLENGE,
    ACCESS_REJECT,
    EAP_MESSAGE,
    REPLY_MESSAGE,
    USER_NAME,
    ProtocolError,
    encode_attributes,
)

if TYPE_CHECKING:
    from bridge.radius.server import Pending, RadiusServer

log = structlog.get_logger("bridge.radius.eap")

STATE: Final = 24
FRAMED_MTU: Final = 12
PROTOCOL: Final = "radius-eap"
REFUSED_MESSAGE: Final = (
    "This network accepts EAP-TTLS with PAP (card number and PIN) only; MSCHAPv2 cannot work."
)
BUSY_MESSAGE: Final = "Service busy. Please try again shortly."


@dataclass(slots=True)
class EapFrontEnd:
    settings: EapSettings
    context: SSL.Context
    table: ConversationTable
    peap_context: SSL.Context | None = None  # its own context (and session cache)
    # TTLS sessions that may resume, with the card each authorised (None: TTLS never resumes)
    resumption: ResumptionCache | None = None
    random: Callable[[int], bytes] = os.urandom
    # A worker of `[server] workers = N` on a steered socket starts every State with its index,
    # so each round of a conversation reaches it (bridge.radius.steering).
    state_prefix: bytes = b""
    contexts: dict[tuple[str, str, bytes], Context] = field(default_factory=dict)
    sweeper: asyncio.TimerHandle | None = None
    # Framed-MTU value (its four octets, or None) -> TLS data octets per EAP packet: a NAS
    # sends the same one every round
    sizes: dict[bytes | None, int] = field(default_factory=dict)
    # PEAP's tunnel maker, made once (a conversation switches to it after a Nak)
    peap: Callable[[], Tunnel] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.peap_context is not None:
            self.peap = partial(Tunnel, self.peap_context)

    # -- entry from the server ------------------------------------------------------------
    def access_request(self, server: RadiusServer, pending: Pending) -> None:
        packet, client, host = pending.packet, pending.client, pending.addr[0]
        if packet.mac_offset < 0:  # RFC 3579 3.3: EAP-Message without it is silently dropped
            server.drop(client, host, "EAP-Message without Message-Authenticator")
            pending.endpoint.dedup.forget(pending.key, packet.authenticator)
            return
        now = server.loop.time()
        parts: list[bytes] = []
        state = framed = None
        for kind, value in packet.attributes:  # one pass for the three this needs
            if kind == EAP_MESSAGE:
                parts.append(value)
            elif kind == STATE:
                state = value if state is None else state
            elif kind == FRAMED_MTU:
                framed = value if framed is None else framed
        try:
            eap = codec.decode(parts[0] if len(parts) == 1 else b"".join(parts))
        except ProtocolError as exc:
            self.reject(server, pending, None, f"malformed EAP: {exc.kind}", REFUSED_MESSAGE)
            return
        size = self.sizes.get(framed)
        if size is None:
            size = self.fragment(framed)
        if state is None:
            self.open(server, pending, eap, now)
            return
        conversation = self.table.get(state, client.name, now)
        if conversation is None:
            self.reject(server, pending, None, "unknown or expired EAP conversation", BUSY_MESSAGE)
            return
        try:
            step = conversation.step(eap, size)
        except Exception as exc:  # noqa: BLE001 - by type only; one peer must not stop the rest
            log.error("radius_eap_step_failed", client=client.name, error=type(exc).__name__)
            step = Fail("internal error", codec.Eap(codec.FAILURE, eap.identifier).encode())
        self.act(server, pending, conversation, step)

    def fragment(self, framed: bytes | None) -> int:
        """`fragment_size` for a Framed-MTU value, remembered (a few distinct values at most:
        bounded all the same, since the value is the NAS's)."""
        mtu = int.from_bytes(framed, "big") if framed is not None and len(framed) == 4 else None
        size = fragment_size(self.settings.fragment_size, mtu)
        if len(self.sizes) >= 64:
            self.sizes.clear()
        self.sizes[framed] = size
        return size

    def open(self, server: RadiusServer, pending: Pending, eap: codec.Eap, now: float) -> None:
        client = pending.client
        if eap.code != codec.RESPONSE or eap.kind != codec.IDENTITY:
            self.reject(server, pending, None, "EAP conversation must open with an Identity")
            return
        full = self.table.room_for(client.name, now)
        if full is not None:
            self.reject(server, pending, None, full, BUSY_MESSAGE)
            return
        conversation = Conversation(
            self.state_prefix + self.random(16),
            client.name,
            Tunnel(self.context),
            max_message=self.settings.max_message,
            max_rounds=self.settings.max_rounds,
            now=now,
            peap=self.peap,
        )
        self.table.add(conversation, now)
        self.act(server, pending, conversation, conversation.start(eap))

    def act(
        self, server: RadiusServer, pending: Pending, conversation: Conversation, step: Step
    ) -> None:
        if type(step) is Challenge:  # most rounds: one type test, not a class pattern's match
            self.challenge(server, pending, conversation, step.eap)
            return
        match step:
            case Challenge(eap=eap):
                self.challenge(server, pending, conversation, eap)
            case Discard(reason=reason):
                server.drop(pending.client, pending.addr[0], reason)
                pending.endpoint.dedup.forget(pending.key, pending.packet.authenticator)
            case Fail(reason=reason, eap=eap):
                self.table.remove(conversation.state)
                if self.resumption is not None and conversation.tunnel.established:
                    # a session refused once (resumed or not) is never resumed afterwards
                    self.resumption.forget(conversation.tunnel.session_key())
                verdict = conversation.verdict  # PEAP: the decision sent in the Result TLV
                message = verdict[0].message if verdict is not None else REFUSED_MESSAGE
                self.reject(server, pending, eap, reason, message)
            case Succeed():
                self.table.remove(conversation.state)
                result, decision, barcode = conversation.verdict
                self.resumable(conversation, barcode, server.loop.time())
                self.accept(server, pending, step, result, decision, barcode)
            case Authenticate(user_name=user, password=password):
                self.authenticate(server, pending, conversation, user, password)
            case Resume(key=key):
                self.resume(server, pending, conversation, key)

    def challenge(
        self, server: RadiusServer, pending: Pending, conversation: Conversation, eap: bytes
    ) -> None:
        state = conversation.state
        attributes = codec.message_attributes(eap) + bytes((STATE, len(state) + 2)) + state
        server.respond(pending, ACCESS_CHALLENGE, attributes)

    # -- TTLS resumption ----------------------------------------------------------------------
    def resumable(self, conversation: Conversation, barcode: str, now: float) -> None:
        """After an Access-Accept: keep the TLS session for resumption. A TTLS session is
        remembered with the card its inner PAP accepted (a resumed one keeps its first
        authentication's lifetime); a session not kept is dropped by OpenSSL when freed."""
        if conversation.method == codec.PEAP:
            return  # kept by the conversation after the peer's Result TLV
        if self.resumption is None:
            return
        if not conversation.resumed:
            key = conversation.tunnel.session_key()
            if key is None:
                return
            self.resumption.remember(key, barcode, conversation.client, now)
        conversation.tunnel.keep_session()

    def resume(
        self, server: RadiusServer, pending: Pending, conversation: Conversation, key: bytes | None
    ) -> None:
        """A resumed TTLS tunnel: the card its session authorised, asked for its standing now."""
        now = server.loop.time()
        remembered = None
        if self.resumption is not None:
            remembered = self.resumption.recall(key, conversation.client, now)
        if remembered is None:  # never authorised here, expired, or another client's
            self.act(server, pending, conversation, conversation.finish(False))
            return
        ctx = self.context_for(pending, conversation)
        barcode = remembered.barcode
        auth = server.authenticator
        self.decide(
            server,
            pending,
            conversation,
            barcode,
            partial(auth.settle_resumed, barcode, ctx),
            partial(auth.resumed, barcode, ctx),
        )

    def context_for(self, pending: Pending, conversation: Conversation) -> Context:
        """The core's Context for this client, source and outer realm (cached: one per
        combination, so the audit's fragment cache hits)."""
        client, host = pending.client, pending.addr[0]
        key = (client.name, host, conversation.identity)  # the realm is parsed once per identity
        ctx = self.contexts.get(key)
        if ctx is None:
            if len(self.contexts) >= 4096:
                self.contexts.clear()
            realm = realm_of(conversation.identity)
            ctx = self.contexts[key] = Context(PROTOCOL, client.name, host, client.policy, realm)
        return ctx

    # -- inner PAP --------------------------------------------------------------------------
    def authenticate(
        self,
        server: RadiusServer,
        pending: Pending,
        conversation: Conversation,
        user: bytes,
        password: bytes,
    ) -> None:
        barcode = user.decode("utf-8", "replace")
        pin = Secret(password)
        ctx = self.context_for(pending, conversation)
        auth = server.authenticator
        self.decide(
            server,
            pending,
            conversation,
            barcode,
            partial(auth.settle, barcode, pin, ctx),
            partial(auth.authenticate, barcode, pin, ctx),
        )

    def decide(
        self,
        server: RadiusServer,
        pending: Pending,
        conversation: Conversation,
        barcode: str,
        now: Callable[[], Decision | None],
        later: Callable[[], Coroutine[Any, Any, Decision]],
    ) -> None:
        """The core's answer for this conversation: `now` (a card verified within cache.ttl,
        answered here without a task) or, when it has none, `later` in a task."""
        done = partial(self.decided, server, pending, conversation, barcode)
        try:
            decision = now()
        except Exception as exc:  # noqa: BLE001 - logged by type; one request must not stop us
            self.failed(server, pending, conversation, exc)
            return
        if decision is not None:
            done(decision)
            return
        task = server.loop.create_task(later())
        server.tasks.add(task)
        task.add_done_callback(partial(self.task_done, server, pending, conversation, done))

    def task_done(
        self,
        server: RadiusServer,
        pending: Pending,
        conversation: Conversation,
        done: Callable[[Decision], None],
        task: asyncio.Task[Decision],
    ) -> None:
        server.tasks.discard(task)
        if task.cancelled():
            self.table.remove(conversation.state)
            return
        exc = task.exception()
        if exc is not None:
            self.failed(server, pending, conversation, exc)
            return
        done(task.result())

    def failed(
        self, server: RadiusServer, pending: Pending, conversation: Conversation, exc: BaseException
    ) -> None:
        log.error("radius_eap_auth_failed", client=pending.client.name, error=type(exc).__name__)
        self.table.remove(conversation.state)
        pending.endpoint.dedup.forget(pending.key, pending.packet.authenticator)

    def decided(
        self,
        server: RadiusServer,
        pending: Pending,
        conversation: Conversation,
        barcode: str,
        decision: Decision,
    ) -> None:
        result: Answer = answer(decision, server.settings.store_unavailable)
        if result.code is None:  # store unavailable, silent: the NAS fails over
            self.table.remove(conversation.state)
            pending.endpoint.dedup.forget(pending.key, pending.packet.authenticator)
            log.info("radius_silent", client=pending.client.name, reason="store unavailable")
            return
        try:
            outcome = conversation.finish(decision.outcome is ACCEPTED, (result, decision, barcode))
        except ProtocolError as exc:
            self.table.remove(conversation.state)
            self.reject(server, pending, None, exc.kind, result.message)
            return
        self.act(server, pending, conversation, outcome)

    # -- replies ----------------------------------------------------------------------------
    def accept(
        self,
        server: RadiusServer,
        pending: Pending,
        success: Succeed,
        result: Answer,
        decision: Decision,
        barcode: str,
    ) -> None:
        client, packet = pending.client, pending.packet
        keys = key_attributes(success.msk, client.secret, packet.authenticator, self.random)
        attributes = [(REPLY_MESSAGE, result.message.encode("utf-8"))]
        if self.settings.accept_user_name:
            attributes.append((USER_NAME, barcode.encode("utf-8")[:253]))
        category = decision.patron.category if decision.patron is not None else ""
        extra = client.attributes_for(category) if result.patron_attributes else b""
        encoded = b"".join(
            (codec.message_attributes(success.eap), keys, encode_attributes(attributes), extra)
        )
        server.respond(pending, ACCESS_ACCEPT, encoded)

    def reject(
        self,
        server: RadiusServer,
        pending: Pending,
        eap: bytes | None,
        reason: str,
        message: str = REFUSED_MESSAGE,
    ) -> None:
        if reason:
            server.refused(pending.client, pending.addr[0], reason)
        if eap is None:  # no conversation yet: an EAP-Failure with the response's identifier
            raw = b"".join(pending.packet.all(EAP_MESSAGE))
            identifier = raw[1] if len(raw) > 1 else 0
            eap = codec.Eap(codec.FAILURE, identifier).encode()
        reply = encode_attributes([(REPLY_MESSAGE, message.encode("utf-8"))])
        server.respond(pending, ACCESS_REJECT, codec.message_attributes(eap) + reply)

    def start_sweeper(self, loop: asyncio.AbstractEventLoop) -> None:
        """Forget idle conversations even when no packet arrives to expire them."""
        self.table.expire(loop.time())
        self.sweeper = loop.call_later(self.settings.timeout, self.start_sweeper, loop)

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.table.clear()
        if self.resumption is not None:
            self.resumption.clear()


def build(settings: EapSettings, resolve: Callable[[str], Path]) -> EapFrontEnd:
    """The front end from config; a certificate, DH file or group list that will not load is
    an OSError/SSL.Error/ValueError.

    TTLS and PEAP get a context each (each its own session cache): a resumed PEAP tunnel still
    runs EAP-GTC, a resumed TTLS tunnel skips the inner PAP (as wpa_supplicant does), so
    it is accepted only through `resumption` (the card its full authentication accepted)."""
    ca = resolve(settings.ca) if settings.ca else None
    files = (resolve(settings.certificate), resolve(settings.key), ca)
    version, lifetime = settings.tls_max_version, settings.resumption_lifetime
    dh = resolve(settings.dh) if settings.dh else None
    # TTLS resumes on TLS 1.2 only: a session is named by its master secret, which a TLS 1.3
    # resumption does not keep (`Tunnel.session_key`).
    ttls_lifetime = lifetime if version == "1.2" else 0
    context = server_context(*files, version, ttls_lifetime, dh, settings.groups)
    resumption = ResumptionCache(ttls_lifetime) if ttls_lifetime else None
    peap_context = None
    if settings.peap:
        peap_context = server_context(*files, version, lifetime, dh, settings.groups)
    table = ConversationTable(settings.max_conversations, settings.max_per_client, settings.timeout)
    return EapFrontEnd(settings, context, table, peap_context, resumption)


def load_error(exc: BaseException) -> str:
    """One line naming the setting that failed (`dh` and `groups` errors say so themselves)."""
    if isinstance(exc, ValueError) and str(exc).startswith("radius.eap."):
        return str(exc)
    return f"radius.eap.certificate: cannot load: {type(exc).__name__}: {exc}"


def describe(front: EapFrontEnd) -> dict[str, Any]:
    return {"conversations": len(front.table)}


def start(settings: EapSettings, config: Config, loop: asyncio.AbstractEventLoop) -> EapFrontEnd:
    """Build from `[radius.eap]` (paths relative to the config file) and start expiring."""
    try:
        front = build(settings, config.path)
    except (OSError, SSL.Error, ValueError) as exc:
        raise ConfigError(f"{config.source}: {load_error(exc)}") from None
    front.start_sweeper(loop)
    methods = ["EAP-TTLS/PAP", "PEAPv0/EAP-GTC"] if settings.peap else ["EAP-TTLS/PAP"]
    log.info("radius_eap_ready", methods=methods, tls_max=settings.tls_max_version)
    return front
