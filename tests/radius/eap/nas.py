"""A NAS with many EAP-TTLS/PAP supplicants: `run` keeps WINDOW conversations in flight over
UDP (tests/radius/eap/peer.py as the supplicant, Access-Requests with Message-Authenticator),
for the benchmark (bench/eap.py) and the memory test. `abandon` opens conversations and leaves
them halfway (ClientHello sent, the server's flight never answered)."""

from __future__ import annotations

import os
import selectors
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL

from bridge.radius import packet as rp
from bridge.radius.eap import codec
from tests.radius.eap.peer import Peer, client_context

STATE = 24
CALLING_STATION_ID = 31
OUTER = b"anonymous@library.example"


@dataclass
class Conversation:
    """One supplicant's EAP-TTLS/PAP run over RADIUS."""

    peer: Peer
    sock: socket.socket
    started: float
    secret: bytes
    ident: int = 0
    state: bytes | None = None
    authenticator: bytes = b""
    last: bytes = b""  # the request, for a retransmission (RFC 5080: the same packet)
    station: bytes | None = None  # Calling-Station-Id: the device's MAC, as access points send

    def send(self, eap: bytes) -> None:
        self.ident = (self.ident + 1) % 256
        self.authenticator = os.urandom(16)
        attrs = [(rp.USER_NAME, OUTER), (12, (1400).to_bytes(4, "big"))]
        if self.station is not None:
            attrs.append((CALLING_STATION_ID, self.station))
        attrs += [(rp.EAP_MESSAGE, part) for part in codec.split_attributes(eap)]
        if self.state is not None:
            attrs.append((STATE, self.state))
        self.last = rp.encode_request(
            rp.ACCESS_REQUEST, self.ident, self.authenticator, attrs, self.secret
        )
        self.sock.send(self.last)

    def answer(self, data: bytes) -> bool | None:
        """The server's reply: True accepted, False refused, None: the conversation goes on."""
        if data[1] != self.ident:  # a late duplicate of an earlier reply (after a retransmission)
            return None
        if not rp.reply_ok(data, self.authenticator, self.secret):
            raise RuntimeError("reply authenticator mismatch")
        packet = rp.decode(data)
        if packet.code == rp.ACCESS_ACCEPT:
            return True
        if packet.code != rp.ACCESS_CHALLENGE:
            return False
        self.state = packet.get(STATE)
        request = codec.decode(b"".join(packet.all(rp.EAP_MESSAGE)))
        self.send(self.peer.respond(request).encode())
        return None


def run(
    address: tuple[str, int],
    ca: Path,
    patrons: list[tuple[str, str]],
    count: int,
    ctx: SSL.Context,
    sessions: list[SSL.Session] | None = None,
    *,
    secret: bytes,
    window: int = 8,
    patience: float = 5,
    stations: list[bytes] | None = None,
) -> tuple[int, list[float], list[SSL.Session], int]:
    """`count` authentications of `patrons` ((barcode, PIN) pairs), `window` at a time; each
    resumes one of `sessions` when given. (accepted, latencies, sessions kept, resumed).
    `patience`: seconds without any answer before the requests in flight are sent again
    (three times at most; longer for a daemon under valgrind verifying PINs). `stations`: the
    Calling-Station-Id of each device, taken in turn like `sessions`."""
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    kept: list[SSL.Session] = []
    accepted = resumed = started = retries = 0

    def begin() -> None:
        nonlocal started
        barcode, pin = patrons[started % len(patrons)]
        session = sessions[started % len(sessions)] if sessions else None
        peer = Peer(ca, barcode.encode(), pin.encode(), ctx=ctx, session=session)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(address)
        conv = Conversation(peer, sock, time.perf_counter(), secret)
        if stations:
            conv.station = stations[started % len(stations)]
        selector.register(sock, selectors.EVENT_READ, conv)
        conv.send(codec.Eap(codec.RESPONSE, 0, codec.IDENTITY, OUTER).encode())
        started += 1

    for _ in range(min(window, count)):
        begin()
    while selector.get_map():
        events = selector.select(timeout=patience)
        if not events:  # a loaded machine may drop a datagram: retransmit, as a NAS does
            retries += 1
            if retries > 3:
                raise RuntimeError("server stopped answering")
            for key in selector.get_map().values():
                key.data.sock.send(key.data.last)
            continue
        for key, _ in events:
            conv: Conversation = key.data
            done = conv.answer(conv.sock.recv(65535))
            if done is None:
                continue
            selector.unregister(conv.sock)
            conv.sock.close()
            if not done:
                raise RuntimeError("authentication refused")
            accepted += 1
            resumed += conv.peer.resumed
            latencies.append(time.perf_counter() - conv.started)
            kept.append(conv.peer.keep_session())
            if started < count:
                begin()
    return accepted, latencies, kept, resumed


def abandon(address: tuple[str, int], ca: Path, count: int, *, secret: bytes) -> int:
    """`count` conversations left halfway: Identity, then the ClientHello, never an answer to
    the server's first flight. Returns how many got that far."""
    ctx = client_context(ca)
    halfway = 0
    for n in range(count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.settimeout(5)
            peer = Peer(ca, b"21234000000001", b"0000", ctx=ctx)
            conv = Conversation(peer, sock, time.perf_counter(), secret)
            conv.send(codec.Eap(codec.RESPONSE, n % 256, codec.IDENTITY, OUTER).encode())
            if conv.answer(sock.recv(65535)) is not None:  # TTLS Start answered: ClientHello
                continue
            reply = sock.recv(65535)  # the server's flight: left unanswered
            halfway += rp.decode(reply).code == rp.ACCESS_CHALLENGE
    return halfway
