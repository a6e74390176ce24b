"""An in-memory EAP-TTLS/PAP peer on pyOpenSSL: the supplicant's side of `Conversation`, for
tests that drive the state machine without sockets (eapol_test covers the real supplicant)."""

from __future__ import annotations

from pathlib import Path

from OpenSSL import SSL
from OpenSSL._util import lib

from bridge.radius.eap import avp, codec
from bridge.radius.eap.codec import Eap
from bridge.radius.eap.fragments import Fragmenter, Reassembler


def client_context(ca: Path, tls13: bool = False) -> SSL.Context:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_3_VERSION if tls13 else SSL.TLS1_2_VERSION)
    ctx.load_verify_locations(str(ca))
    ctx.set_verify(SSL.VERIFY_PEER, lambda *_: bool(_[-1]))
    return ctx


class Peer:
    """TTLS/PAP by default; `peap=True` answers as a PEAPv0/EAP-GTC peer (hdr-less inner EAP,
    Result TLV with a full header)."""

    method = codec.TTLS

    def __init__(
        self,
        ca: Path,
        user: bytes,
        password: bytes,
        fragment: int = 1000,
        tls13: bool = False,
        *,
        ctx: SSL.Context | None = None,
        session: SSL.Session | None = None,
        inner_on_resume: bool = False,
    ) -> None:
        """`ctx` shared between peers and `session` from an earlier one (made with the same
        ctx) to resume; a resumed TTLS peer skips its inner PAP, as wpa_supplicant does, unless
        `inner_on_resume`."""
        self.inner_on_resume = inner_on_resume
        self.conn = SSL.Connection(ctx or client_context(ca, tls13), None)
        self.conn.set_connect_state()
        if session is not None:
            self.conn.set_session(session)
        self.out = Fragmenter()
        self.inbox = Reassembler(1 << 16)
        self.fragment = fragment
        self.user, self.password = user, password
        self.sent_inner = False
        self.failed: str | None = None
        self.fragments_sent = 0
        self.acks_sent = 0
        self.inner_result: int | None = None

    def respond(self, request: Eap) -> Eap:
        payload = codec.decode_tls(request.data)
        if payload.flags & codec.FLAG_START:
            self._handshake()
        elif self.out.busy:
            assert not payload.data  # the server's ACK
        else:
            message = self.inbox.feed(payload)
            if message is None:
                self.acks_sent += 1
                return self._reply(codec.encode_tls(0, b""), request)
            self.conn.bio_write(message)
            if self.method == codec.PEAP and self.conn.get_peer_finished() is not None:
                plain = self._read()
                if plain:
                    self.out.load(self._peap_answer(plain))
                    return self._reply(self.out.next(0, self.fragment), request)
            self._handshake()
        if not self.out.busy:
            self.out.load(b"")
        if self.out.busy and len(self.out.pending) - self.out.offset > self.fragment:
            self.fragments_sent += 1
        return self._reply(self.out.next(0, self.fragment), request)

    def _read(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.conn.recv(16384)
            except (SSL.WantReadError, SSL.ZeroReturnError):
                return out

    def _peap_answer(self, plain: bytes) -> bytes:
        if plain[0] == codec.REQUEST and len(plain) > 4 and plain[4] == 33:  # Result TLV
            self.inner_result = int.from_bytes(plain[-2:], "big")
            answer = Eap(codec.RESPONSE, plain[1], 33, plain[5:]).encode()
        elif plain[0] == codec.IDENTITY:
            answer = bytes([codec.IDENTITY]) + self.user
        elif plain[0] == codec.GTC:
            answer = bytes([codec.GTC]) + self.password
        else:
            answer = bytes([codec.NAK, codec.GTC])
        self.conn.send(answer)
        return self._drain()

    def _handshake(self) -> None:
        try:
            self.conn.do_handshake()
            if self.method == codec.PEAP:
                self.sent_inner = True  # PEAP: the server speaks first in phase 2
            if not self.sent_inner and (self.inner_on_resume or not self.resumed):
                self.sent_inner = True
                self.conn.send(
                    avp.encode(
                        [
                            avp.Avp(avp.USER_NAME, 0, self.user),
                            avp.Avp(avp.USER_PASSWORD, 0, self.password),
                        ]
                    )
                )
        except SSL.WantReadError:
            pass
        except SSL.Error as exc:
            self.failed = str(exc)
        self.out.load(self._drain())

    def keep_session(self) -> SSL.Session:
        """The session to resume later. The connection is marked closed first: OpenSSL makes a
        session unresumable when a connection still open is freed with it."""
        self.conn.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        return self.conn.get_session()

    @property
    def resumed(self) -> bool:
        return bool(lib.SSL_session_reused(self.conn._ssl))

    def _drain(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.conn.bio_read(16384)
            except SSL.WantReadError:
                return out

    def _reply(self, payload: bytes, request: Eap) -> Eap:
        return Eap(codec.RESPONSE, request.identifier, self.method, payload)

    def msk(self) -> bytes:
        """RFC 5281 (TTLS) or PEAPv0's label on TLS 1.2; RFC 9427 (common label, the Type-Code
        as context) on TLS 1.3."""
        if self.conn.get_protocol_version() == SSL.TLS1_3_VERSION:
            context = bytes([self.method])
            material = self.conn.export_keying_material(
                b"EXPORTER_EAP_TLS_Key_Material", 128, context
            )
        elif self.method == codec.PEAP:
            material = self.conn.export_keying_material(b"client EAP encryption", 128)
        else:
            material = self.conn.export_keying_material(b"ttls keying material", 128)
        return bytes(material)[:64]


class PeapPeer(Peer):
    method = codec.PEAP
