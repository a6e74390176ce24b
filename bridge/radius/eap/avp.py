"""Diameter AVPs carried inside the EAP-TTLS tunnel (RFC 5281 section 10).

Pure. The tunnelled request of TTLS/PAP is two AVPs, User-Name and User-Password; anything else
(CHAP, MS-CHAP, MS-CHAP-V2, an inner EAP method) is recognised only to be refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bridge.radius.packet import ProtocolError

USER_NAME: Final = 1
USER_PASSWORD: Final = 2
CHAP_PASSWORD: Final = 3
EAP_MESSAGE: Final = 79
MICROSOFT: Final = 311
MS_CHAP_RESPONSE: Final = 1
MS_CHAP2_RESPONSE: Final = 25

FLAG_VENDOR: Final = 0x80
FLAG_MANDATORY: Final = 0x40
MAX_AVPS: Final = 64


@dataclass(frozen=True, slots=True)
class Avp:
    code: int
    vendor: int
    data: bytes
    mandatory: bool = True


def decode(data: bytes) -> list[Avp]:
    """Every AVP in a decrypted TTLS message; a malformed one is a ProtocolError."""
    out: list[Avp] = []
    pos = 0
    while pos < len(data):
        if len(out) >= MAX_AVPS:
            raise ProtocolError("too many AVPs in the tunnel", "too many AVPs")
        if pos + 8 > len(data):
            raise ProtocolError("truncated AVP header")
        code = int.from_bytes(data[pos : pos + 4], "big")
        flags = data[pos + 4]
        length = int.from_bytes(data[pos + 5 : pos + 8], "big")
        header = 12 if flags & FLAG_VENDOR else 8
        if length < header or pos + length > len(data):
            raise ProtocolError(f"AVP {code} has length {length}", "bad AVP length")
        vendor = int.from_bytes(data[pos + 8 : pos + 12], "big") if header == 12 else 0
        out.append(Avp(code, vendor, bytes(data[pos + header : pos + length]), bool(flags & 0x40)))
        pos += length + (-length % 4)
    return out


def encode(avps: list[Avp]) -> bytes:
    out = bytearray()
    for avp in avps:
        flags = (FLAG_MANDATORY if avp.mandatory else 0) | (FLAG_VENDOR if avp.vendor else 0)
        header = 12 if avp.vendor else 8
        length = header + len(avp.data)
        if length > 0xFFFFFF:
            raise ProtocolError("AVP too long")
        out += avp.code.to_bytes(4, "big") + bytes([flags]) + length.to_bytes(3, "big")
        if avp.vendor:
            out += avp.vendor.to_bytes(4, "big")
        out += avp.data + bytes(-length % 4)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class InnerRequest:
    """What the tunnel asked: a PAP pair, or the name of a method that is refused."""

    user_name: bytes | None
    password: bytes | None
    refused: str | None


def inner_request(avps: list[Avp]) -> InnerRequest:
    user = password = None
    refused = None
    for avp in avps:
        if avp.vendor == 0 and avp.code == USER_NAME and user is None:
            user = avp.data
        elif avp.vendor == 0 and avp.code == USER_PASSWORD and password is None:
            # RFC 5281 11.2.5: the password may be padded with NULs to a multiple of 16.
            password = avp.data.rstrip(b"\x00")
        elif avp.vendor == 0 and avp.code == CHAP_PASSWORD:
            refused = "inner CHAP"
        elif avp.vendor == MICROSOFT and avp.code == MS_CHAP2_RESPONSE:
            refused = "inner MS-CHAP-V2"
        elif avp.vendor == MICROSOFT and avp.code == MS_CHAP_RESPONSE:
            refused = "inner MS-CHAP"
        elif avp.vendor == 0 and avp.code == EAP_MESSAGE:
            refused = "inner EAP"
    if refused is None and (user is None or password is None):
        refused = "no inner User-Name or User-Password"
    return InnerRequest(user, password, refused)
