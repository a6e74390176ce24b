"""One EAP-TTLS/PAP conversation as a state machine: EAP packets in, steps out.

Pure apart from OpenSSL doing the TLS work in memory: no clock (the table passes `now`), no
sockets, no RADIUS. The adapter turns a `Challenge` into an Access-Challenge, asks the core
authenticator on `Authenticate` and calls `finish` with its decision, and turns `Fail` into an
Access-Reject with EAP-Failure. The outer identity is only kept for logs: the barcode is the
inner User-Name.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from bridge.radius.eap import avp, codec
from bridge.radius.eap.codec import Eap
from bridge.radius.eap.fragments import Fragmenter, Reassembler
from bridge.radius.eap.tunnel import Tunnel
from bridge.radius.packet import ProtocolError

VERSION: Final = 0  # TTLSv0


class Phase(enum.Enum):
    STARTED = "started"  # TTLS Start sent
    HANDSHAKE = "handshake"
    INNER = "inner"  # tunnel up, waiting for the AVPs
    DECIDING = "deciding"  # the authenticator has the inner PAP pair
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Challenge:
    eap: bytes


@dataclass(frozen=True, slots=True)
class Authenticate:
    user_name: bytes
    password: bytes


@dataclass(frozen=True, slots=True)
class Fail:
    reason: str  # for the log: fixed text, no values from the peer but method names
    eap: bytes


@dataclass(frozen=True, slots=True)
class Discard:
    reason: str


@dataclass(frozen=True, slots=True)
class Succeed:
    eap: bytes
    msk: bytes


Step = Challenge | Authenticate | Fail | Discard


class Conversation:
    __slots__ = (
        "client",
        "fragmenter",
        "identity",
        "last_id",
        "max_rounds",
        "phase",
        "reassembler",
        "rounds",
        "state",
        "touched",
        "tunnel",
    )

    def __init__(
        self,
        state: bytes,
        client: str,
        tunnel: Tunnel,
        *,
        max_message: int,
        max_rounds: int,
        now: float,
    ) -> None:
        self.state = state
        self.client = client
        self.tunnel = tunnel
        self.reassembler = Reassembler(max_message)
        self.fragmenter = Fragmenter()
        self.max_rounds = max_rounds
        self.rounds = 0
        self.phase = Phase.STARTED
        self.last_id = 0
        self.identity = b""
        self.touched = now

    # -- steps ----------------------------------------------------------------------------
    def start(self, identity: Eap) -> Challenge:
        """Answer the peer's EAP-Response/Identity with the TTLS Start."""
        self.identity = identity.data[:253]
        self.last_id = identity.identifier
        return Challenge(self._request(codec.encode_tls(codec.FLAG_START | VERSION, b"")))

    def step(self, eap: Eap, fragment: int) -> Step:
        """One EAP-Response; `fragment` is this round's TLS data size (from Framed-MTU)."""
        if eap.code != codec.RESPONSE or eap.identifier != self.last_id:
            return Discard("EAP identifier or code does not match the last request")
        if self.phase in (Phase.DECIDING, Phase.DONE):
            return Discard("EAP response while the conversation is being decided")
        self.rounds += 1
        if self.rounds > self.max_rounds:
            return self._fail("too many rounds")
        if eap.kind == codec.NAK:
            offered = ", ".join(codec.method_name(k) for k in codec.nak_types(eap.data)) or "none"
            return self._fail(
                f"peer refused EAP-TTLS and asked for {offered}; only EAP-TTLS with inner PAP"
                " is offered (PINs are not stored in clear, so MSCHAPv2 cannot work)"
            )
        if eap.kind != codec.TTLS:
            return self._fail(f"unexpected {codec.method_name(eap.kind or 0)} response")
        try:
            return self._ttls(codec.decode_tls(eap.data), fragment)
        except ProtocolError as exc:
            return self._fail(exc.kind)

    def _ttls(self, payload: codec.TlsPayload, fragment: int) -> Step:
        if self.fragmenter.busy:
            if payload.data or payload.more:
                return self._fail("peer sent data while the server's fragments were pending")
            return Challenge(self._request(self.fragmenter.next(VERSION, fragment)))
        message = self.reassembler.feed(payload)
        if message is None:  # acknowledge the peer's fragment
            return Challenge(self._request(codec.encode_tls(VERSION, b"")))
        if not message:
            return self._fail("empty TLS message")
        if self.phase is Phase.INNER:
            _, plain = self.tunnel.receive(message)
            return self._inner(plain)
        self.phase = Phase.HANDSHAKE
        out, plain = self.tunnel.receive(message)
        if self.tunnel.established:
            self.phase = Phase.INNER
            if plain:
                return self._inner(plain)
            if not out:  # TLS 1.3: the peer's Finished alone; ask for the tunnelled request
                return Challenge(self._request(codec.encode_tls(VERSION, b"")))
        if not out:
            return self._fail("TLS handshake stalled")
        self.fragmenter.load(out)
        return Challenge(self._request(self.fragmenter.next(VERSION, fragment)))

    def _inner(self, plain: bytes) -> Step:
        if not plain:
            return self._fail("no tunnelled request")
        request = avp.inner_request(avp.decode(plain))
        if request.refused is not None:
            return self._fail(
                f"{request.refused} is not supported: use EAP-TTLS with PAP inside"
                " (PINs are not stored in clear)"
            )
        assert request.user_name is not None and request.password is not None
        self.phase = Phase.DECIDING
        return Authenticate(request.user_name, request.password)

    def finish(self, accepted: bool) -> Succeed | Fail:
        """The authenticator's answer to the inner PAP pair."""
        self.phase = Phase.DONE
        if not accepted:
            return Fail("inner PAP rejected", Eap(codec.FAILURE, self.last_id).encode())
        msk = self.tunnel.keying_material()[:64]
        return Succeed(Eap(codec.SUCCESS, self.last_id).encode(), msk)

    # -- helpers ----------------------------------------------------------------------------
    def _request(self, payload: bytes) -> bytes:
        """An EAP-Request/TTLS with the next identifier (retransmissions are the NAS's job);
        the peer's response must carry it, and Success/Failure repeat it."""
        self.last_id = (self.last_id + 1) % 256
        return Eap(codec.REQUEST, self.last_id, codec.TTLS, payload).encode()

    def _fail(self, reason: str) -> Fail:
        self.phase = Phase.DONE
        return Fail(reason, Eap(codec.FAILURE, self.last_id).encode())
