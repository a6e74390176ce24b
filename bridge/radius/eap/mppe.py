"""MS-MPPE-Recv-Key / MS-MPPE-Send-Key (RFC 2548 2.4.2 and 2.4.3) from the EAP MSK.

RFC 5281 section 8 (and RFC 3579/RFC 5216 practice, as FreeRADIUS and hostapd do): the first 32
octets of the 64-octet MSK are the Recv-Key, the next 32 the Send-Key. Each is hidden with the
client's shared secret, the Request Authenticator and a salt whose high bit is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bridge.radius.packet import VENDOR_SPECIFIC, ProtocolError, SharedSecret

MICROSOFT: Final = (311).to_bytes(4, "big")
MS_MPPE_SEND_KEY: Final = 16
MS_MPPE_RECV_KEY: Final = 17


def _xor(a: bytes, b: bytes) -> bytes:
    """Two 16-octet blocks XORed as integers (a generator over octets costs ten times more)."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def encrypt_key(key: bytes, secret: SharedSecret, authenticator: bytes, salt: bytes) -> bytes:
    """Salt + the RFC 2548 hidden form of (length octet + key + zero padding)."""
    if len(salt) != 2 or not salt[0] & 0x80:
        raise ProtocolError("MPPE salt must be 2 octets with the high bit set")
    plain = bytes([len(key)]) + key
    plain += bytes(-len(plain) % 16)
    out = bytearray()
    last = authenticator + salt
    for pos in range(0, len(plain), 16):
        chunk = _xor(plain[pos : pos + 16], secret.md5_after(last))
        out += chunk
        last = chunk
    return salt + bytes(out)


def decrypt_key(hidden: bytes, secret: SharedSecret, authenticator: bytes) -> bytes:
    """The inverse (tests; a NAS does this)."""
    if len(hidden) < 18 or (len(hidden) - 2) % 16:
        raise ProtocolError("bad MPPE key attribute length")
    salt, body = hidden[:2], hidden[2:]
    plain = bytearray()
    last = authenticator + salt
    for pos in range(0, len(body), 16):
        chunk = body[pos : pos + 16]
        plain += _xor(chunk, secret.md5_after(last))
        last = chunk
    size = plain[0]
    if size > len(plain) - 1:
        raise ProtocolError("MPPE key length octet too large")
    return bytes(plain[1 : 1 + size])


def key_attributes(
    msk: bytes, secret: SharedSecret, authenticator: bytes, random: Callable[[int], bytes]
) -> list[tuple[int, bytes]]:
    """The two Vendor-Specific attributes for an Access-Accept (distinct salts)."""
    if len(msk) < 64:
        raise ProtocolError("MSK shorter than 64 octets")
    drawn = random(2)
    first = drawn[0] | 0x80
    recv_salt = bytes([first, drawn[1]])
    send_salt = bytes([first ^ 0x01, recv_salt[1]])  # differ: RFC 2548 wants unique salts
    out = []
    for sub, key, salt in (
        (MS_MPPE_RECV_KEY, msk[:32], recv_salt),
        (MS_MPPE_SEND_KEY, msk[32:64], send_salt),
    ):
        value = encrypt_key(key, secret, authenticator, salt)
        out.append((VENDOR_SPECIFIC, MICROSOFT + bytes([sub, len(value) + 2]) + value))
    return out
