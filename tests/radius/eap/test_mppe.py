"""RFC 2548 MS-MPPE key attributes: hidden with the secret, recoverable by the NAS."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.radius.eap import mppe
from bridge.radius.packet import VENDOR_SPECIFIC, ProtocolError, SharedSecret, encode_attributes

SECRET = SharedSecret(b"nas-secret-0123456789")


@given(st.binary(min_size=64, max_size=64), st.binary(min_size=16, max_size=16))
def test_nas_recovers_recv_and_send_keys(msk: bytes, authenticator: bytes) -> None:
    attrs = attributes(mppe.key_attributes(msk, SECRET, authenticator, os.urandom))
    found = {}
    salts = set()
    for kind, value in attrs:
        assert kind == VENDOR_SPECIFIC and value[:4] == mppe.MICROSOFT
        sub, length, hidden = value[4], value[5], value[6:]
        assert length == len(hidden) + 2 and hidden[0] & 0x80
        salts.add(hidden[:2])
        found[sub] = mppe.decrypt_key(hidden, SECRET, authenticator)
    assert found[mppe.MS_MPPE_RECV_KEY] == msk[:32]
    assert found[mppe.MS_MPPE_SEND_KEY] == msk[32:64]
    assert len(salts) == 2


def attributes(encoded: bytes) -> list[tuple[int, bytes]]:
    out = []
    while encoded:
        out.append((encoded[0], encoded[2 : encoded[1]]))
        encoded = encoded[encoded[1] :]
    return out


@given(
    st.binary(min_size=64, max_size=64),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=2, max_size=2),
    st.binary(min_size=1, max_size=80),
)
def test_key_attributes_equal_the_general_encoding(
    msk: bytes, authenticator: bytes, drawn: bytes, secret: bytes
) -> None:
    """The Accept's straight-line hiding of the two 32-octet keys gives exactly RFC 2548's
    general form (`encrypt_key`, chained block by block) with the same salts, encoded."""
    key = SharedSecret(secret)
    recv_salt = bytes((drawn[0] | 0x80, drawn[1]))
    send_salt = bytes((recv_salt[0] ^ 1, drawn[1]))
    expected = encode_attributes(
        (VENDOR_SPECIFIC, mppe.MICROSOFT + bytes((sub, len(hidden) + 2)) + hidden)
        for sub, hidden in (
            (mppe.MS_MPPE_RECV_KEY, mppe.encrypt_key(msk[:32], key, authenticator, recv_salt)),
            (mppe.MS_MPPE_SEND_KEY, mppe.encrypt_key(msk[32:], key, authenticator, send_salt)),
        )
    )
    assert mppe.key_attributes(msk, key, authenticator, lambda n: drawn[:n]) == expected


def test_layout_is_salt_then_two_blocks_for_a_32_octet_key() -> None:
    hidden = mppe.encrypt_key(bytes(32), SECRET, bytes(16), b"\x80\x01")
    assert len(hidden) == 2 + 48  # length octet + 32 + 15 padding = 48


def test_wrong_secret_gives_another_key() -> None:
    hidden = mppe.encrypt_key(b"k" * 32, SECRET, bytes(16), b"\x80\x01")
    other = SharedSecret(b"another-secret")
    assert mppe.decrypt_key(hidden, SECRET, bytes(16)) == b"k" * 32
    with contextlib.suppress(ProtocolError):
        assert mppe.decrypt_key(hidden, other, bytes(16)) != b"k" * 32


def test_bad_inputs_raise() -> None:
    with pytest.raises(ProtocolError):
        mppe.encrypt_key(b"k", SECRET, bytes(16), b"\x00\x01")  # salt high bit clear
    with pytest.raises(ProtocolError):
        mppe.key_attributes(bytes(32), SECRET, bytes(16), os.urandom)
    with pytest.raises(ProtocolError):
        mppe.decrypt_key(bytes(10), SECRET, bytes(16))
