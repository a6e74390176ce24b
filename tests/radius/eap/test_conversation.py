"""The EAP-TTLS/PAP state machine driven by an in-memory TLS peer: fragmentation both ways,
identifiers, the MSK, refusals, and hostile payloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from OpenSSL import SSL

from bridge.radius.eap import codec
from bridge.radius.eap.codec import Eap
from bridge.radius.eap.conversation import (
    Authenticate,
    Challenge,
    Conversation,
    Discard,
    Fail,
    Resume,
    Succeed,
)
from bridge.radius.eap.fragments import fragment_size
from bridge.radius.eap.tunnel import Tunnel, server_context
from bridge.tls import generate_chain
from tests.radius.eap.peer import PeapPeer, Peer, client_context

PIN = b"5961"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("chain")
    paths = {n: d / f"{n}.pem" for n in ("ca", "ca-key", "server", "key")}
    generate_chain(paths["ca"], paths["ca-key"], paths["server"], paths["key"], ["radius"])
    other = d / "other"
    generate_chain(other / "ca.pem", other / "ca-key.pem", other / "s.pem", other / "k.pem", ["x"])
    paths["other"] = other / "ca.pem"
    return paths


@pytest.fixture(scope="module")
def context(chain: dict[str, Path]) -> SSL.Context:
    return server_context(chain["server"], chain["key"], chain["ca"])


def conversation(context: SSL.Context, rounds: int = 50, peap: bool = False) -> Conversation:
    factory = (lambda: Tunnel(context)) if peap else None
    return Conversation(
        b"s" * 16,
        "wifi",
        Tunnel(context),
        max_message=65536,
        max_rounds=rounds,
        now=0.0,
        peap=factory,
    )


def drive(conv: Conversation, peer: Peer, mtu: int | None = None) -> tuple[object, int]:
    step: object = conv.start(Eap(codec.RESPONSE, 200, codec.IDENTITY, b"anonymous@lib"))
    rounds = 0
    if peer.method == codec.PEAP:  # the peer refuses TTLS and asks for PEAP
        ident = codec.decode(step.eap).identifier  # type: ignore[attr-defined]
        step = conv.step(Eap(codec.RESPONSE, ident, codec.NAK, bytes([codec.PEAP])), 1000)
    while isinstance(step, Challenge):
        request = codec.decode(step.eap)
        assert request.code == codec.REQUEST and request.kind == peer.method
        if mtu is not None:
            assert len(step.eap) <= mtu - 4
        rounds += 1
        step = conv.step(peer.respond(request), fragment_size(1024, mtu))
    return step, rounds


def test_full_conversation_gives_the_peer_msk(context: SSL.Context, chain: dict[str, Path]) -> None:
    peer = Peer(chain["ca"], b"21234000000001", PIN)
    conv = conversation(context)
    step, _ = drive(conv, peer)
    assert step == Authenticate(b"21234000000001", PIN)
    assert conv.identity == b"anonymous@lib"  # kept for logs, never the barcode
    done = conv.finish(True)
    assert isinstance(done, Succeed)
    assert codec.decode(done.eap) == Eap(codec.SUCCESS, conv.last_id)
    assert done.msk == peer.msk() and len(done.msk) == 64


def test_tls13_conversation_uses_rfc9427_keys(chain: dict[str, Path]) -> None:
    ctx13 = server_context(chain["server"], chain["key"], chain["ca"], "1.3")
    peer = Peer(chain["ca"], b"21234000000001", PIN, fragment=200, tls13=True)
    conv = conversation(ctx13)
    step, _ = drive(conv, peer, mtu=400)
    assert step == Authenticate(b"21234000000001", PIN)
    assert conv.tunnel.version == "TLSv1.3"
    done = conv.finish(True)
    assert isinstance(done, Succeed) and done.msk == peer.msk()


def test_small_mtu_fragments_both_ways(context: SSL.Context, chain: dict[str, Path]) -> None:
    peer = Peer(chain["ca"], b"21234000000001", PIN, fragment=90)
    conv = conversation(context)
    step, rounds = drive(conv, peer, mtu=200)
    assert isinstance(step, Authenticate)
    assert peer.acks_sent >= 2  # the server's flight came in pieces
    assert peer.fragments_sent >= 1  # and so did the peer's
    assert rounds > 6
    done = conv.finish(True)
    assert isinstance(done, Succeed) and done.msk == peer.msk()


def test_rejection_ends_with_failure(context: SSL.Context, chain: dict[str, Path]) -> None:
    conv = conversation(context)
    step, _ = drive(conv, Peer(chain["ca"], b"1", PIN))
    assert isinstance(step, Authenticate)
    done = conv.finish(False)
    assert isinstance(done, Fail) and codec.decode(done.eap).code == codec.FAILURE


def test_untrusted_server_fails_the_handshake(context: SSL.Context, chain: dict[str, Path]) -> None:
    peer = Peer(chain["other"], b"1", PIN)
    step, _ = drive(conversation(context), peer)
    assert isinstance(step, Fail) and step.reason == "TLS handshake failed"
    assert peer.failed is not None


def test_wrong_identifier_is_discarded(context: SSL.Context) -> None:
    conv = conversation(context)
    start = codec.decode(conv.start(Eap(codec.RESPONSE, 1, codec.IDENTITY, b"x")).eap)
    stale = Eap(codec.RESPONSE, (start.identifier + 1) % 256, codec.TTLS, b"\x00")
    assert isinstance(conv.step(stale, 500), Discard)
    request = Eap(codec.REQUEST, start.identifier, codec.TTLS, b"\x00")
    assert isinstance(conv.step(request, 500), Discard)


def test_identifier_wraps(context: SSL.Context) -> None:
    conv = conversation(context)
    start = codec.decode(conv.start(Eap(codec.RESPONSE, 255, codec.IDENTITY, b"x")).eap)
    assert start.identifier == 0


def test_nak_for_mschapv2_fails_with_its_name(context: SSL.Context) -> None:
    conv = conversation(context)
    start = codec.decode(conv.start(Eap(codec.RESPONSE, 1, codec.IDENTITY, b"x")).eap)
    step = conv.step(Eap(codec.RESPONSE, start.identifier, codec.NAK, b"\x1a"), 500)
    assert isinstance(step, Fail) and "asked for EAP-MSCHAPv2" in step.reason
    assert codec.decode(step.eap) == Eap(codec.FAILURE, start.identifier)


def test_rounds_are_bounded(context: SSL.Context) -> None:
    conv = conversation(context, rounds=4)
    start = codec.decode(conv.start(Eap(codec.RESPONSE, 1, codec.IDENTITY, b"x")).eap)
    ident = start.identifier
    for _ in range(4):  # endless fragments from the peer
        step = conv.step(Eap(codec.RESPONSE, ident, codec.TTLS, b"\x40" + bytes(10)), 500)
        assert isinstance(step, Challenge)
        ident = codec.decode(step.eap).identifier
    step = conv.step(Eap(codec.RESPONSE, ident, codec.TTLS, b"\x40" + bytes(10)), 500)
    assert isinstance(step, Fail) and step.reason == "too many rounds"


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=6))
def test_hostile_payloads_never_crash(context: SSL.Context, payloads: list[bytes]) -> None:
    conv = conversation(context, peap=True)
    ident = codec.decode(conv.start(Eap(codec.RESPONSE, 1, codec.IDENTITY, b"x")).eap).identifier
    for data in payloads:
        kind = data[0] if data else codec.TTLS
        step = conv.step(Eap(codec.RESPONSE, ident, kind, data[1:]), 200)
        assert isinstance(step, Challenge | Fail | Discard | Authenticate | Succeed)
        if not isinstance(step, Challenge):
            break
        ident = codec.decode(step.eap).identifier


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 10_000), st.integers(0, 255), st.booleans())
def test_mutated_handshake_never_crashes(
    context: SSL.Context, chain: dict[str, Path], position: int, value: int, use_peap: bool
) -> None:
    """A real peer's messages with one octet changed: a Fail or a Discard, never an exception."""
    peer = (PeapPeer if use_peap else Peer)(chain["ca"], b"21234000000001", PIN, fragment=120)
    conv = conversation(context, peap=True)
    step: object = conv.start(Eap(codec.RESPONSE, 7, codec.IDENTITY, b"x"))
    if use_peap:
        ident = codec.decode(step.eap).identifier  # type: ignore[attr-defined]
        step = conv.step(Eap(codec.RESPONSE, ident, codec.NAK, bytes([codec.PEAP])), 200)
    seen = 0
    while isinstance(step, Challenge):
        response = peer.respond(codec.decode(step.eap))
        raw = bytearray(response.encode())
        if seen <= position < seen + len(raw) and position - seen >= 6:
            raw[position - seen] ^= value or 1
        seen += len(raw)
        try:
            eap = codec.decode(bytes(raw))
        except Exception as exc:  # only the codec's ProtocolError may come out
            assert type(exc).__name__ == "ProtocolError"
            return
        step = conv.step(eap, 200)
    assert isinstance(step, Fail | Discard | Authenticate)


@pytest.mark.parametrize("tls13", [False, True])
@pytest.mark.parametrize("accepted", [True, False])
def test_peap_gtc_conversation(chain: dict[str, Path], tls13: bool, accepted: bool) -> None:
    ctx = server_context(chain["server"], chain["key"], None, "1.3" if tls13 else "1.2")
    peer = PeapPeer(chain["ca"], b"21234000000001", PIN, fragment=150, tls13=tls13)
    conv = conversation(ctx, peap=True)
    step, _ = drive(conv, peer, mtu=300)
    assert step == Authenticate(b"21234000000001", PIN)  # inner identity, GTC response
    assert conv.identity == b"anonymous@lib"
    result = conv.finish(accepted, "verdict")
    assert isinstance(result, Challenge)  # the Result TLV, inside the tunnel
    request = codec.decode(result.eap)
    end = conv.step(peer.respond(request), 1000)
    assert peer.inner_result == (1 if accepted else 2)
    if accepted:
        assert isinstance(end, Succeed) and end.msk == peer.msk()
    else:
        assert isinstance(end, Fail) and end.reason == ""
    assert conv.verdict == "verdict"


def test_nak_for_peap_without_peap_enabled_fails(context: SSL.Context) -> None:
    conv = conversation(context, peap=False)
    start = codec.decode(conv.start(Eap(codec.RESPONSE, 1, codec.IDENTITY, b"x")).eap)
    step = conv.step(Eap(codec.RESPONSE, start.identifier, codec.NAK, b"\x19"), 500)
    assert isinstance(step, Fail) and "asked for PEAP" in step.reason


def test_ttls_resumption_is_named_and_a_peer_sending_pap_anyway_is_checked(
    chain: dict[str, Path],
) -> None:
    """A resumed TTLS tunnel without inner data is a `Resume` naming the first session; one
    whose peer sends its PAP pair anyway gets that pair checked like a full authentication."""
    ctx = server_context(chain["server"], chain["key"], chain["ca"], resumption=60)
    client = client_context(chain["ca"])

    def once(session: SSL.Session | None, inner: bool) -> tuple[object, Conversation, Peer]:
        conv = Conversation(b"s" * 16, "wifi", Tunnel(ctx), max_message=65536, max_rounds=50, now=0)
        peer = Peer(chain["ca"], b"21234000000001", PIN, ctx=client, session=session,
                    inner_on_resume=inner)  # fmt: skip
        step, _ = drive(conv, peer)
        return step, conv, peer

    step, first, peer = once(None, False)
    assert step == Authenticate(b"21234000000001", PIN)
    assert isinstance(first.finish(True), Succeed)
    key = first.tunnel.session_key()
    first.tunnel.keep_session()
    session = peer.keep_session()
    step, again, _ = once(session, False)
    assert step == Resume(key) and again.resumed
    step, explicit, _ = once(session, True)
    assert step == Authenticate(b"21234000000001", PIN) and not explicit.resumed
    assert explicit.tunnel.resumed
