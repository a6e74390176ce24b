"""SIP2 (3M Standard Interchange Protocol 2.00) wire format: pure bytes ⇄ messages, both ways.

This module serves the bridge's SIP2 *server* (parse requests, build responses) and SIP2
*clients* such as the upstream-ILS store plugin (build requests, parse responses): a message's
two-digit code decides its fixed-field layout whichever side sends it. No I/O, no clock (dates
are formatted from values passed in), its own `ProtocolError` family.

Public API:

    framer = Framer(max_length=4096)        # bytes from a socket → frames (terminator removed)
    for frame in framer.feed(data): ...
    msg = decode(frame, charset="cp850")    # frame → Message; verifies AZ when present
    data = encode(msg, sequence=3, checksum=True, charset="cp850", terminator=b"\\r")
    msg = build("63", {"language": "001", ...}, [("AO", "MAIN"), ("AA", barcode)])
    msg.get("AA"), msg.get_all("AU"), msg.fixed["summary"]
    tpl = template(msg); encode_template(tpl, {"transaction_date": sip_date(now)}, ...)

`bridge.sip2.messages` wraps the messages the bridge itself answers in typed dataclasses
(`LoginRequest`, `PatronRequest`, `PatronResponse`, ... with `to_message`/`from_message`).
A client sends `encode(request, sequence=n, checksum=True)`, reads with a `Framer`, and
`decode`s the answer (a `ChecksumError` there means: send `ACS_RESEND`);
`bridge.sip2.client.ClientSession` does that bookkeeping (sequence numbers, 96/97 resends).

Why it is lenient where it is: real clients terminate with CR, CRLF or bare LF and sometimes a
stray leading LF; some omit the last `|`; some send empty or unknown fields in any order; the
PyPI `sip2` client and others write checksums without zero-padding. Why it is strict where it
is: the checksum is over the bytes actually on the wire (never code points), values we write
never carry `|`, CR, LF or any other control character, and control characters (NUL, ...) in
what we read never reach the caller.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import unicodedata
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from bridge.core.secret import Secret

Charset = Literal["cp850", "utf-8", "ascii"]

#: The fields whose values are secrets (terminal password, patron PIN, login password).
SECRET_TAGS: Final = frozenset({"AC", "AD", "CO"})

#: The canonical "please resend" message: the spec's 96 always carries this checksum.
RESEND: Final = b"96AZFEF6"
#: A client's "please resend your last response".
ACS_RESEND: Final = b"97AZFEF5"


class ProtocolError(Exception):
    """Bytes that are not a SIP2 message we can act on. Messages never quote the input."""


class ChecksumError(ProtocolError):
    """The AZ checksum does not match the bytes received."""


class UnknownMessage(ProtocolError):
    """A two-character command this codec does not know."""


class BadSequence(ProtocolError):
    """An AY (sequence number) that is not a single digit: the message is malformed and
    answered with 96, like a bad checksum (the client cannot be mirrored a sequence)."""


class FrameTooLong(ProtocolError):
    """More bytes than the configured maximum without a terminator."""


class TlsOnPlainPort(ProtocolError):
    """The peer opened with a TLS ClientHello on a plain-text port."""


# --- layouts --------------------------------------------------------------------------------

#: Fixed-length fields of every message, in wire order: code → ((name, length), ...).
LAYOUTS: Final[dict[str, tuple[tuple[str, int], ...]]] = {
    # login
    "93": (("uid_algorithm", 1), ("pwd_algorithm", 1)),
    "94": (("ok", 1),),
    # SC / ACS status
    "99": (("status_code", 1), ("max_print_width", 3), ("protocol_version", 4)),
    "98": (
        ("online_status", 1),
        ("checkin_ok", 1),
        ("checkout_ok", 1),
        ("acs_renewal_policy", 1),
        ("status_update_ok", 1),
        ("offline_ok", 1),
        ("timeout_period", 3),
        ("retries_allowed", 3),
        ("date_time_sync", 18),
        ("protocol_version", 4),
    ),
    # resends
    "96": (),
    "97": (),
    # patron status / information
    "23": (("language", 3), ("transaction_date", 18)),
    "24": (("patron_status", 14), ("language", 3), ("transaction_date", 18)),
    "63": (("language", 3), ("transaction_date", 18), ("summary", 10)),
    "64": (
        ("patron_status", 14),
        ("language", 3),
        ("transaction_date", 18),
        ("hold_items_count", 4),
        ("overdue_items_count", 4),
        ("charged_items_count", 4),
        ("fine_items_count", 4),
        ("recall_items_count", 4),
        ("unavailable_holds_count", 4),
    ),
    "35": (("transaction_date", 18),),
    "36": (("end_session", 1), ("transaction_date", 18)),
    "01": (("card_retained", 1), ("transaction_date", 18)),
    # circulation
    "11": (
        ("sc_renewal_policy", 1),
        ("no_block", 1),
        ("transaction_date", 18),
        ("nb_due_date", 18),
    ),
    "12": (
        ("ok", 1),
        ("renewal_ok", 1),
        ("magnetic_media", 1),
        ("desensitize", 1),
        ("transaction_date", 18),
    ),
    "09": (("no_block", 1), ("transaction_date", 18), ("return_date", 18)),
    "10": (
        ("ok", 1),
        ("resensitize", 1),
        ("magnetic_media", 1),
        ("alert", 1),
        ("transaction_date", 18),
    ),
    "17": (("transaction_date", 18),),
    "18": (
        ("circulation_status", 2),
        ("security_marker", 2),
        ("fee_type", 2),
        ("transaction_date", 18),
    ),
    "19": (("transaction_date", 18),),
    "20": (("item_properties_ok", 1), ("transaction_date", 18)),
    "25": (("transaction_date", 18),),
    "26": (("patron_status", 14), ("language", 3), ("transaction_date", 18)),
    "15": (("hold_mode", 1), ("transaction_date", 18)),
    "16": (("ok", 1), ("available", 1), ("transaction_date", 18)),
    "29": (
        ("third_party_allowed", 1),
        ("no_block", 1),
        ("transaction_date", 18),
        ("nb_due_date", 18),
    ),
    "30": (
        ("ok", 1),
        ("renewal_ok", 1),
        ("magnetic_media", 1),
        ("desensitize", 1),
        ("transaction_date", 18),
    ),
    "37": (
        ("transaction_date", 18),
        ("fee_type", 2),
        ("payment_type", 2),
        ("currency_type", 3),
    ),
    "38": (("payment_accepted", 1), ("transaction_date", 18)),
    "65": (("transaction_date", 18),),
    "66": (
        ("ok", 1),
        ("renewed_count", 4),
        ("unrenewed_count", 4),
        ("transaction_date", 18),
    ),
}

#: Length of each message's fixed part including the code (where variable fields start).
FIXED_END: Final[dict[str, int]] = {
    code: 2 + sum(length for _, length in layout) for code, layout in LAYOUTS.items()
}

#: The fixed-field names of each message, for validating `build` cheaply.
FIXED_NAMES: Final[dict[str, frozenset[str]]] = {
    code: frozenset(name for name, _ in layout) for code, layout in LAYOUTS.items()
}

#: Request code → response code, for every request a client can send.
RESPONSE_CODE: Final[dict[str, str]] = {
    "93": "94",
    "99": "98",
    "23": "24",
    "63": "64",
    "35": "36",
    "01": "24",
    "97": "",  # answered by replaying the last response
    "11": "12",
    "09": "10",
    "17": "18",
    "19": "20",
    "25": "26",
    "15": "16",
    "29": "30",
    "37": "38",
    "65": "66",
}

#: Circulation requests: answered by an upstream ILS when one is configured.
CIRCULATION_CODES: Final = frozenset({"11", "09", "17", "29", "37", "15", "19", "65", "25"})

#: Position of each request in the 98 message's 16-character BX "supported messages" field.
BX_ORDER: Final = (
    "23",  # patron status request
    "11",  # checkout
    "09",  # checkin
    "01",  # block patron
    "99",  # SC/ACS status
    "97",  # request SC/ACS resend
    "93",  # login
    "63",  # patron information
    "35",  # end patron session
    "37",  # fee paid
    "17",  # item information
    "19",  # item status update
    "25",  # patron enable
    "15",  # hold
    "29",  # renew
    "65",  # renew all
)


def supported_messages(codes: Iterable[str]) -> str:
    """The BX value: `Y` where the request code is answered, `N` elsewhere."""
    have = set(codes)
    return "".join("Y" if code in have else "N" for code in BX_ORDER)


# --- messages -------------------------------------------------------------------------------


@dataclass(slots=True)  # decoded per request: not frozen (its __init__ is slow); never changed
class Message:
    """One SIP2 message, either direction.

    `fixed` maps the layout's field names to their raw text (always the exact width when the
    message came off the wire); `fields` are the variable fields in wire order, duplicates kept
    (item lists repeat AU, AS, ...). `sequence` is the AY digit and `checksummed` says whether
    an AZ trailer was present (and verified): a server mirrors both in its answer.
    The repr masks AC, AD and CO so a message can be logged or shown in a failing test.
    """

    code: str
    fixed: dict[str, str]
    fields: list[tuple[str, str]] = field(default_factory=list)
    sequence: int | None = None
    checksummed: bool = False

    def get(self, tag: str, default: str = "") -> str:
        """The first value of a variable field, or `default` when absent."""
        for name, value in self.fields:
            if name == tag:
                return value
        return default

    def get_all(self, tag: str) -> list[str]:
        """Every value of a repeatable field (AU, AS, AF, ...), in wire order."""
        return [value for name, value in self.fields if name == tag]

    def has(self, tag: str) -> bool:
        return any(name == tag for name, _ in self.fields)

    def __repr__(self) -> str:
        shown = [(t, "***" if t in SECRET_TAGS else v) for t, v in self.fields]
        return (
            f"Message(code={self.code!r}, fixed={self.fixed!r}, fields={shown!r}, "
            f"sequence={self.sequence!r}, checksummed={self.checksummed!r})"
        )


def build(
    code: str,
    fixed: Mapping[str, str] | None = None,
    fields: Iterable[tuple[str, str]] = (),
) -> Message:
    """A message to send. Fixed fields left out are blanks; unknown names are an error."""
    layout = LAYOUTS.get(code)
    if layout is None:
        raise UnknownMessage("unknown message code")
    given = fixed or {}
    if not FIXED_NAMES[code].issuperset(given):
        raise ProtocolError(f"message {code} has a fixed field it does not define")
    values = {name: given.get(name) or " " * length for name, length in layout}
    return Message(code, values, list(fields))


# --- checksums and trailers ----------------------------------------------------------------


#: Up to this many bytes, Adler-32's first half (1 + byte sum, mod 65521) is the byte sum + 1
#: exactly (256 * 255 + 1 < 65521): zlib then adds the bytes in C, about five times faster
#: than `sum()` over them, for every message a self-check sends.
_ADLER_EXACT: Final = 256


def byte_sum(data: bytes) -> int:
    """The sum of the bytes (the SIP2 checksum is its 16-bit two's complement)."""
    if len(data) <= _ADLER_EXACT:
        return (zlib.adler32(data) & 0xFFFF) - 1
    return sum(data)


def checksum(data: bytes) -> str:
    """The AZ value for `data` (every byte from the first up to and including `AZ`):
    the two's complement of the 16-bit byte sum, as 4 uppercase hex digits, zero-padded."""
    return f"{(-byte_sum(data)) & 0xFFFF:04X}"


def checksum_ok(data: bytes, value: int) -> bool:
    """Whether `value` (the AZ number) matches `data` (bytes up to and including `AZ`)."""
    return (byte_sum(data) + value) & 0xFFFF == 0


#: Every byte value as two uppercase hex digits: an AZ value is two lookups and a join,
#: cheaper than formatting an int with a format spec on every checksummed answer.
_HEX_PAIRS: Final = tuple(f"{i:02X}".encode("ascii") for i in range(256))


_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_DIGITS: Final = frozenset(b"0123456789")


#: (where the body ends, the AY digit or None, whether an AZ was present and verified)
_Trailer = tuple[int, int | None, bool]


def _trailer(frame: bytes, fixed_end: int) -> _Trailer:
    """Find and verify the `AYnAZxxxx` error-detection trailer at the end of a frame.

    The AZ must sit where a field could start (after the fixed part, a `|` or an AY digit), so
    a last field without its `|` that merely ends in "AZ12" is not mistaken for a checksum.
    One to four hex digits are accepted: several clients forget to zero-pad.
    """
    n = len(frame)
    # The usual trailer first, `|AYnAZxxxx` with four digits: one slice compared per part.
    at = n - 6
    if (
        at - 4 >= fixed_end
        and frame[at - 4 : at - 1] == b"|AY"
        and frame[at : at + 2] == b"AZ"
        and frame[at - 1] in _DIGITS
    ):
        hexpart = frame[at + 2 :]
        if hexpart.isalnum() and _HEX.issuperset(hexpart):
            data = frame[: at + 2]  # `byte_sum`, inline on this path
            total = (zlib.adler32(data) & 0xFFFF) - 1 if at + 2 <= _ADLER_EXACT else sum(data)
            if (total + int(hexpart, 16)) & 0xFFFF:
                raise ChecksumError("checksum mismatch")
            return (at - 3, frame[at - 1] - 48, True)
    for digits in (4, 3, 2, 1):
        at = n - digits - 2
        if at < fixed_end or frame[at : at + 2] != b"AZ":
            continue
        hexpart = frame[at + 2 :]
        if not hexpart.isalnum() or not _HEX.issuperset(hexpart):
            continue
        sequence: int | None = None
        start = at
        if at - 3 >= fixed_end and frame[at - 3 : at - 1] == b"AY" and frame[at - 1] in _DIGITS:
            sequence = frame[at - 1] - 48
            start = at - 3
        if not (start == fixed_end or frame[start - 1] == 0x7C or sequence is not None):
            continue
        if not checksum_ok(frame[: at + 2], int(hexpart, 16)):
            raise ChecksumError("checksum mismatch")
        return (start, sequence, True)
    # No checksum; an AY alone (error detection half-on) is still read and echoed.
    if n - 3 >= fixed_end and frame[n - 3 : n - 1] == b"AY" and frame[n - 1] in _DIGITS:
        start = n - 3
        if start == fixed_end or frame[start - 1] == 0x7C:
            return (start, frame[n - 1] - 48, False)
    return (n, None, False)


# --- decoding -------------------------------------------------------------------------------


#: Wire code → (code, fixed-field spans (name, start, end), where variable fields start).
_DECODE: Final[dict[bytes, tuple[str, tuple[tuple[str, int, int], ...], int]]] = {}
for _code, _layout in LAYOUTS.items():
    _spans, _pos = [], 2
    for _name, _length in _layout:
        _spans.append((_name, _pos, _pos + _length))
        _pos += _length
    _DECODE[_code.encode("ascii")] = (_code, tuple(_spans), _pos)

#: Code → fixed-field name → (start, end) in the message text.
_SPANS: Final[dict[str, dict[str, tuple[int, int]]]] = {
    code: {name: (a, b) for name, a, b in spans} for code, spans, _ in _DECODE.values()
}


def decode(frame: bytes, *, charset: Charset = "cp850") -> Message:
    """Parse one frame (terminator already removed) into a `Message`.

    Raises `ChecksumError` for a wrong AZ, `UnknownMessage` for an unknown code and
    `ProtocolError` for anything else that cannot be read (short fixed part, undecodable bytes,
    control characters). Unknown variable fields are kept (callers ignore what they do not
    need); empty pieces between `|` are skipped; a missing final `|` is fine.
    """
    spec = _DECODE.get(frame[:2])
    if spec is None:
        if len(frame) < 2:
            raise ProtocolError("message too short")
        raise UnknownMessage("unknown message code")
    code, spans, fixed_end = spec
    if len(frame) < fixed_end:
        raise ProtocolError(f"message {code} shorter than its fixed part")
    body_end, sequence, checksummed = _trailer(frame, fixed_end)
    body = frame[:body_end]
    try:
        # ASCII is a subset of every charset we speak, and its codec is the fast one.
        text = body.decode("ascii") if body.isascii() else body.decode(charset)
    except UnicodeDecodeError:
        raise ProtocolError(f"message {code} is not valid {charset}") from None
    if not text.isprintable():
        raise ProtocolError(f"message {code} contains control characters")
    if len(text) < fixed_end:  # a multi-byte charset can shorten the text
        raise ProtocolError(f"message {code} shorter than its fixed part")
    values = {name: text[a:b] for name, a, b in spans}
    fields = [(p[:2], p[2:]) for p in text[fixed_end:].split("|") if len(p) >= 2]
    if "AY" in text[fixed_end:]:
        for tag, value in fields:
            # A well-formed AY was taken off as the trailer; one left among the fields that
            # is not one digit (`AY12AZ...`, `AYx`, `AYAZ...`) means a broken trailer.
            if tag == "AY" and not (len(value) == 1 and value.isdigit() and value.isascii()):
                raise BadSequence(f"message {code} has a sequence number that is not one digit")
    return Message(code, values, fields, sequence, checksummed)


#: What `read_request` takes off a 23, 63 or 35: (code, AY digit or None, whether an AZ was
#: present and verified, the first AO, the first AA, the first AD or None when absent).
#: The PIN leaves the codec as a `Secret`, so the tuple's repr cannot show it.
Request = tuple[str, int | None, bool, str, str, Secret | None]

#: Wire code → (code, where its variable fields start), for the requests `read_request` reads.
_REQUESTS: Final[dict[bytes, tuple[str, int]]] = {
    code.encode("ascii"): (code, FIXED_END[code]) for code in ("63", "23", "35")
}


_VALUE: Final = "[ -{}~]*"  # printable ASCII but `|`
#: The trailer is matched, not captured: its digit and hex are read off the frame's end.
_FIELDS: Final = (
    f"AO({_VALUE})\\|AA({_VALUE})\\|(?:AC{_VALUE}\\|)?(?:AD({_VALUE})\\|)?(?:B[PQ]{_VALUE}\\|)*"
    "(?:AY[0-9]AZ[0-9A-F]{4})?"
)
#: The first byte of a 63, 23 or 35 (`6`, `2`, `3`: one each; the pattern checks the second)
#: → (code, the usual shape of that request: see `read_request`). An int key: no slice and
#: no bytes hash per request.
_PLAIN: Final[dict[int, tuple[str, re.Pattern[str]]]] = {
    ord(code[0]): (code, re.compile(f"{code}[ -~]{{{FIXED_END[code] - 2}}}{_FIELDS}"))
    for code in ("63", "23", "35")
}


#: What `read_login` takes off a 93: (UID algorithm, PWD algorithm, CN, CO, AY digit or
#: None, whether an AZ was present and verified). The password is a `Secret`.
Login = tuple[str, str, str, Secret, int | None, bool]

_LOGIN: Final = re.compile(
    f"93([ -~])([ -~])CN({_VALUE})\\|CO({_VALUE})\\|(?:CP{_VALUE}\\|)?"
    "(?:AY[0-9]AZ[0-9A-F]{4})?"  # matched, not captured, as in `_FIELDS`
)


def read_login(frame: bytes) -> Login | None:
    """A 93 of the usual shape (printable ASCII, CN, CO, an optional CP, each ended by `|`,
    then `AYnAZxxxx` in upper case or nothing) read straight off the frame; None for any
    other (then `decode` reads or refuses it). Each tag appears once, so the values are the
    ones `LoginRequest.from_message(decode(frame))` holds (tests/sip2/test_codec.py)."""
    match = _LOGIN.fullmatch(frame.decode("latin-1"))  # no error: non-ASCII fails the match
    if match is None:
        return None
    uid, pwd, login, text = match.groups()
    password = Secret(text)
    if frame[-1] == 0x7C:  # ends with a field's `|`: no trailer
        return (uid, pwd, login, password, None, False)
    data = frame[:-4]
    value = (1 - zlib.adler32(data) if len(data) <= _ADLER_EXACT else -sum(data)) & 0xFFFF
    if _HEX_PAIRS[value >> 8] + _HEX_PAIRS[value & 0xFF] == frame[-4:]:
        return (uid, pwd, login, password, frame[-7] - 48, True)  # `AYnAZxxxx` ends it
    return None  # a wrong checksum: decode raises it


def read_request(frame: bytes) -> Request | None:
    """The fields a server needs from a plain 23/63 (the PIN check) or 35, read straight off
    the frame, or None for anything unusual: then `decode` reads (or refuses) the frame.

    Why: a self-check's cached PIN check costs little in the core, and building a `Message`,
    then a `PatronRequest` and its `Secret`s, was a good part of what the server spent on it.
    Only ASCII frames with a printable body, a good or absent trailer and no AY among the
    variable fields are read here; for those `decode` would give the same code, AY, AZ and
    first values (tests/sip2/test_codec.py checks both readers on mutated frames)."""
    plain = _PLAIN.get(frame[0]) if frame else None
    if plain is None:
        return None
    # The shape self-checks send, in one regular expression: printable ASCII, the fixed part,
    # AO, AA, an optional AC and AD, BP/BQ, each field ended by `|`, then `AYnAZxxxx` (upper
    # case) or nothing; each tag once, so the groups are the first values.
    match = plain[1].fullmatch(frame.decode("latin-1"))  # no error: non-ASCII fails the match
    if match is not None:
        institution, barcode, text = match.groups()
        pin = None if text is None else Secret(text)
        if frame[-1] == 0x7C:  # ends with a field's `|`: no trailer
            return (plain[0], None, False, institution, barcode, pin)
        data = frame[:-4]  # `_checksum_bytes`, inline
        value = (1 - zlib.adler32(data) if len(data) <= _ADLER_EXACT else -sum(data)) & 0xFFFF
        if _HEX_PAIRS[value >> 8] + _HEX_PAIRS[value & 0xFF] == frame[-4:]:
            # `AYnAZxxxx` ends the frame: n is its seventh byte from the end
            return (plain[0], frame[-7] - 48, True, institution, barcode, pin)
        return None  # a wrong checksum: decode raises it
    spec = _REQUESTS.get(frame[:2])
    if spec is None or not frame.isascii():
        return None
    code, fixed_end = spec
    if len(frame) < fixed_end:
        return None
    try:
        body_end, sequence, checksummed = _trailer(frame, fixed_end)
    except ChecksumError:
        return None
    body = frame[:body_end].decode("ascii")
    if not body.isprintable():
        return None
    # With a `|` in front, `|AA` finds the first field whose piece starts with AA.
    text = "|" + body[fixed_end:]
    if "AY" in text:
        return None  # decode looks for a broken sequence number among the fields
    values: list[str | None] = []
    for tag in ("|AO", "|AA", "|AD"):
        at = text.find(tag)
        if at < 0:
            values.append(None)
            continue
        at += 3
        end = text.find("|", at)
        values.append(text[at:] if end < 0 else text[at:end])
    institution, barcode, text = values
    pin = None if text is None else Secret(text)
    return (code, sequence, checksummed, institution or "", barcode or "", pin)


# --- encoding -------------------------------------------------------------------------------


def clean(value: str) -> str:
    """A value that cannot break framing or a strict client: `|`, CR, LF and any other
    control character become spaces (a store's data can hold anything)."""
    if "|" in value or not value.isprintable():
        return "".join(c if c.isprintable() and c != "|" else " " for c in value)
    return value


def _to_bytes(text: str, charset: Charset) -> bytes:
    if charset == "ascii" and not text.isascii():
        # Transliterate (é → e) rather than drop letters from names.
        text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return text.encode(charset, errors="replace")


def encode(
    message: Message,
    *,
    sequence: int | None = None,
    checksum: bool = False,
    charset: Charset = "cp850",
    terminator: bytes = b"\r",
) -> bytes:
    """Serialise a message: fixed fields padded or cut to width, every variable field followed
    by `|`, then `AY<sequence>` when given and `AZ<checksum>` when asked, then the terminator.
    The checksum is computed over the encoded bytes exactly as they are sent.

    Every response passes through here, so the common case (no value needs cleaning, ASCII
    text) costs one join, one count and one ASCII encode.
    """
    code = message.code
    layout = LAYOUTS.get(code)
    if layout is None:
        raise UnknownMessage("unknown message code")
    fixed = message.fixed
    head = [code]
    for name, length in layout:
        value = fixed.get(name, "")
        if len(value) != length:
            value = value[:length].ljust(length)
        head.append(value)
    fields = message.fields
    text = "".join(head) + "".join([tag + value + "|" for tag, value in fields])
    if text.count("|") != len(fields) or not text.isprintable():
        text = clean("".join(head)) + "".join([tag + clean(value) + "|" for tag, value in fields])
    return encode_rendered(
        text, sequence=sequence, checksum=checksum, charset=charset, terminator=terminator
    )


@dataclass(frozen=True, slots=True)
class Template:
    """A message serialised ahead of time: for answers that repeat with only a fixed field
    changing (the same patron's 64 every few seconds differs only in its transaction date and
    the mirrored AY/AZ), so a server keeps the template and pays only for the changed field,
    the trailer and the checksum. `head` is the code and fixed part as sent, `variable` the
    cleaned, `|`-terminated variable fields."""

    code: str
    head: str
    variable: str


@dataclass(slots=True)  # one per answer: not frozen (cheaper to build); never changed
class Prepared:
    """A response already rendered to text (a template with this use's fixed fields filled in,
    see `render`): what a server hands to its session, which adds the request's mirrored AY/AZ
    and encodes it, instead of a whole `Message`."""

    text: str


def template(message: Message) -> Template:
    """Serialise a message once; `encode_template` then changes fixed fields per use."""
    head = [message.code]
    for name, length in LAYOUTS[message.code]:
        value = message.fixed.get(name, "")
        head.append(value if len(value) == length else value[:length].ljust(length))
    variable = "".join([tag + clean(value) + "|" for tag, value in message.fields])
    return Template(message.code, clean("".join(head)), variable)


def render(tpl: Template, changes: Mapping[str, str]) -> str:
    """A template's text with `changes` replacing fixed fields (e.g. the date), no trailer."""
    head = tpl.head
    spans = _SPANS[tpl.code]
    for name, value in changes.items():
        start, end = spans[name]
        if len(value) != end - start:
            value = value[: end - start].ljust(end - start)
        head = head[:start] + clean(value) + head[end:]
    return head + tpl.variable


def encode_rendered(
    text: str,
    *,
    sequence: int | None = None,
    checksum: bool = False,
    charset: Charset = "cp850",
    terminator: bytes = b"\r",
) -> bytes:
    """`encode` for text from `render`: the trailer, the charset and the checksum."""
    if sequence is not None:
        text += f"AY{sequence % 10}"
    if checksum:
        text += "AZ"
    data = text.encode("ascii") if text.isascii() else _to_bytes(text, charset)
    if checksum:
        data += _checksum_bytes(data)
    return data + terminator


def encode_template(
    tpl: Template,
    changes: Mapping[str, str],
    *,
    sequence: int | None = None,
    checksum: bool = False,
    charset: Charset = "cp850",
    terminator: bytes = b"\r",
) -> bytes:
    """`encode` for a template, with `changes` replacing fixed fields (e.g. the date)."""
    return encode_rendered(
        render(tpl, changes),
        sequence=sequence,
        checksum=checksum,
        charset=charset,
        terminator=terminator,
    )


def _checksum_bytes(data: bytes) -> bytes:
    # -(byte sum) mod 2**16, as `checksum` computes it through `byte_sum`
    small = len(data) <= _ADLER_EXACT
    value = (1 - zlib.adler32(data) if small else -sum(data)) & 0xFFFF
    return _HEX_PAIRS[value >> 8] + _HEX_PAIRS[value & 0xFF]


# --- framing --------------------------------------------------------------------------------


class Framer:
    """Splits a byte stream into frames on CR, CRLF or LF.

    A lone LF (the second half of a CRLF split across reads, or a stray leading LF) makes an
    empty frame, which is dropped. `terminator` remembers what the peer last used, for servers
    that mirror it. A stream that opens with a TLS record header raises `TlsOnPlainPort`;
    more than `max_length` bytes without a terminator raises `FrameTooLong`.
    """

    __slots__ = ("_buf", "_started", "max_length", "pending", "terminator")

    def __init__(self, max_length: int = 4096) -> None:
        self.max_length = max_length
        self._buf = b""
        self._started = False
        self.terminator = b"\r"
        #: Bytes received after the last terminator (half a message): an attribute, not a
        #: property, as the connection reads it after every read.
        self.pending = 0

    def single(self, data: bytes) -> bytes | None:
        """`feed` for the usual read: when `data` is exactly one CR-terminated message and
        nothing is buffered before it, that message (the framer left as `feed` would leave
        it); None for anything else, and then `feed` frames it (or raises). A self-check sends
        one request and waits for its answer, and a discovery layer's session opens with one
        login, so this is nearly every read: no list is built for it."""
        # Bytes tested as ints (`13 in frame` is one memchr): `b"\n" in data` first tries the
        # needle as an index and formats a TypeError, and `count` parses its arguments the
        # slow way, together about 3,500 instructions a read.
        size = len(data)
        if self._buf or size < 2 or size > self.max_length + 1 or data[-1] != 13:
            return None
        frame = data[:-1]
        if 13 in frame or 10 in frame:
            return None
        if not self._started:  # a connection's first read (every session's login)
            if data[0] == 0x16 and data[1] == 0x03:
                return None  # a TLS ClientHello: `feed` raises TlsOnPlainPort
            self._started = True
        self.terminator = b"\r"
        return frame

    def feed(self, data: bytes) -> list[bytes]:
        if not self._started and data:
            self._started = True
            if data[:2] == b"\x16\x03":
                raise TlsOnPlainPort("TLS ClientHello on a plain-text port")
        buf = self._buf + data if self._buf else data
        # Fast path: exactly one CR-terminated message and nothing else.
        if buf and buf[-1] == 0x0D and buf.count(b"\r") == 1 and 10 not in buf:  # an int: memchr
            self._buf = b""
            self.pending = 0
            if len(buf) - 1 > self.max_length:
                raise FrameTooLong("message longer than the limit")
            self.terminator = b"\r"
            return [buf[:-1]] if len(buf) > 1 else []
        frames: list[bytes] = []
        start = 0
        n = len(buf)
        while start < n:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            end = lf if cr < 0 or (0 <= lf < cr) else cr
            frame = buf[start:end]
            if len(frame) > self.max_length:
                raise FrameTooLong("message longer than the limit")
            nxt = end + 1
            if buf[end] == 0x0D:
                if nxt < n and buf[nxt] == 0x0A:
                    nxt += 1
                    term = b"\r\n"
                else:
                    term = b"\r"
            else:
                term = b"\n"
            if frame:
                frames.append(frame)
                self.terminator = term
            start = nxt
        rest = buf[start:]
        if len(rest) > self.max_length:
            raise FrameTooLong("message longer than the limit")
        self._buf = rest
        self.pending = len(rest)
        return frames


# --- dates ----------------------------------------------------------------------------------

_last_date: tuple[int, str] = (-1, "")


def sip_date(now: float) -> str:
    """`YYYYMMDDZZZZHHMMSS` in local time with a blank zone (the spec's preferred form).

    Cached per second: every response carries one and strftime is not free.
    """
    global _last_date
    second = int(now)
    if _last_date[0] == second:
        return _last_date[1]
    text = time.strftime("%Y%m%d    %H%M%S", time.localtime(second))
    _last_date = (second, text)
    return text


def sip_date_utc(moment: dt.datetime) -> str:
    """`YYYYMMDD   ZHHMMSS` for an aware datetime, in UTC."""
    return moment.astimezone(dt.UTC).strftime("%Y%m%d   Z%H%M%S")


def parse_date(text: str) -> dt.datetime | None:
    """Read a SIP2 date leniently: blank zone = local (naive), `Z` = UTC, `0000` and other
    zone letters are taken as local too; all blanks or garbage = None."""
    if len(text) < 18 or not text[:8].isdigit() or not text[12:18].isdigit():
        return None
    try:
        moment = dt.datetime(
            int(text[0:4]),
            int(text[4:6]),
            int(text[6:8]),
            int(text[12:14]),
            int(text[14:16]),
            int(text[16:18]),
        )
    except ValueError:
        return None
    if text[11] == "Z":
        return moment.replace(tzinfo=dt.UTC)
    return moment


def sip_day(day: dt.date) -> str:
    """A date-only value (PA expiry) as `YYYYMMDD`."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"
