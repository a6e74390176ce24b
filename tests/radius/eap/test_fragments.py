"""TLS-method fragmentation: both directions, and the bounds on what a peer may send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.radius.eap import codec
from bridge.radius.eap.fragments import Fragmenter, Reassembler, fragment_size
from bridge.radius.packet import ProtocolError


def test_fragment_size_follows_framed_mtu() -> None:
    assert fragment_size(1024, None) == 1014
    assert fragment_size(1024, 300) == 300 - 4 - 10
    assert fragment_size(1024, 1) == 64 - 4 - 10  # RFC 2865's minimum MTU
    assert fragment_size(1024, 9000) == 1014


def cut(message: bytes, size: int) -> list[codec.TlsPayload]:
    frag = Fragmenter()
    frag.load(message)
    out = [codec.decode_tls(frag.next(0, size))]
    while frag.busy:
        out.append(codec.decode_tls(frag.next(0, size)))
    return out


@given(st.binary(min_size=1, max_size=5000), st.integers(16, 1400))
def test_fragmenter_and_reassembler_agree(message: bytes, size: int) -> None:
    parts = cut(message, size)
    assert parts[0].total == len(message)
    assert all(len(p.data) <= size for p in parts)
    assert [p.more for p in parts] == [True] * (len(parts) - 1) + [False]
    joined = Reassembler(8192)
    results = [joined.feed(p) for p in parts]
    assert results[:-1] == [None] * (len(parts) - 1)
    assert results[-1] == message
    assert not joined.busy


def test_announced_length_over_the_limit_is_refused() -> None:
    with pytest.raises(ProtocolError, match="announced"):
        Reassembler(1000).feed(codec.TlsPayload(codec.FLAG_LENGTH | codec.FLAG_MORE, 5000, b"x"))


def test_fragments_over_the_limit_without_length_are_refused() -> None:
    r = Reassembler(100)
    for _ in range(3):
        r.feed(codec.TlsPayload(codec.FLAG_MORE, None, bytes(30)))
    with pytest.raises(ProtocolError):
        r.feed(codec.TlsPayload(codec.FLAG_MORE, None, bytes(30)))


def test_fragments_overrunning_the_announced_length_are_refused() -> None:
    r = Reassembler(1000)
    r.feed(codec.TlsPayload(codec.FLAG_LENGTH | codec.FLAG_MORE, 40, bytes(30)))
    with pytest.raises(ProtocolError):
        r.feed(codec.TlsPayload(0, None, bytes(30)))


def test_short_last_fragment_is_refused() -> None:
    r = Reassembler(1000)
    r.feed(codec.TlsPayload(codec.FLAG_LENGTH | codec.FLAG_MORE, 100, bytes(30)))
    with pytest.raises(ProtocolError):
        r.feed(codec.TlsPayload(0, None, bytes(30)))


def test_changed_length_and_empty_more_fragment_are_refused() -> None:
    r = Reassembler(1000)
    r.feed(codec.TlsPayload(codec.FLAG_LENGTH | codec.FLAG_MORE, 100, bytes(30)))
    with pytest.raises(ProtocolError):
        r.feed(codec.TlsPayload(codec.FLAG_LENGTH | codec.FLAG_MORE, 90, bytes(30)))
    with pytest.raises(ProtocolError):
        Reassembler(1000).feed(codec.TlsPayload(codec.FLAG_MORE, None, b""))


@given(st.lists(st.binary(max_size=64), max_size=40))
def test_mutated_fragment_streams_only_raise_protocol_error(payloads: list[bytes]) -> None:
    r = Reassembler(512)
    for raw in payloads:
        try:
            r.feed(codec.decode_tls(raw))
        except ProtocolError:
            r = Reassembler(512)
