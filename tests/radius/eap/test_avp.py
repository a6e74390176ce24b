"""The TTLS AVP codec (RFC 5281 section 10) and what the tunnel asked for."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.radius.eap import avp
from bridge.radius.eap.avp import Avp
from bridge.radius.packet import ProtocolError

PIN = b"5961"


def test_pap_pair_with_padding_round_trips() -> None:
    raw = avp.encode([Avp(avp.USER_NAME, 0, b"21234000000001"), Avp(avp.USER_PASSWORD, 0, PIN)])
    assert len(raw) % 4 == 0
    request = avp.inner_request(avp.decode(raw))
    assert request.user_name == b"21234000000001" and request.password == PIN
    assert request.refused is None


def test_password_nul_padding_is_removed() -> None:
    raw = avp.encode([Avp(avp.USER_NAME, 0, b"u"), Avp(avp.USER_PASSWORD, 0, PIN + bytes(12))])
    assert avp.inner_request(avp.decode(raw)).password == PIN


@pytest.mark.parametrize(
    ("avps", "refused"),
    [
        ([Avp(avp.MS_CHAP2_RESPONSE, avp.MICROSOFT, bytes(50))], "inner MS-CHAP-V2"),
        ([Avp(avp.MS_CHAP_RESPONSE, avp.MICROSOFT, bytes(50))], "inner MS-CHAP"),
        ([Avp(avp.CHAP_PASSWORD, 0, bytes(17))], "inner CHAP"),
        ([Avp(avp.EAP_MESSAGE, 0, b"\x02\x00\x00\x05\x01")], "inner EAP"),
        ([Avp(avp.USER_NAME, 0, b"u")], "no inner User-Name or User-Password"),
    ],
)
def test_other_inner_methods_are_named_and_refused(avps: list[Avp], refused: str) -> None:
    request = avp.inner_request(avp.decode(avp.encode([Avp(avp.USER_NAME, 0, b"u"), *avps])))
    assert request.refused == refused


def test_vendor_avp_round_trips() -> None:
    item = Avp(avp.MS_CHAP2_RESPONSE, avp.MICROSOFT, b"abc")
    assert avp.decode(avp.encode([item])) == [item]


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x00\x01\x40\x00",  # truncated header
        b"\x00\x00\x00\x01\x40\x00\x00\x04",  # length below the header
        b"\x00\x00\x00\x01\x40\x00\x00\x20abc",  # overruns
        b"\x00\x00\x00\x01\xc0\x00\x00\x0a\x00\x00",  # vendor flag, no room for vendor id
    ],
)
def test_malformed_avps_raise(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        avp.decode(raw)


def test_too_many_avps_raise() -> None:
    raw = avp.encode([Avp(avp.USER_NAME, 0, b"")] * (avp.MAX_AVPS + 1))
    with pytest.raises(ProtocolError):
        avp.decode(raw)


@given(st.binary(max_size=400))
def test_any_bytes_decode_or_raise_protocol_error(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        avp.inner_request(avp.decode(raw))
