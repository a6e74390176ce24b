"""Pure BER for the LDAPv3 subset we serve: tag-length-value reading and writing, nothing else.

Why by hand: ldap3's pyasn1 schema cannot decode `&`, `|` or `!` filters with current pyasn1,
and pyasn1 costs about thirty times the CPU of a direct codec; a cached bind must cost no more
server CPU than slapd's. So values are read straight out of `bytes` by index, and written with
`tlv`, which builds one `bytes` per element.

Strict where strictness protects us: definite lengths only, single-octet tags only (LDAP never
needs more), lengths of at most four octets, and every element must fit inside its parent.
Non-minimal length encodings are accepted because OpenLDAP's liblber sends `84 00 00 00 xx`.
"""

from __future__ import annotations

from typing import Final


class ProtocolError(Exception):
    """The bytes are not a well-formed PDU; the server answers with a notice of disconnection."""


# Universal tags
BOOLEAN: Final = 0x01
INTEGER: Final = 0x02
OCTET_STRING: Final = 0x04
NULL: Final = 0x05
ENUMERATED: Final = 0x0A
SEQUENCE: Final = 0x30
SET: Final = 0x31

MAX_INT_OCTETS: Final = 8


def read_length(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The length at `pos` and the position after it."""
    if pos >= end:
        raise ProtocolError("truncated length")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0:
        raise ProtocolError("indefinite length")
    if count > 4:
        raise ProtocolError("length too long")
    stop = pos + 1 + count
    if stop > end:
        raise ProtocolError("truncated length")
    return int.from_bytes(data[pos + 1 : stop], "big"), stop


def read_tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at `pos`, which must end by `end`."""
    if pos >= end:
        raise ProtocolError("missing element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ProtocolError("multi-octet tag")
    if pos + 1 < end and data[pos + 1] < 0x80:  # short-form length: most elements, inline
        start = pos + 2
        stop = start + data[pos + 1]
    else:
        length, start = read_length(data, pos + 1, end)
        stop = start + length
    if stop > end:
        raise ProtocolError("element overruns its parent")
    return tag, start, stop


def expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    """Content (start, end) of an element that must carry `tag`."""
    got, start, stop = read_tlv(data, pos, end)
    if got != tag:
        raise ProtocolError(f"expected tag 0x{tag:02x}, got 0x{got:02x}")
    return start, stop


def frame_length(buffer: bytes | bytearray, max_size: int) -> int | None:
    """Octets taken by the first PDU in a stream buffer, or None while it is incomplete.

    Raises as soon as the header shows garbage or a PDU over `max_size`, so a peer cannot make
    us buffer a gigabyte before we look.
    """
    have = len(buffer)
    if have < 2:
        return None
    if buffer[0] != SEQUENCE:
        raise ProtocolError("PDU is not a SEQUENCE")
    first = buffer[1]
    if first < 0x80:
        total = 2 + first
    else:
        count = first & 0x7F
        if count == 0:
            raise ProtocolError("indefinite length")
        if count > 4:
            raise ProtocolError("length too long")
        if have < 2 + count:
            return None
        total = 2 + count + int.from_bytes(buffer[2 : 2 + count], "big")
    if total > max_size:
        raise ProtocolError("PDU too large")
    return total if have >= total else None


def to_int(data: bytes, start: int, stop: int) -> int:
    if stop == start:
        raise ProtocolError("empty integer")
    if stop - start > MAX_INT_OCTETS:
        raise ProtocolError("integer too long")
    return int.from_bytes(data[start:stop], "big", signed=True)


def to_bool(data: bytes, start: int, stop: int) -> bool:
    if stop - start != 1:
        raise ProtocolError("boolean must be one octet")
    return data[start] != 0


def to_text(data: bytes, start: int, stop: int) -> str:
    try:
        return data[start:stop].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("string is not UTF-8") from None


# --- writing --------------------------------------------------------------------------------


def length_octets(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(raw),)) + raw


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes((tag, n)) + content
    return bytes((tag,)) + length_octets(n) + content


def int_content(value: int) -> bytes:
    magnitude = value if value >= 0 else ~value
    return value.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)


def integer(value: int, tag: int = INTEGER) -> bytes:
    return tlv(tag, int_content(value))


def enumerated(value: int) -> bytes:
    return tlv(ENUMERATED, int_content(value))


def octets(value: bytes | str, tag: int = OCTET_STRING) -> bytes:
    return tlv(tag, value.encode("utf-8") if isinstance(value, str) else value)


def boolean(value: bool) -> bytes:
    return bytes((BOOLEAN, 1, 0xFF if value else 0x00))


def sequence(*parts: bytes, tag: int = SEQUENCE) -> bytes:
    return tlv(tag, b"".join(parts))
