"""The EAP codec and the TLS-method header: RFC 3748 layouts, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.radius import packet as rp
from bridge.radius.eap import codec
from bridge.radius.eap.codec import Eap
from bridge.radius.packet import ProtocolError


def test_identity_response_decodes() -> None:
    raw = bytes([2, 7, 0, 14]) + b"\x01anonymous"
    eap = codec.decode(raw)
    assert eap == Eap(codec.RESPONSE, 7, codec.IDENTITY, b"anonymous")
    assert eap.encode() == raw


def test_success_and_failure_are_four_octets() -> None:
    assert Eap(codec.SUCCESS, 9).encode() == b"\x03\x09\x00\x04"
    assert codec.decode(b"\x04\x09\x00\x04") == Eap(codec.FAILURE, 9)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x02\x01\x00",  # truncated header
        b"\x02\x01\x00\x04",  # response without a type
        b"\x02\x01\x00\x09\x01ab",  # length beyond the octets
        b"\x02\x01\x00\x05\x01ab",  # length short of the octets
        b"\x05\x01\x00\x05\x01",  # unknown code
        b"\x03\x01\x00\x05\x01",  # success with data
        b"\x02\x01\xff\xff" + bytes(10),  # oversized length field
    ],
)
def test_malformed_packets_raise_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        codec.decode(raw)


def test_tls_header_with_length_and_more() -> None:
    payload = codec.decode_tls(codec.encode_tls(codec.FLAG_MORE, b"abc", 10))
    assert payload.total == 10 and payload.more and payload.data == b"abc"
    assert payload.version == 0
    with pytest.raises(ProtocolError):
        codec.decode_tls(b"")
    with pytest.raises(ProtocolError):
        codec.decode_tls(b"\x80\x00\x00")  # L flag, truncated length


def test_nak_lists_the_methods_asked_for() -> None:
    assert codec.nak_types(b"\x1a\x00") == (codec.MSCHAPV2,)
    assert codec.method_name(codec.MSCHAPV2) == "EAP-MSCHAPv2"
    assert codec.method_name(200) == "type 200"


def test_split_attributes_respects_253() -> None:
    eap = bytes(600)
    parts = codec.split_attributes(eap)
    assert [len(p) for p in parts] == [253, 253, 94]
    assert b"".join(parts) == eap


@given(st.binary(max_size=600))
def test_any_bytes_decode_or_raise_protocol_error(raw: bytes) -> None:
    try:
        eap = codec.decode(raw)
    except ProtocolError:
        return
    assert eap.encode() == raw


@given(st.integers(1, 2), st.integers(0, 255), st.integers(1, 255), st.binary(max_size=300))
def test_round_trip(code: int, identifier: int, kind: int, data: bytes) -> None:
    eap = Eap(code, identifier, kind, data)
    assert codec.decode(eap.encode()) == eap


@given(st.integers(0, 255), st.integers(1, 255), st.binary(max_size=1200))
def test_request_and_message_attributes_match_the_general_encoders(
    identifier: int, kind: int, data: bytes
) -> None:
    """The per-round shortcuts build the same octets as `Eap.encode` and `encode_attributes`."""
    eap = codec.request(identifier, kind, data)
    assert eap == Eap(codec.REQUEST, identifier, kind, data).encode()
    split = [(rp.EAP_MESSAGE, part) for part in codec.split_attributes(eap)]
    assert codec.message_attributes(eap) == rp.encode_attributes(split)
