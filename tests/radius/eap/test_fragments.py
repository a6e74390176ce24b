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


class _ReferenceReassembler:
    """`Reassembler.feed` as first written (one path for every fragment): the one-fragment
    shortcut must answer and fail exactly like it."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.size, self.total = limit, [], 0, None  # type: ignore[var-annotated]

    def feed(self, payload: codec.TlsPayload) -> bytes | None:
        if payload.total is not None:
            if payload.total > self.limit:
                raise ProtocolError(
                    f"TLS message of {payload.total} octets announced", "TLS message too long"
                )
            if self.total is not None and payload.total != self.total:
                raise ProtocolError("TLS message length changed between fragments")
            self.total = payload.total
        data = payload.data
        self.size += len(data)
        if self.size > self.limit or (self.total is not None and self.size > self.total):
            raise ProtocolError("TLS fragments overrun the message length", "TLS fragments overrun")
        if payload.more:
            if not data:
                raise ProtocolError("empty TLS fragment with the more flag", "empty TLS fragment")
            self.parts.append(data)
            return None
        if self.total is not None and self.size != self.total:
            raise ProtocolError("TLS fragments shorter than the message length", "TLS short")
        message = b"".join([*self.parts, data])
        self.parts, self.size, self.total = [], 0, None
        return message


_payloads = st.builds(
    lambda flags, total, data: codec.encode_tls(flags, data, total),
    st.sampled_from([0, codec.FLAG_MORE]),
    st.one_of(st.none(), st.integers(0, 140)),
    st.binary(max_size=70),
)


@given(st.lists(st.one_of(_payloads, st.binary(max_size=40)), max_size=30))
def test_property_feed_agrees_with_the_reference(payloads: list[bytes]) -> None:
    ours, reference = Reassembler(128), _ReferenceReassembler(128)
    for raw in payloads:
        try:
            payload = codec.decode_tls(raw)
        except ProtocolError:
            continue
        outcomes = []
        for r in (ours, reference):
            try:
                outcomes.append(r.feed(payload))
            except ProtocolError as exc:
                outcomes.append((str(exc), exc.kind))
        assert outcomes[0] == outcomes[1]
        if isinstance(outcomes[0], tuple):  # a conversation ends at its first error
            ours, reference = Reassembler(128), _ReferenceReassembler(128)
