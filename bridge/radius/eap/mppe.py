"""MS-MPPE-Recv-Key / MS-MPPE-Send-Key (RFC 2548 2.4.2 and 2.4.3) from the EAP MSK.

RFC 5281 section 8 (and RFC 3579/RFC 5216 practice, as FreeRADIUS and hostapd do): the first 32
octets of the 64-octet MSK are the Recv-Key, the next 32 the Send-Key. Each is hidden with the
client's shared secret, the Request Authenticator and a salt whose high bit is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from bridge.radius.packet import _MD5, VENDOR_SPECIFIC, ProtocolError, SharedSecret

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
) -> bytes:
    """The two Vendor-Specific attributes for an Access-Accept (distinct salts), encoded:
    MS-MPPE-Recv-Key (the MSK's first 32 octets), then MS-MPPE-Send-Key (the next 32)."""
    if len(msk) < 64:
        raise ProtocolError("MSK shorter than 64 octets")
    drawn = random(2)
    first = drawn[0] | 0x80
    recv_salt = bytes((first, drawn[1]))
    send_salt = bytes((first ^ 0x01, drawn[1]))  # differ: RFC 2548 wants unique salts
    value = secret.value
    return b"".join(
        (
            _RECV_HEADER,
            recv_salt,
            _hide32(msk[:32], value, authenticator + recv_salt),
            _SEND_HEADER,
            send_salt,
            _hide32(msk[32:64], value, authenticator + send_salt),
        )
    )


# Type, Length, Vendor-Id, Vendor-Type, Vendor-Length of a 32-octet key's attribute: the value
# is salt (2) + 48 hidden octets (length octet + 32 + 15 of padding), RFC 2548 2.4.2/2.4.3.
_RECV_HEADER: Final = bytes((VENDOR_SPECIFIC, 58)) + MICROSOFT + bytes((MS_MPPE_RECV_KEY, 52))
_SEND_HEADER: Final = bytes((VENDOR_SPECIFIC, 58)) + MICROSOFT + bytes((MS_MPPE_SEND_KEY, 52))
_MASK: Final = (1 << 128) - 1


def _hide32(key: bytes, secret: bytes, first: bytes) -> bytes:
    """`encrypt_key` without the salt for a 32-octet key, its three blocks written out
    (`first`: Request Authenticator + salt). Every Access-Accept hides two keys; the general
    loop with a call per XOR was about 500 bytecodes an Accept."""
    plain = int.from_bytes(b"\x20" + key + bytes(15), "big")
    c1 = ((plain >> 256) ^ int.from_bytes(_MD5(secret + first).digest(), "big")).to_bytes(16, "big")
    c2 = (((plain >> 128) & _MASK) ^ int.from_bytes(_MD5(secret + c1).digest(), "big")).to_bytes(
        16, "big"
    )
    c3 = ((plain & _MASK) ^ int.from_bytes(_MD5(secret + c2).digest(), "big")).to_bytes(16, "big")
    return c1 + c2 + c3
