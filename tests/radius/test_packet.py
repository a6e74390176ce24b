"""The pure codec: RFC vectors, authenticity checks, User-Password, malformed input."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.radius import packet as rp
from tests import pins

VECTORS = json.loads(
    (Path(__file__).resolve().parent.parent / "vectors" / "radius_rfc.json").read_text()
)
SECRET = b"testing123"


def _vector(name: str) -> tuple[bytes, bytes, bytes]:
    v = VECTORS[name]
    return bytes.fromhex(v["request"]), bytes.fromhex(v["reply"]), v["secret"].encode()


def test_rfc2865_access_request_decodes_and_password_decrypts() -> None:
    request, _, secret = _vector("rfc2865_7_1")
    packet = rp.decode(request)
    assert packet.code == rp.ACCESS_REQUEST
    assert packet.identifier == 0
    assert packet.get(rp.USER_NAME) == b"nemo"
    hidden = packet.get(rp.USER_PASSWORD)
    assert hidden is not None
    plain = rp.decrypt_password(hidden, secret, packet.authenticator)
    assert plain == VECTORS["rfc2865_7_1"]["password"].encode()
    assert not packet.has_message_authenticator


def test_rfc2865_reply_is_reproduced() -> None:
    request, reply, secret = _vector("rfc2865_7_1")
    packet = rp.decode(request)
    attributes = rp.encode_attributes(rp.decode(reply).attributes)
    ours = rp.encode_reply(
        rp.ACCESS_ACCEPT, packet, attributes, secret, message_authenticator=False
    )
    assert ours == reply
    assert rp.reply_ok(reply, packet.authenticator, secret)


def test_rfc5997_status_server_verifies_and_reply_is_reproduced() -> None:
    request, reply, secret = _vector("rfc5997_6")
    packet = rp.decode(request)
    assert packet.code == rp.STATUS_SERVER
    assert rp.message_authenticator_ok(packet, secret)
    assert not rp.message_authenticator_ok(packet, b"wrong-secret")
    ours = rp.encode_reply(rp.ACCESS_ACCEPT, packet, b"", secret, message_authenticator=False)
    assert ours == reply


def test_reply_carries_message_authenticator_first_and_valid() -> None:
    request = rp.decode(
        rp.encode_request(rp.ACCESS_REQUEST, 7, os.urandom(16), [(rp.USER_NAME, b"x")], SECRET)
    )
    reply = rp.encode_reply(rp.ACCESS_REJECT, request, b"\x12\x04no", SECRET)
    assert rp.reply_ok(reply, request.authenticator, SECRET)
    decoded = rp.decode(reply)
    assert decoded.attributes[0][0] == rp.MESSAGE_AUTHENTICATOR
    # A client verifies the reply's MA with the Request Authenticator in the header.
    signed = reply[:4] + request.authenticator + reply[20:22] + bytes(16) + reply[38:]
    import hmac

    assert hmac.digest(SECRET, signed, "md5") == reply[22:38]


def test_message_authenticator_detects_any_change() -> None:
    raw = rp.encode_request(
        rp.ACCESS_REQUEST, 1, os.urandom(16), [(rp.USER_NAME, b"21234000000001")], SECRET
    )
    assert rp.message_authenticator_ok(rp.decode(raw), SECRET)
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    assert not rp.message_authenticator_ok(rp.decode(tampered), SECRET)


def test_accounting_authenticators() -> None:
    attrs = [(40, (1).to_bytes(4, "big")), (44, b"session-1")]
    raw = rp.encode_request(rp.ACCOUNTING_REQUEST, 3, b"", attrs, SECRET)
    packet = rp.decode(raw)
    assert rp.accounting_authenticator_ok(packet, SECRET)
    assert rp.message_authenticator_ok(packet, SECRET)
    assert not rp.accounting_authenticator_ok(packet, b"other")
    plain = rp.decode(
        rp.encode_request(rp.ACCOUNTING_REQUEST, 3, b"", attrs, SECRET, message_authenticator=False)
    )
    assert rp.accounting_authenticator_ok(plain, SECRET)


def test_password_is_exact_bytes_never_repaired() -> None:
    """pyrad's PwDecrypt drops invalid UTF-8; 59 e9 61 must stay three odd octets."""
    auth = os.urandom(16)
    odd = pins.DEMO_PIN[:2].encode() + b"\xe9" + pins.DEMO_PIN[2:].encode()
    hidden = rp.encrypt_password(odd, SECRET, auth)
    assert rp.decrypt_password(hidden, SECRET, auth) == odd


@pytest.mark.parametrize("size", [0, 15, 17, 144])
def test_password_lengths_outside_rfc_are_errors(size: int) -> None:
    with pytest.raises(rp.ProtocolError):
        rp.decrypt_password(bytes(size), SECRET, bytes(16))


def test_long_password_uses_chained_blocks() -> None:
    auth = os.urandom(16)
    long = b"A" * 40
    hidden = rp.encrypt_password(long, SECRET, auth)
    assert len(hidden) == 48
    assert rp.decrypt_password(hidden, SECRET, auth) == long
    # Block 2 is keyed by block 1's ciphertext, not the authenticator (RFC 2865 5.2).
    b2 = hashlib.md5(SECRET + hidden[:16]).digest()
    assert bytes(x ^ y for x, y in zip(hidden[16:32], b2, strict=True)) == b"A" * 16


MALFORMED = {
    "short": b"\x01\x00\x00\x14" + bytes(10),
    "length below header": b"\x01\x00\x00\x10" + bytes(16),
    "length above 4096": b"\x01\x00\x10\x01" + bytes(16),
    "truncated": b"\x01\x00\x00\x30" + bytes(16),
    "attribute length 0": b"\x01\x00\x00\x18" + bytes(16) + b"\x01\x00ab",
    "attribute length 1": b"\x01\x00\x00\x18" + bytes(16) + b"\x01\x01ab",
    "attribute overruns": b"\x01\x00\x00\x18" + bytes(16) + b"\x01\x09ab",
    "attribute header cut": b"\x01\x00\x00\x15" + bytes(16) + b"\x01",
    "short Message-Authenticator": b"\x01\x00\x00\x18" + bytes(16) + b"\x50\x04ab",
    "two Message-Authenticators": b"\x01\x00\x00\x38" + bytes(16) + (b"\x50\x12" + bytes(16)) * 2,
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_packets_raise_protocol_error(name: str) -> None:
    with pytest.raises(rp.ProtocolError):
        rp.decode(MALFORMED[name])


def test_padding_after_length_is_ignored() -> None:
    raw = rp.encode_request(rp.ACCESS_REQUEST, 1, bytes(16), [(rp.USER_NAME, b"a")], SECRET)
    packet = rp.decode(raw + b"\x00" * 10)
    assert packet.raw == raw
    assert rp.message_authenticator_ok(packet, SECRET)


def test_vendor_attributes() -> None:
    vsa = (311).to_bytes(4, "big") + b"\x0b\x0aabcdefgh" + b"\x19\x04zz"
    raw = rp.encode_request(rp.ACCESS_REQUEST, 1, bytes(16), [(rp.VENDOR_SPECIFIC, vsa)], SECRET)
    assert rp.decode(raw).vendor_attributes(311) == [(11, b"abcdefgh"), (25, b"zz")]
    assert rp.decode(raw).vendor_attributes(9) == []


def test_oversized_attribute_value_is_refused() -> None:
    with pytest.raises(rp.ProtocolError):
        rp.encode_attributes([(rp.REPLY_MESSAGE, b"x" * 254)])


# --- properties ----------------------------------------------------------------------------


@given(st.binary(max_size=300))
def test_property_any_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        packet = rp.decode(data)
    except rp.ProtocolError:
        return
    assert 20 <= len(packet.raw) <= rp.MAX_PACKET
    assert rp.encode_attributes(packet.attributes) == packet.raw[20:]


@given(
    st.binary(min_size=20, max_size=120).map(lambda b: b[:2] + len(b).to_bytes(2, "big") + b[4:])
)
def test_property_right_length_any_body_parses_or_raises(data: bytes) -> None:
    with contextlib.suppress(rp.ProtocolError):
        rp.decode(data)


attribute = st.tuples(
    st.integers(1, 255).filter(lambda t: t != rp.MESSAGE_AUTHENTICATOR), st.binary(max_size=60)
)


def _reference_decode(data: bytes) -> rp.Packet:
    """`decode` as first written (one test per rule, in the RFC's order): the tuned loop must
    give the same packet, or the same error and kind, for any bytes."""
    size = len(data)
    if size < 20:
        raise rp.ProtocolError(f"short packet ({size} octets)", "short packet")
    code, identifier, length = data[0], data[1], int.from_bytes(data[2:4], "big")
    if length < 20 or length > rp.MAX_PACKET:
        raise rp.ProtocolError(f"bad length field {length}", "bad length field")
    if size < length:
        raise rp.ProtocolError(f"truncated packet ({size} of {length} octets)", "truncated packet")
    data = data[:length]
    attributes = []
    mac_offset = -1
    pos = 20
    while pos < length:
        if pos + 2 > length:
            raise rp.ProtocolError("truncated attribute header")
        kind, alen = data[pos], data[pos + 1]
        if alen < 2:
            raise rp.ProtocolError(f"attribute {kind} has length {alen}", "bad attribute length")
        end = pos + alen
        if end > length:
            raise rp.ProtocolError(
                f"attribute {kind} overruns the packet", "attribute overruns the packet"
            )
        if kind == rp.MESSAGE_AUTHENTICATOR:
            if alen != 18:
                raise rp.ProtocolError("Message-Authenticator is not 16 octets")
            if mac_offset >= 0:
                raise rp.ProtocolError("more than one Message-Authenticator")
            mac_offset = pos + 2
        attributes.append((kind, data[pos + 2 : end]))
        pos = end
    return rp.Packet(code, identifier, data[4:20], tuple(attributes), bytes(data), mac_offset)


def _outcome(decoder: Callable[[bytes], rp.Packet], data: bytes) -> object:
    try:
        return decoder(data)
    except rp.ProtocolError as exc:
        return (str(exc), exc.kind)


# Bodies built from attribute-shaped pieces (any type, Message-Authenticators included, any
# length octet) reach every rule far more often than uniform bytes do.
_pieces = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from([1, 2, 26, 33, rp.MESSAGE_AUTHENTICATOR, 255]),
            st.integers(0, 30),
            st.binary(max_size=24),
        ).map(lambda t: bytes([t[0], t[1]]) + t[2]),
        st.binary(min_size=16, max_size=16).map(lambda mac: b"\x50\x12" + mac),
    ),
    max_size=8,
).map(b"".join)


@given(
    st.one_of(
        st.binary(max_size=300),
        st.tuples(
            st.binary(min_size=4, max_size=4),
            st.binary(min_size=16, max_size=16),
            _pieces,
            st.integers(-3, 3),
        )
        .map(lambda t: (t[0], t[1], t[2], max(0, 20 + len(t[2]) + t[3])))
        .map(lambda t: t[0][:2] + t[3].to_bytes(2, "big") + t[1] + t[2]),
    )
)
def test_property_decode_agrees_with_the_reference(data: bytes) -> None:
    assert _outcome(rp.decode, data) == _outcome(_reference_decode, data)


@given(
    st.lists(
        st.tuples(
            st.sampled_from([1, 2, 3, 4, 24, 26, 33, rp.EAP_MESSAGE]), st.binary(max_size=20)
        ),
        max_size=8,
    )
)
def test_property_access_fields_says_whether_eap_message_is_there(
    attrs: list[tuple[int, bytes]],
) -> None:
    """The server routes to the EAP front end on `AccessFields.eap`: the same answer as
    looking for the attribute, whatever else the request carries (CHAP, MS-CHAP, PAP)."""
    packet = rp.decode(rp.encode_request(rp.ACCESS_REQUEST, 1, bytes(16), attrs, b"s"))
    assert rp.access_fields(packet).eap is packet.has(rp.EAP_MESSAGE)


@given(
    st.sampled_from([rp.ACCESS_REQUEST, rp.ACCOUNTING_REQUEST, rp.STATUS_SERVER]),
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.lists(attribute, max_size=12),
    st.binary(min_size=1, max_size=40),
    st.booleans(),
)
def test_property_requests_roundtrip(
    code: int,
    ident: int,
    auth: bytes,
    attrs: list[tuple[int, bytes]],
    secret: bytes,
    with_ma: bool,
) -> None:
    raw = rp.encode_request(code, ident, auth, attrs, secret, message_authenticator=with_ma)
    packet = rp.decode(raw)
    assert (packet.code, packet.identifier) == (code, ident)
    body = [a for a in packet.attributes if a[0] != rp.MESSAGE_AUTHENTICATOR]
    assert body == attrs
    assert packet.has_message_authenticator is with_ma
    if with_ma:
        assert rp.message_authenticator_ok(packet, secret)
    if code == rp.ACCOUNTING_REQUEST:
        assert rp.accounting_authenticator_ok(packet, secret)


@given(
    st.binary(max_size=128).filter(lambda p: not p.endswith(b"\x00")),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=1, max_size=64),
)
def test_property_password_roundtrip(password: bytes, auth: bytes, secret: bytes) -> None:
    hidden = rp.encrypt_password(password, secret, auth)
    assert len(hidden) % 16 == 0 and 16 <= len(hidden) <= 128
    assert rp.decrypt_password(hidden, secret, auth) == password


def test_rfc2865_chap_request_is_recognised_and_reply_reproduced() -> None:
    request, reply, secret = _vector("rfc2865_7_2")
    packet = rp.decode(request)
    assert packet.get(rp.USER_NAME) == b"flopsy"
    chap = packet.get(rp.CHAP_PASSWORD)
    assert chap is not None
    # The vector is what it claims: MD5(CHAP id + password + challenge).
    expected = hashlib.md5(
        chap[:1] + VECTORS["rfc2865_7_2"]["password"].encode() + packet.authenticator
    ).digest()
    assert chap[1:] == expected
    assert "CHAP is not supported" in (rp.access_fields(packet).unsupported or "")
    attributes = rp.encode_attributes(rp.decode(reply).attributes)
    assert (
        rp.encode_reply(rp.ACCESS_ACCEPT, packet, attributes, secret, message_authenticator=False)
        == reply
    )


def _reference_reply(
    code: int, request: rp.Packet, attributes: bytes, secret: bytes, message_authenticator: bool
) -> bytes:
    """RFC 2865 section 3 and RFC 3579 section 3.2 spelled out: the tuned `encode_reply` must
    give the same octets."""
    import hmac

    extra = 18 if message_authenticator else 0
    head = bytes([code, request.identifier]) + (20 + extra + len(attributes)).to_bytes(2, "big")
    if message_authenticator:
        signed = head + request.authenticator + b"\x50\x12" + bytes(16) + attributes
        attributes = b"\x50\x12" + hmac.digest(secret, signed, "md5") + attributes
    response = hashlib.md5(head + request.authenticator + attributes + secret).digest()
    return head + response + attributes


@given(
    st.sampled_from([rp.ACCESS_ACCEPT, rp.ACCESS_REJECT, rp.ACCOUNTING_RESPONSE]),
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.lists(attribute, max_size=6),
    st.binary(min_size=1, max_size=80),
    st.booleans(),
)
def test_property_reply_agrees_with_the_reference(
    code: int,
    ident: int,
    auth: bytes,
    attrs: list[tuple[int, bytes]],
    secret: bytes,
    with_ma: bool,
) -> None:
    request = rp.decode(rp.encode_request(rp.ACCESS_REQUEST, ident, auth, [], secret))
    attributes = rp.encode_attributes(attrs)
    ours = rp.encode_reply(
        code, request, attributes, rp.SharedSecret(secret), message_authenticator=with_ma
    )
    assert ours == _reference_reply(code, request, attributes, secret, with_ma)
    assert rp.reply_ok(ours, auth, secret)
