"""EAP packets (RFC 3748) and the TLS-method header shared by EAP-TLS/TTLS/PEAP (RFC 5216 3.1).

Pure: bytes in, values out, or `ProtocolError` (the RADIUS codec's, so the server logs it the
same way, by kind). Nothing here keeps state; reassembly lives in `fragments`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from bridge.radius.packet import EAP_MESSAGE, MAX_VALUE, ProtocolError

REQUEST: Final = 1
RESPONSE: Final = 2
SUCCESS: Final = 3
FAILURE: Final = 4

IDENTITY: Final = 1
NOTIFICATION: Final = 2
NAK: Final = 3
MD5_CHALLENGE: Final = 4
GTC: Final = 6
TLS: Final = 13
TTLS: Final = 21
PEAP: Final = 25
MSCHAPV2: Final = 26
EXPANDED: Final = 254

METHOD_NAMES: Final = {
    IDENTITY: "Identity",
    NOTIFICATION: "Notification",
    NAK: "Nak",
    MD5_CHALLENGE: "MD5-Challenge",
    GTC: "GTC",
    TLS: "EAP-TLS",
    TTLS: "EAP-TTLS",
    PEAP: "PEAP",
    MSCHAPV2: "EAP-MSCHAPv2",
    EXPANDED: "expanded type",
}

# TLS-method flags (RFC 5216 3.1; TTLS keeps the low three bits for its version).
FLAG_LENGTH: Final = 0x80
FLAG_MORE: Final = 0x40
FLAG_START: Final = 0x20
VERSION_MASK: Final = 0x07

_HEADER = struct.Struct("!BBH")
_TYPED = struct.Struct("!BBHB")  # the header and the method type of a Request/Response


@dataclass(slots=True)
class Eap:
    """One EAP packet. `kind` is the method type (None for Success/Failure).

    Treat as immutable. Not `frozen`, like the RADIUS `Packet`: a frozen dataclass's `__init__`
    sets each field through `object.__setattr__`, a microsecond and more on every round."""

    code: int
    identifier: int
    kind: int | None = None
    data: bytes = b""

    def encode(self) -> bytes:
        if self.kind is None:
            return _HEADER.pack(self.code, self.identifier, 4)
        body = bytes([self.kind]) + self.data
        if len(body) + 4 > 0xFFFF:
            raise ProtocolError("EAP packet longer than 65535 octets", "EAP packet too long")
        return _HEADER.pack(self.code, self.identifier, 4 + len(body)) + body


def request(identifier: int, kind: int, data: bytes) -> bytes:
    """`Eap(REQUEST, identifier, kind, data).encode()` in one step (a request every round)."""
    length = 5 + len(data)
    if length > 0xFFFF:
        raise ProtocolError("EAP packet longer than 65535 octets", "EAP packet too long")
    return _TYPED.pack(REQUEST, identifier, length, kind) + data


def method_name(kind: int) -> str:
    return METHOD_NAMES.get(kind, f"type {kind}")


def decode(data: bytes) -> Eap:
    """One EAP packet; the Length field must match the octets exactly (RFC 3579 3.1: the
    EAP-Message attributes of one RADIUS packet hold one whole EAP packet)."""
    if len(data) < 4:
        raise ProtocolError(f"EAP packet of {len(data)} octets", "short EAP packet")
    code, identifier, length = _HEADER.unpack_from(data)
    if length != len(data):
        raise ProtocolError(
            f"EAP length field {length} for {len(data)} octets", "EAP length mismatch"
        )
    if code in (SUCCESS, FAILURE):
        if length != 4:
            raise ProtocolError("EAP Success/Failure with data", "EAP Success/Failure with data")
        return Eap(code, identifier)
    if code not in (REQUEST, RESPONSE):
        raise ProtocolError(f"EAP code {code}", "unknown EAP code")
    if length < 5:
        raise ProtocolError("EAP Request/Response without a type", "EAP packet without type")
    return Eap(code, identifier, data[4], bytes(data[5:]))


def nak_types(data: bytes) -> tuple[int, ...]:
    """The methods a Legacy Nak proposes (RFC 3748 5.3.1); 0 means "none"."""
    return tuple(b for b in data if b != 0)


# --- TLS-method payload (flags, optional 4-octet total length, TLS data) ------------------------


@dataclass(slots=True)
class TlsPayload:
    """Treat as immutable (not `frozen`, as `Eap`)."""

    flags: int
    total: int | None  # the TLS Message Length when the L flag is set
    data: bytes

    @property
    def more(self) -> bool:
        return bool(self.flags & FLAG_MORE)

    @property
    def version(self) -> int:
        return self.flags & VERSION_MASK


def decode_tls(data: bytes) -> TlsPayload:
    if not data:
        raise ProtocolError("TLS method data without flags", "TLS payload without flags")
    flags = data[0]
    if flags & FLAG_LENGTH:
        if len(data) < 5:
            raise ProtocolError("TLS length flag without length", "truncated TLS length")
        total = int.from_bytes(data[1:5], "big")
        return TlsPayload(flags, total, bytes(data[5:]))
    return TlsPayload(flags, None, bytes(data[1:]))


def encode_tls(flags: int, data: bytes, total: int | None = None) -> bytes:
    if total is not None:
        return bytes([flags | FLAG_LENGTH]) + total.to_bytes(4, "big") + data
    return bytes([flags]) + data


# --- EAP-Message attributes (RFC 3579 3.1) ------------------------------------------------------


def split_attributes(eap: bytes) -> list[bytes]:
    """An EAP packet cut into EAP-Message attribute values of at most 253 octets."""
    return [eap[pos : pos + MAX_VALUE] for pos in range(0, len(eap), MAX_VALUE)] or [b""]


def message_attributes(eap: bytes) -> bytes:
    """The EAP-Message attributes of an EAP packet, encoded (type, length, value; at most 253
    octets of value each): `encode_attributes` of `split_attributes`, without the list."""
    if len(eap) <= MAX_VALUE:
        return bytes((EAP_MESSAGE, len(eap) + 2)) + eap
    out = bytearray()
    for pos in range(0, len(eap), MAX_VALUE):
        chunk = eap[pos : pos + MAX_VALUE]
        out += bytes((EAP_MESSAGE, len(chunk) + 2))
        out += chunk
    return bytes(out)
