"""The EAP path of the real daemon with a raw NAS: what eapol_test cannot send (no
Message-Authenticator, garbage, a stale State, too many conversations), and a stream of mutated
EAP payloads after which the daemon still answers."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.radius import packet as rp
from bridge.radius.eap import codec
from bridge.radius.eap.codec import Eap
from bridge.tls import generate_chain
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.udp import Nas

SECRET = "eap-raw-secret-0123456789abcdef"
STATE = 24
SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[radius.eap]
certificate = "server.pem"
key = "server-key.pem"
max_per_client = 3

[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("eap-raw")
    generate_chain(
        tmp / "ca.pem", tmp / "ca-key.pem", tmp / "server.pem", tmp / "server-key.pem", ["r"]
    )
    d = Daemon(tmp, SECTIONS).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def nas(daemon: Daemon) -> Iterator[Nas]:
    n = Nas(daemon.address("radius"), SECRET.encode())
    try:
        yield n
    finally:
        n.close()


def eap_request(
    nas: Nas, eap: bytes, *, state: bytes | None = None, ma: bool = True
) -> tuple[bytes, bytes]:
    extra = [(rp.EAP_MESSAGE, part) for part in codec.split_attributes(eap)]
    if state is not None:
        extra.append((STATE, state))
    return nas.access(b"anonymous@library.example", None, extra=extra, ma=ma)


def reply_mac_ok(reply: rp.Packet, request_authenticator: bytes) -> bool:
    """RFC 3579 3.2 for a reply: HMAC-MD5 with the Request Authenticator in the header."""
    at = reply.mac_offset
    raw = reply.raw
    signed = raw[:4] + request_authenticator + raw[20:at] + bytes(16) + raw[at + 16 :]
    expected = hmac.new(SECRET.encode(), signed, hashlib.md5).digest()
    return reply.mac_offset == 22 and hmac.compare_digest(expected, raw[at : at + 16])


def identity(nas: Nas, ident: int = 1) -> tuple[rp.Packet, bytes]:
    raw, auth = eap_request(nas, Eap(codec.RESPONSE, ident, codec.IDENTITY, b"anon").encode())
    return nas.ask((raw, auth)), auth


def test_identity_opens_a_conversation_with_state_and_authenticator(nas: Nas) -> None:
    reply, auth = identity(nas, 41)
    assert reply.code == rp.ACCESS_CHALLENGE
    assert reply_mac_ok(reply, auth)
    state = reply.get(STATE)
    assert state is not None and len(state) == 16
    start = codec.decode(b"".join(reply.all(rp.EAP_MESSAGE)))
    assert (start.code, start.identifier, start.kind) == (codec.REQUEST, 42, codec.TTLS)
    assert start.data[0] & codec.FLAG_START
    # a Nak for MSCHAPv2 in the same conversation: Reject with EAP-Failure and a reason
    nak = Eap(codec.RESPONSE, 42, codec.NAK, bytes([codec.MSCHAPV2])).encode()
    raw, auth = eap_request(nas, nak, state=state)
    reject = nas.ask((raw, auth))
    assert reject.code == rp.ACCESS_REJECT and reply_mac_ok(reject, auth)
    assert codec.decode(b"".join(reject.all(rp.EAP_MESSAGE))) == Eap(codec.FAILURE, 42)
    message = reject.get(rp.REPLY_MESSAGE)
    assert message is not None and b"MSCHAPv2" in message
    # the conversation is gone: its State is now unknown
    again = nas.ask(eap_request(nas, nak, state=state))
    assert again.code == rp.ACCESS_REJECT


def test_eap_without_message_authenticator_is_dropped(nas: Nas) -> None:
    eap = Eap(codec.RESPONSE, 1, codec.IDENTITY, b"anon").encode()
    nas.send(eap_request(nas, eap, ma=False)[0])
    nas.nothing_but_probe()


def test_garbage_and_unknown_state_are_rejected(nas: Nas) -> None:
    raw, auth = eap_request(nas, b"\x02\x01\x00\x09\x01")
    reply = nas.ask((raw, auth))
    assert reply.code == rp.ACCESS_REJECT and reply_mac_ok(reply, auth)
    eap = Eap(codec.RESPONSE, 3, codec.TTLS, b"\x00").encode()
    assert nas.ask(eap_request(nas, eap, state=bytes(16))).code == rp.ACCESS_REJECT
    # an EAP conversation must start with an Identity
    assert nas.ask(eap_request(nas, eap)).code == rp.ACCESS_REJECT


def test_conversations_per_client_are_limited(daemon: Daemon) -> None:
    nas = Nas(daemon.address("radius"), SECRET.encode(), source="127.0.0.1")
    try:
        # earlier tests may hold conversations of this client; fill up to the limit of 3
        codes = [identity(nas, n)[0].code for n in range(4)]
        assert codes[-1] == rp.ACCESS_REJECT
        assert codes.count(rp.ACCESS_CHALLENGE) <= 3
    finally:
        nas.close()


def test_mutated_eap_payloads_never_stop_the_daemon(daemon: Daemon, nas: Nas) -> None:
    rng = random.Random(1712)
    seeds = [
        Eap(codec.RESPONSE, 1, codec.IDENTITY, b"anon").encode(),
        Eap(codec.RESPONSE, 2, codec.TTLS, b"\x80\x00\x00\x01\x00" + bytes(200)).encode(),
        Eap(codec.RESPONSE, 2, codec.NAK, b"\x15\x19").encode(),
    ]
    for _ in range(150):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        if rng.random() < 0.3:
            raw = raw[: rng.randrange(len(raw) + 1)] or bytearray(b"\x02")
        nas.send(eap_request(nas, bytes(raw), state=rng.choice([None, bytes(16)]))[0])
    # Status-Server behind them: every answer to the mutated packets comes before its answer
    probe, _ = nas.status()
    nas.send(probe)
    while True:
        answer = nas.receive()
        if answer.identifier == probe[1] and answer.code == rp.ACCESS_ACCEPT:
            break
    ok = nas.ask(nas.access(DEMO["active"].encode(), DEMO_PIN.encode()))
    assert ok.code == rp.ACCESS_ACCEPT
    assert "Traceback" not in Path(daemon.stderr_path).read_text()
