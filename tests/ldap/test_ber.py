"""BER primitives: framing, lengths, strictness; anything either parses or raises ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.ldap import ber
from bridge.ldap.ber import ProtocolError


def test_short_and_long_lengths_round_trip() -> None:
    for n in (0, 1, 127, 128, 255, 256, 65_535, 1 << 20):
        content = b"x" * n
        encoded = ber.tlv(0x04, content)
        tag, start, stop = ber.read_tlv(encoded, 0, len(encoded))
        assert (tag, stop - start) == (0x04, n)


def test_liblber_four_octet_lengths_are_accepted() -> None:
    # OpenLDAP's liblber writes `84 00 00 00 nn`; non-minimal but valid BER.
    data = bytes([0x30, 0x84, 0, 0, 0, 3, 0x02, 0x01, 0x07])
    assert ber.frame_length(data, 1024) == len(data)
    assert ber.expect(data, 0, len(data), 0x30) == (6, 9)


@pytest.mark.parametrize(
    "data",
    [
        b"\x30\x80\x02\x01\x01\x00\x00",  # indefinite length
        b"\x30\x85\x00\x00\x00\x00\x01",  # five length octets
        b"\x04\x01x",  # not a SEQUENCE
    ],
)
def test_framing_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        ber.frame_length(data, 1024)


def test_framing_waits_for_the_rest_and_caps_size() -> None:
    whole = ber.sequence(ber.integer(1), ber.octets(b"x" * 300))
    for cut in range(len(whole)):
        assert ber.frame_length(whole[:cut], 4096) is None
    assert ber.frame_length(whole + b"\x30", 4096) == len(whole)
    with pytest.raises(ProtocolError, match="too large"):
        ber.frame_length(whole[:4], 100)


def test_element_may_not_overrun_its_parent() -> None:
    data = bytes([0x30, 0x03, 0x04, 0x05, 0x61])
    start, end = ber.expect(data, 0, 2 + 3, 0x30)
    with pytest.raises(ProtocolError):
        ber.read_tlv(data, start, end)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_integers_round_trip(value: int) -> None:
    data = ber.integer(value)
    _tag, start, stop = ber.read_tlv(data, 0, len(data))
    assert ber.to_int(data, start, stop) == value


@given(st.binary(max_size=64))
def test_anything_frames_or_raises(data: bytes) -> None:
    try:
        size = ber.frame_length(data, 4096)
    except ProtocolError:
        return
    assert size is None or 2 <= size <= len(data)
