"""The codec: framing, trailers, checksums, layouts, both directions; property tests."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.sip2 import codec
from bridge.sip2.codec import (
    ACS_RESEND,
    LAYOUTS,
    RESEND,
    BadSequence,
    ChecksumError,
    Framer,
    FrameTooLong,
    Message,
    ProtocolError,
    TlsOnPlainPort,
    UnknownMessage,
    _checksum_bytes,
    build,
    byte_sum,
    checksum,
    decode,
    encode,
    parse_date,
    supported_messages,
)
from bridge.sip2.messages import LoginRequest


def test_canonical_resend_checksums() -> None:
    assert b"96AZ" + checksum(b"96AZ").encode() == RESEND
    assert b"97AZ" + checksum(b"97AZ").encode() == ACS_RESEND
    assert decode(RESEND).checksummed
    assert decode(ACS_RESEND).code == "97"


def test_checksum_is_zero_padded_uppercase_over_bytes() -> None:
    # A sum whose complement is small needs padding: 0xFFFF - 0x0FFF etc.
    data = bytes([0xFF] * 257)  # sum 65535 → complement 1
    assert checksum(data) == "0001"
    assert checksum("é".encode()) == f"{(-sum('é'.encode())) & 0xFFFF:04X}"


def test_resend_form_az_without_ay() -> None:
    # Palace's test_resend fixture: the spec's form of a resent request.
    m = decode(b"9300CNuser_id|COpassword|AZF620")
    assert m.code == "93" and m.checksummed and m.sequence is None
    assert m.get("CN") == "user_id"
    assert "password" not in repr(m)


@given(st.binary(max_size=5000))
def test_byte_sum_is_the_plain_sum(data: bytes) -> None:
    assert byte_sum(data) == sum(data)


def test_byte_sum_at_the_adler_boundary() -> None:
    """The Adler-32 shortcut is exact up to 256 bytes of 0xFF, and must hand over beyond."""
    for size in (0, 1, 255, 256, 257, 258, 4096):
        for fill in (b"\x00", b"\x7f", b"\xff"):
            data = fill * size
            assert byte_sum(data) == sum(data), (size, fill)
            assert checksum(data) == f"{(-sum(data)) & 0xFFFF:04X}"


@given(st.binary(max_size=600))
def test_answer_checksum_matches_checksum(data: bytes) -> None:
    """The table-driven AZ an answer gets is `checksum`'s value, both sides of 256 bytes."""
    assert _checksum_bytes(data) == checksum(data).encode("ascii")


@given(
    st.text(alphabet="AZY0123456789|ABCDEF ", max_size=40),
    st.integers(0, 9),
    st.integers(0, 300),
)
@example("|", 3, 0)
@example("|", 1, 221)  # the checksummed part is 256 bytes: the last Adler-32 sum
@example("|", 1, 222)
def test_trailer_shortcut_agrees_with_the_general_reader(body: str, seq: int, pad: int) -> None:
    """The four-digit `|AYnAZxxxx` shortcut reads exactly what the general reader reads,
    right or wrong checksum, either side of the Adler-32 boundary."""
    data = f"35{'20260101    120000'}AOMAIN|AA{'x' * pad}{body}AY{seq}AZ".encode()
    for digits in (checksum(data).encode(), b"0000", b"FFFF", b"ffff"):
        frame = data + digits
        assert _read(codec._trailer, frame) == _read(_general_trailer, frame)


def _read(reader: Callable[[bytes, int], object], frame: bytes) -> object:
    try:
        return reader(frame, 20)
    except ChecksumError:
        return "checksum error"


_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")


def _general_trailer(frame: bytes, fixed_end: int) -> object:
    """The trailer reader as it was before its shortcut (the reference)."""
    n = len(frame)
    for digits in (4, 3, 2, 1):
        at = n - digits - 2
        if at < fixed_end or frame[at : at + 2] != b"AZ":
            continue
        hexpart = frame[at + 2 :]
        if not hexpart.isalnum() or not _HEX_DIGITS.issuperset(hexpart):
            continue
        sequence = None
        start = at
        if at - 3 >= fixed_end and frame[at - 3 : at - 1] == b"AY" and 48 <= frame[at - 1] <= 57:
            sequence = frame[at - 1] - 48
            start = at - 3
        if not (start == fixed_end or frame[start - 1] == 0x7C or sequence is not None):
            continue
        if (sum(frame[: at + 2]) + int(hexpart, 16)) & 0xFFFF:
            raise ChecksumError("checksum mismatch")
        return (start, sequence, True)
    if n - 3 >= fixed_end and frame[n - 3 : n - 1] == b"AY" and 48 <= frame[n - 1] <= 57:
        start = n - 3
        if start == fixed_end or frame[start - 1] == 0x7C:
            return (start, frame[n - 1] - 48, False)
    return (n, None, False)


def test_bad_checksum_raises() -> None:
    with pytest.raises(ChecksumError):
        decode(b"9300CNuser_id|COpassword|AZF621")


def test_unpadded_and_lowercase_checksums_are_accepted() -> None:
    body = b"9300CNa|COb|AY1AZ"
    value = (-sum(body)) & 0xFFFF
    assert decode(body + f"{value:04x}".encode()).sequence == 1
    short = b"9300CNab|COb|AY4AZ"
    for extra in range(0, 300):
        candidate = short[:-5] + b"x" * extra + short[-5:]
        value = (-sum(candidate)) & 0xFFFF
        if value < 0x1000:
            assert decode(candidate + f"{value:X}".encode()).checksummed
            break


def test_no_final_pipe_empty_fields_unknown_fields_any_order() -> None:
    m = decode(b"2300120240101    101010AA123|XIabc||AC|AOMAIN|ADpin")
    assert m.get("AA") == "123" and m.get("AO") == "MAIN"
    assert m.get("AC") == "" and m.has("AC")
    assert m.get("AD") == "pin"
    assert m.get("XI") == "abc"


def test_trailing_pipes_and_sequence_without_checksum() -> None:
    m = decode(b"3520240101    101010AOMAIN|AA1|||AY7")
    assert m.sequence == 7 and not m.checksummed and m.get("AA") == "1"


@pytest.mark.parametrize(
    "tail",
    [b"|AY12", b"|AY", b"|AYx", b"|AY12AZ", b"|AYAZ", b"|AY\xbd", b"|AY1x|AOMAIN|"],
)
@pytest.mark.parametrize("checksummed", [False, True])
def test_sequence_that_is_not_one_digit_is_malformed(tail: bytes, checksummed: bool) -> None:
    body = b"3520240101    101010AOMAIN|AA1" + tail
    if checksummed:
        body += b"AZ"
        body += checksum(body).encode()
    with pytest.raises(BadSequence):
        decode(body)


def test_one_digit_sequences_still_read() -> None:
    for n in range(10):
        body = b"3520240101    101010AOMAIN|AA1|AY%dAZ" % n
        assert decode(body + checksum(body).encode()).sequence == n
        assert decode(b"3520240101    101010AOMAIN|AA1|AY%d" % n).sequence == n


@given(st.text(alphabet="0123456789AZYx|", min_size=0, max_size=6), st.booleans())
def test_property_any_ay_is_one_digit_or_refused(ay: str, with_az: bool) -> None:
    body = b"3520240101    101010AOMAIN|AA1|AY" + ay.encode()
    if with_az:
        body += b"AZ"
        body += checksum(body).encode()
    try:
        message = decode(body)
    except ProtocolError:
        return
    assert message.sequence is None or 0 <= message.sequence <= 9
    for tag, value in message.fields:
        assert tag != "AY" or (len(value) == 1 and value.isdigit())


def test_value_ending_like_a_checksum_is_not_one() -> None:
    # "AFxAZ12" has no | before AZ, so it is a field value, not a trailer.
    m = decode(b"3520240101    101010AOMAIN|AFxAZ12")
    assert m.get("AF") == "xAZ12" and not m.checksummed


def test_errors() -> None:
    with pytest.raises(UnknownMessage):
        decode(b"XX")
    with pytest.raises(ProtocolError):
        decode(b"9")
    with pytest.raises(ProtocolError):
        decode(b"630")  # shorter than the fixed part
    with pytest.raises(ProtocolError):
        decode(b"9300CNa\x00b|COx|")
    with pytest.raises(ProtocolError):
        decode(b"9300CN\xff\xfe|CO|", charset="utf-8")
    with pytest.raises(ProtocolError):
        decode(b"9300CN\xe9|CO|", charset="ascii")
    assert decode(b"9300CN\xe9|CO|", charset="cp850").get("CN") == "Ú"


def test_framer_terminators() -> None:
    f = Framer()
    assert f.feed(b"9900802.00\r") == [b"9900802.00"]
    assert f.terminator == b"\r"
    assert f.feed(b"\n9900802.00\r\n99") == [b"9900802.00"]
    assert f.terminator == b"\r\n"
    assert f.feed(b"00802.00\n") == [b"9900802.00"]
    assert f.terminator == b"\n"
    assert f.feed(b"9900802.00\r") == [b"9900802.00"]
    assert f.feed(b"\n") == []
    assert f.feed(b"\r\r\n\n") == []


def test_framer_limits_and_tls() -> None:
    with pytest.raises(TlsOnPlainPort):
        Framer().feed(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    f = Framer(max_length=10)
    with pytest.raises(FrameTooLong):
        f.feed(b"x" * 11)
    with pytest.raises(FrameTooLong):
        Framer(max_length=10).feed(b"y" * 20 + b"\r")
    with pytest.raises(FrameTooLong):
        Framer(max_length=10).feed(b"a\r" + b"y" * 20 + b"\r")


def test_encode_pads_cleans_and_mirrors() -> None:
    m = build("36", {"end_session": "Y", "transaction_date": "20240101    101010"})
    m.fields.extend([("AO", "MA|IN"), ("AF", "two\r\nlines"), ("AE", "a\x00b\tc")])
    data = encode(m, sequence=5, checksum=True, terminator=b"\r\n")
    assert data.endswith(b"\r\n")
    assert b"MA IN|" in data and b"two  lines|" in data and b"a b c|" in data
    again = decode(data[:-2])
    assert again.sequence == 5 and again.checksummed
    assert encode(build("94", {"ok": "1"})) == b"941\r"


def test_ascii_transliterates() -> None:
    m = build("94", {"ok": "1"}, [("AF", "Café")])
    assert encode(m, charset="ascii") == b"941AFCafe|\r"


def test_build_rejects_unknown_fixed_name() -> None:
    with pytest.raises(ProtocolError):
        build("94", {"okay": "1"})
    with pytest.raises(UnknownMessage):
        build("ZZ")


def test_supported_messages_bx() -> None:
    assert supported_messages({"23", "99"}) == "YNNNYNNNNNNNNNNN"


def test_parse_date() -> None:
    assert parse_date("20240102    030405") is not None
    assert parse_date("20240102   Z030405").tzinfo is not None  # type: ignore[union-attr]
    assert parse_date("20240102000003040 ") is None
    assert parse_date("202401020000030405") is not None
    assert parse_date(" " * 18) is None
    assert parse_date("20241399    000000") is None


# --- properties ------------------------------------------------------------------------------

values = st.text(
    alphabet=st.characters(codec="cp850", exclude_characters="|\r\n", min_codepoint=32),
    max_size=30,
).filter(str.isprintable)
tags = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=2, max_size=2).filter(
    lambda t: t != "AY"  # the sequence number is the trailer's, never a field we send
)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    code = draw(st.sampled_from(sorted(LAYOUTS)))
    fixed = {
        name: draw(st.text(alphabet="YN 0123456789", min_size=length, max_size=length))
        for name, length in LAYOUTS[code]
    }
    fields = draw(st.lists(st.tuples(tags, values), max_size=8))
    return Message(code, fixed, fields)


@given(messages(), st.none() | st.integers(0, 9), st.booleans())
def test_property_round_trip(message: Message, sequence: int | None, use_checksum: bool) -> None:
    data = encode(message, sequence=sequence, checksum=use_checksum)
    frames = Framer(max_length=1 << 16).feed(data)
    assert len(frames) == 1
    again = decode(frames[0])
    assert again.code == message.code
    assert again.fixed == message.fixed
    # A value that looks like a trailer ("AY1") can only be lost when no real trailer follows.
    if sequence is not None or use_checksum:
        assert again.fields == message.fields
        assert again.sequence == sequence
        assert again.checksummed == use_checksum


@given(st.binary(max_size=300), st.sampled_from(["cp850", "utf-8", "ascii"]))
def test_property_decode_raises_only_protocol_error(data: bytes, charset: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data, charset=charset)  # type: ignore[arg-type]


@given(st.lists(st.binary(max_size=60), max_size=10))
def test_property_framer_raises_only_protocol_error(chunks: list[bytes]) -> None:
    framer = Framer(max_length=100)
    try:
        for chunk in chunks:
            for frame in framer.feed(chunk):
                assert b"\r" not in frame and b"\n" not in frame and frame
    except ProtocolError:
        pass


@given(st.lists(st.sampled_from([b"\r", b"\r\n", b"\n"]), min_size=1, max_size=5), st.data())
def test_property_framing_any_split(terms: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(b"9900802.00" + t for t in terms)
    cut = data.draw(st.integers(0, len(stream)))
    framer = Framer()
    frames = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
    assert frames == [b"9900802.00"] * len(terms)


_FRAMER_PIECES = st.sampled_from(
    [b"\r", b"\n", b"\r\n", b"\x16\x03", b"6300120261204    174937", b"AA123|", b"y" * 40]
)


def _framer_state(framer: Framer) -> tuple[object, ...]:
    return (framer._buf, framer._started, framer.pending, framer.terminator)


@given(
    st.lists(st.lists(_FRAMER_PIECES | st.binary(max_size=8), max_size=6), max_size=5),
    st.integers(0, 60),
)
def test_property_framer_single_agrees_with_feed(reads: list[list[bytes]], limit: int) -> None:
    """`Framer.single` (the connection's one-request-per-read path) either declines or gives
    the one frame `feed` gives for the same read, leaving the framer in the same state."""
    fast, general = Framer(max_length=limit), Framer(max_length=limit)
    for pieces in reads:
        data = b"".join(pieces)
        try:
            expected = general.feed(data)
        except ProtocolError:
            return  # `single` never raises: a read it declines goes to `feed`, which raises
        frame = fast.single(data)
        if frame is None:
            assert fast.feed(data) == expected
        else:
            assert [frame] == expected
        assert _framer_state(fast) == _framer_state(general)


def _first_single(framer: Framer, data: bytes) -> bytes | None:
    """`Framer.single` as first written (bytes counted and searched as bytes), but taking a
    first read too unless it opens like TLS (`feed`'s check; the property against `feed`
    above shows that first reads come out as `feed` gives them)."""
    if (
        framer._buf
        or (not framer._started and data[:2] == b"\x16\x03")
        or data[-1:] != b"\r"
        or data.count(b"\r") != 1
        or b"\n" in data
        or len(data) == 1
        or len(data) > framer.max_length + 1
    ):
        return None
    framer._started = True
    framer.terminator = b"\r"
    return data[:-1]


@given(
    st.lists(st.lists(_FRAMER_PIECES | st.binary(max_size=8), max_size=6), max_size=5),
    st.integers(0, 60),
)
def test_property_framer_single_agrees_with_the_first_single(
    reads: list[list[bytes]], limit: int
) -> None:
    """The int-tested `single` takes exactly the reads the first one took, with the same frame
    and state, whatever came before (each read the general way after)."""
    fast, first = Framer(max_length=limit), Framer(max_length=limit)
    for pieces in reads:
        data = b"".join(pieces)
        assert fast.single(data) == _first_single(first, data)
        assert _framer_state(fast) == _framer_state(first)
        with contextlib.suppress(ProtocolError):
            fast.feed(data)
        with contextlib.suppress(ProtocolError):
            first.feed(data)


def test_framer_single_takes_the_usual_read_only() -> None:
    framer = Framer(max_length=10)
    assert framer.single(b"\x16\x03\x01\x02\r") is None  # TLS opening: `feed` raises
    assert framer.single(b"9900802.00\r") == b"9900802.00"  # the first read too
    assert framer._started and framer.single(b"9900802.00\r") == b"9900802.00"
    assert framer.single(b"99008\r02.00\r") is None  # two frames
    assert framer.single(b"9900802.00\r\n") is None  # CRLF
    assert framer.single(b"9900802.001\r") is None  # over the limit: `feed` raises
    assert framer.single(b"\r") is None
    assert framer.feed(b"99") == []
    assert framer.single(b"00802.00\r") is None  # half a message buffered


@given(messages(), st.none() | st.integers(0, 9), st.booleans(), st.data())
def test_property_template_encodes_like_encode(
    message: Message, sequence: int | None, use_checksum: bool, data: st.DataObject
) -> None:
    from bridge.sip2.codec import encode_template, template

    layout = LAYOUTS[message.code]
    if not layout:
        return
    name, length = data.draw(st.sampled_from(layout))
    value = data.draw(st.text(alphabet="0123456789 YN", min_size=length, max_size=length))
    changed = Message(message.code, {**message.fixed, name: value}, message.fields)
    expected = encode(changed, sequence=sequence, checksum=use_checksum)
    got = encode_template(
        template(message), {name: value}, sequence=sequence, checksum=use_checksum
    )
    assert got == expected


@given(st.text(max_size=24))
def test_property_parse_date_never_raises(text: str) -> None:
    parse_date(text)


# --- read_request: the fast reader of 23/63/35 agrees with decode ----------------------------

_REQUEST_FRAMES = (
    b"63001" + b"20240101    101010" + b"          " + b"AOMAIN|AA123|AC|AD1234|",
    b"23001" + b"20240101    101010" + b"AOMAIN|AA123|AC|AD1234|",
    b"35" + b"20240101    101010" + b"AOMAIN|AA123|",
    b"63001" + b"20240101    101010" + b"Y         " + b"AA9|AD|AO|AAx|ADy|BP1|BQ5",
)
_MUTATION = st.sampled_from(list(b"|AYZDOC0123456789 \x00\x7f\xe9\r")) | st.integers(0, 255)


def _with_trailer(body: bytes, sequence: int | None, az: bool) -> bytes:
    if sequence is not None:
        body += b"AY%d" % sequence
    if az:
        body += b"AZ" + checksum(body + b"AZ").encode()
    return body


def _mutated(draw: st.DrawFn, frames: tuple[bytes, ...]) -> bytes:
    """One of `frames` with or without AY/AZ, then a few bytes replaced, inserted or cut (a
    few, or everything to the end): with the trailer added before or after the mutation (a
    good or a broken checksum)."""
    frame = draw(st.sampled_from(frames))
    sequence = draw(st.none() | st.integers(0, 9))
    az = draw(st.booleans())
    before = draw(st.booleans())
    if before:
        frame = _with_trailer(frame, sequence, az)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(frame)))
        kind = draw(st.sampled_from(["replace", "insert", "cut", "truncate"]))
        byte = bytes([draw(_MUTATION)])
        if kind == "insert":
            frame = frame[:at] + byte + frame[at:]
        elif kind == "replace":
            frame = frame[:at] + byte + frame[at + 1 :]
        elif kind == "cut":
            frame = frame[:at] + frame[at + draw(st.integers(1, 4)) :]
        else:
            frame = frame[:at]
    if not before:
        frame = _with_trailer(frame, sequence, az)
    return frame


@st.composite
def request_frames(draw: st.DrawFn) -> bytes:
    """A mutated 23/63/35."""
    return _mutated(draw, _REQUEST_FRAMES)


def _shown(read: codec.Request) -> tuple[object, ...]:
    """A `read_request` answer with its PIN revealed, to compare."""
    pin = read[5]
    assert pin is None or repr(pin) == "Secret(***)"
    return (*read[:5], None if pin is None else pin.reveal().decode())


def _as_decode_reads(frame: bytes) -> tuple[object, ...] | None:
    """What `read_request` must return for a frame (PIN revealed), worked out from `decode`."""
    try:
        m = decode(frame)
    except ProtocolError:
        return None
    if m.code not in ("23", "63", "35"):
        return None
    first = dict(reversed(m.fields))
    return (m.code, m.sequence, m.checksummed, first.get("AO", ""), first.get("AA", ""),
            first.get("AD"))  # fmt: skip


@given(request_frames())
@example(_with_trailer(_REQUEST_FRAMES[0], 3, True))
@example(_with_trailer(_REQUEST_FRAMES[0], None, False))
@example(_with_trailer(_REQUEST_FRAMES[2], 1, True))
@example(_REQUEST_FRAMES[0] + b"AY12AZ0000")
def test_read_request_agrees_with_decode(frame: bytes) -> None:
    read = codec.read_request(frame)
    if read is None:
        return  # the general decode reads (or refuses) it
    assert _shown(read) == _as_decode_reads(frame)


@given(st.sampled_from(_REQUEST_FRAMES[:3]), st.none() | st.integers(0, 9), st.booleans())
def test_read_request_reads_the_plain_requests(body: bytes, sequence: int | None, az: bool) -> None:
    frame = _with_trailer(body, sequence, az)
    read = codec.read_request(frame)
    assert read is not None and _shown(read) == _as_decode_reads(frame)


def test_read_request_leaves_the_unusual_to_decode() -> None:
    good = _with_trailer(_REQUEST_FRAMES[0], 3, True)
    assert codec.read_request(good[:-1] + (b"0" if good[-1:] != b"0" else b"1")) is None
    assert codec.read_request(_REQUEST_FRAMES[0].replace(b"MAIN", "MÄIN".encode())) is None
    assert codec.read_request(_REQUEST_FRAMES[0].replace(b"MAIN", b"MA\x00N")) is None
    assert codec.read_request(_REQUEST_FRAMES[0] + b"AYx|") is None
    assert codec.read_request(b"6300120240101") is None
    assert codec.read_request(b"9300CNa|COb|") is None


# The fast reader as first written (the plain shape's pattern chosen by the code's two bytes,
# its trailer captured, then the general fallback): the reference `read_request` must agree
# with, field for field, now that it picks the pattern by the first byte and reads the
# trailer's digit off the frame.
_REGEX_VALUE = "[ -{}~]*"
_REGEX_FIELDS = (
    f"AO({_REGEX_VALUE})\\|AA({_REGEX_VALUE})\\|(?:AC{_REGEX_VALUE}\\|)?"
    f"(?:AD({_REGEX_VALUE})\\|)?(?:B[PQ]{_REGEX_VALUE}\\|)*(?:AY([0-9])AZ([0-9A-F]{{4}}))?"
)
_REGEX_PLAIN = {
    code.encode(): (code, re.compile(f"{code}[ -~]{{{codec.FIXED_END[code] - 2}}}{_REGEX_FIELDS}"))
    for code in ("63", "23", "35")
}


def _regex_read_request(frame: bytes) -> codec.Request | None:
    plain = _REGEX_PLAIN.get(frame[:2])
    if plain is None:
        return None
    match = plain[1].fullmatch(frame.decode("latin-1"))
    if match is not None:
        institution, barcode, text, sequence_digit, _ = match.groups()
        pin = None if text is None else Secret(text)
        if sequence_digit is None:
            return (plain[0], None, False, institution, barcode, pin)
        if checksum(frame[:-4]).encode() == frame[-4:]:
            return (plain[0], ord(sequence_digit) - 48, True, institution, barcode, pin)
        return None
    code, fixed_end = plain[0], codec.FIXED_END[plain[0]]
    if not frame.isascii() or len(frame) < fixed_end:
        return None
    try:
        body_end, sequence, checksummed = codec._trailer(frame, fixed_end)
    except ChecksumError:
        return None
    body = frame[:body_end].decode("ascii")
    if not body.isprintable():
        return None
    text = "|" + body[fixed_end:]
    if "AY" in text:
        return None
    values: list[str | None] = []
    for tag in ("|AO", "|AA", "|AD"):
        at = text.find(tag)
        if at < 0:
            values.append(None)
            continue
        end = text.find("|", at + 3)
        values.append(text[at + 3 :] if end < 0 else text[at + 3 : end])
    institution, barcode, text = values
    pin = None if text is None else Secret(text)
    return (code, sequence, checksummed, institution or "", barcode or "", pin)


_SHAPE_PIECES = st.sampled_from(
    [b"AO", b"AA", b"AC", b"AD", b"BP", b"BQ", b"B", b"BX", b"AY", b"AZ", b"|", b"MAIN", b"1", b"x"]
)


@st.composite
def shaped_requests(draw: st.DrawFn) -> bytes:
    """A 23/63/35 fixed part, then fields built from tags, values and `|` in any order, with a
    good, a broken or no trailer: every branch of the plain-shape reader."""
    code = draw(st.sampled_from([b"63", b"23", b"35"]))
    fixed = b"0" * (codec.FIXED_END[code.decode()] - 2 + draw(st.integers(-2, 1)))
    frame = code + fixed + b"".join(draw(st.lists(_SHAPE_PIECES, max_size=16)))
    frame = _with_trailer(frame, draw(st.none() | st.integers(0, 9)), draw(st.booleans()))
    if draw(st.booleans()):  # a good checksum in lower case: only the general reader takes it
        frame = frame[:-4] + frame[-4:].lower()
    return frame


def _lower_trailer(frame: bytes) -> bytes:
    """The same frame with its AZ's hex digits in lower case (same checksum value)."""
    assert frame[-6:-4] == b"AZ" and frame[-4:].lower() != frame[-4:], frame
    return frame[:-4] + frame[-4:].lower()


def _same_read(frame: bytes) -> None:
    new, old = codec.read_request(frame), _regex_read_request(frame)
    assert (new is None) == (old is None)
    if new is not None and old is not None:
        assert _shown(new) == _shown(old)


@given(request_frames() | shaped_requests() | st.binary(max_size=80))
@example(_with_trailer(_REQUEST_FRAMES[0], 3, True))
@example(_REQUEST_FRAMES[0] + b"AY3AZabcd")
@example(_REQUEST_FRAMES[0] + b"AY3AZ0000")
@example(_REQUEST_FRAMES[0] + b"AY3AZ000")
@example(_REQUEST_FRAMES[3])
def test_read_request_agrees_with_the_regex_reader(frame: bytes) -> None:
    """`read_request` gives what the first-written reader gave: the same fields and PIN, or
    None (for `decode` to read or refuse) for the same frames."""
    _same_read(frame)


def test_read_request_shape_cases() -> None:
    base = _REQUEST_FRAMES[0]
    for frame in (
        base,
        base[:-1],  # no last `|`
        base.replace(b"AC|", b""),
        base.replace(b"AD1234|", b""),
        base.replace(b"AC|AD1234|", b"AD1234|AC|"),
        base + b"BP1|BQ2|",
        base + b"BP1|AD9|",
        base + b"BXAY1|",  # an AY among the fields: the general reader declines it
        base + b"BPAY1|",
        base + b"AD9|",
        _with_trailer(base, 0, True).replace(b"AZ", b"AZ "),
        _with_trailer(base, 9, True)[:-1] + b"g",
        _lower_trailer(_with_trailer(base, 9, True)),
        _lower_trailer(_with_trailer(base + b"BP1|", 2, True)),
        base + b"AY1AZ",
        base.replace(b"0", b"|", 1),  # a `|` in the fixed part
        base[:20],
    ):
        for variant in (frame, _with_trailer(frame, 4, True), _with_trailer(frame, 5, False)):
            _same_read(variant)


_LOGIN_FRAMES = (
    b"9300CNselfcheck|COsc-secret-1|CPdesk|",
    b"9300CNselfcheck|COsc-secret-1|",
    b"9301CN|CO|CPa|CNb|",
    b"9300CNselfcheckCOsecret|",
)


@st.composite
def login_frames(draw: st.DrawFn) -> bytes:
    """A mutated 93."""
    return _mutated(draw, _LOGIN_FRAMES)


@given(login_frames())
@example(_with_trailer(_LOGIN_FRAMES[0], 0, True))
@example(_with_trailer(_LOGIN_FRAMES[1], None, False))
def test_read_login_agrees_with_decode(frame: bytes) -> None:
    read = codec.read_login(frame)
    if read is None:
        return
    m = decode(frame)
    request = LoginRequest.from_message(m)
    assert read[:3] == (request.uid_algorithm, request.pwd_algorithm, request.login)
    assert read[3].reveal() == request.password.reveal()
    assert read[4:] == (m.sequence, m.checksummed)


_REGEX_LOGIN = re.compile(
    f"93([ -~])([ -~])CN({_REGEX_VALUE})\\|CO({_REGEX_VALUE})\\|(?:CP{_REGEX_VALUE}\\|)?"
    "(?:AY([0-9])AZ([0-9A-F]{4}))?"
)


def _regex_read_login(frame: bytes) -> tuple[object, ...] | None:
    """`read_login` as first written (the trailer captured), its password revealed."""
    match = _REGEX_LOGIN.fullmatch(frame.decode("latin-1"))
    if match is None:
        return None
    uid, pwd, login, text, digit, _ = match.groups()
    if digit is None:
        return (uid, pwd, login, text.encode(), None, False)
    if checksum(frame[:-4]).encode() == frame[-4:]:
        return (uid, pwd, login, text.encode(), int(digit), True)
    return None


@given(login_frames() | st.binary(max_size=60))
@example(_with_trailer(_LOGIN_FRAMES[0], 0, True))
@example(_with_trailer(_LOGIN_FRAMES[1], None, False))
@example(_with_trailer(_LOGIN_FRAMES[0], 7, False))
def test_read_login_agrees_with_the_regex_reader(frame: bytes) -> None:
    read = codec.read_login(frame)
    shown = None if read is None else (*read[:3], read[3].reveal(), *read[4:])
    assert shown == _regex_read_login(frame)


def test_read_login_reads_the_usual_login() -> None:
    read = codec.read_login(_with_trailer(_LOGIN_FRAMES[0], 0, True))
    assert read is not None and read[:3] == ("0", "0", "selfcheck") and read[4:] == (0, True)
    assert read[3].reveal() == b"sc-secret-1" and "sc-secret" not in repr(read)
    assert codec.read_login(_LOGIN_FRAMES[0][:-1] + b"AY1AZ0000") is None
    assert codec.read_login(_LOGIN_FRAMES[0].replace(b"desk", "dèsk".encode())) is None
