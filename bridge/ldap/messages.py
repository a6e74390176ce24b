"""LDAPv3 requests, filters and controls as typed values; responses as bytes (RFC 4511).

`decode(pdu)` turns one complete LDAPMessage into a `Message` or raises `ProtocolError` (the
server then sends a notice of disconnection, as RFC 4511 §4.1.1 asks). Operations we do not
serve (add, modify, delete, modify DN) decode to `Unsupported` carrying the response tag, so
the client gets the right response type with an error code, never silence. Passwords become
`Secret` the moment they leave the buffer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bridge.core.secret import Secret
from bridge.ldap.ber import (
    ENUMERATED,
    INTEGER,
    OCTET_STRING,
    SEQUENCE,
    ProtocolError,
    boolean,
    enumerated,
    expect,
    integer,
    octets,
    read_tlv,
    sequence,
    tlv,
    to_bool,
    to_int,
    to_text,
)

MAX_FILTER_DEPTH: Final = 32
MAX_FILTER_ITEMS: Final = 512
MAX_ATTRIBUTES: Final = 128
MAX_CONTROLS: Final = 32
MAX_INT32: Final = 2**31 - 1

# Application tags of the protocolOp CHOICE
BIND_REQUEST: Final = 0x60
BIND_RESPONSE: Final = 0x61
UNBIND_REQUEST: Final = 0x42
SEARCH_REQUEST: Final = 0x63
SEARCH_RESULT_ENTRY: Final = 0x64
SEARCH_RESULT_DONE: Final = 0x65
MODIFY_REQUEST: Final = 0x66
MODIFY_RESPONSE: Final = 0x67
ADD_REQUEST: Final = 0x68
ADD_RESPONSE: Final = 0x69
DEL_REQUEST: Final = 0x4A
DEL_RESPONSE: Final = 0x6B
MODDN_REQUEST: Final = 0x6C
MODDN_RESPONSE: Final = 0x6D
COMPARE_REQUEST: Final = 0x6E
COMPARE_RESPONSE: Final = 0x6F
ABANDON_REQUEST: Final = 0x50
EXTENDED_REQUEST: Final = 0x77
EXTENDED_RESPONSE: Final = 0x78

# Requests we recognise but do not perform → the response tag that answers them.
UNSUPPORTED: Final = {
    MODIFY_REQUEST: MODIFY_RESPONSE,
    ADD_REQUEST: ADD_RESPONSE,
    DEL_REQUEST: DEL_RESPONSE,
    MODDN_REQUEST: MODDN_RESPONSE,
}

# OIDs
OID_STARTTLS: Final = "1.3.6.1.4.1.1466.20037"
OID_WHOAMI: Final = "1.3.6.1.4.1.4203.1.11.3"
OID_PASSWD_MODIFY: Final = "1.3.6.1.4.1.4203.1.11.1"  # noqa: S105 - an OID
OID_NOTICE_OF_DISCONNECTION: Final = "1.3.6.1.4.1.1466.20036"
OID_PAGED_RESULTS: Final = "1.2.840.113556.1.4.319"
OID_PPOLICY: Final = "1.3.6.1.4.1.42.2.27.8.5.1"
OID_MANAGE_DSA_IT: Final = "2.16.840.1.113730.3.4.2"


# --- filters --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Filter


@dataclass(frozen=True, slots=True)
class Equality:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Substrings:
    attr: str
    initial: bytes | None
    any: tuple[bytes, ...]
    final: bytes | None


@dataclass(frozen=True, slots=True)
class GreaterOrEqual:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class LessOrEqual:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Present:
    attr: str


@dataclass(frozen=True, slots=True)
class Approx:
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class Extensible:
    rule: str | None
    attr: str | None
    value: bytes
    dn_attributes: bool


Filter = (
    And
    | Or
    | Not
    | Equality
    | Substrings
    | GreaterOrEqual
    | LessOrEqual
    | Present
    | Approx
    | Extensible
)


# --- operations -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    oid: str
    critical: bool
    value: bytes | None


# Decoded per request, so not `frozen` (a frozen dataclass's __init__ costs a microsecond per
# instance in `object.__setattr__`); treat as immutable all the same.
@dataclass(slots=True)
class BindRequest:
    version: int
    name: str
    password: Secret | None  # None: SASL
    sasl_mechanism: str | None = None


@dataclass(frozen=True, slots=True)
class UnbindRequest:
    pass


@dataclass(frozen=True, slots=True)
class SearchRequest:
    base: str
    scope: int  # 0 base, 1 one level, 2 subtree
    deref: int
    size_limit: int
    time_limit: int
    types_only: bool
    filter: Filter
    attributes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompareRequest:
    dn: str
    attr: str
    value: bytes


@dataclass(frozen=True, slots=True)
class AbandonRequest:
    target: int


@dataclass(frozen=True, slots=True)
class ExtendedRequest:
    name: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A write operation we refuse; `response` is the tag of its response type."""

    response: int


Operation = (
    BindRequest
    | UnbindRequest
    | SearchRequest
    | CompareRequest
    | AbandonRequest
    | ExtendedRequest
    | Unsupported
)


@dataclass(slots=True)  # per request: not frozen (see BindRequest), immutable by convention
class Message:
    id: int
    op: Operation
    controls: tuple[Control, ...] = ()

    def control(self, oid: str) -> Control | None:
        for c in self.controls:
            if c.oid == oid:
                return c
        return None


# --- decoding -------------------------------------------------------------------------------


def decode(pdu: bytes) -> Message:
    """One complete LDAPMessage (as framed by `ber.frame_length`)."""
    try:
        quick = _quick(pdu)
    except (IndexError, UnicodeDecodeError):
        quick = None  # not the usual shape: the general reader decides (and says what is wrong)
    return _general(pdu) if quick is None else quick


def _general(pdu: bytes) -> Message:
    """Any LDAPMessage, element by element (every refusal of a malformed PDU is made here)."""
    start, end = expect(pdu, 0, len(pdu), SEQUENCE)
    if end != len(pdu):
        raise ProtocolError("trailing octets after the message")
    id_start, id_end = expect(pdu, start, end, INTEGER)
    msgid = to_int(pdu, id_start, id_end)
    if not 0 <= msgid <= MAX_INT32:
        raise ProtocolError("messageID out of range")
    tag, op_start, op_end = read_tlv(pdu, id_end, end)
    op = _operation(pdu, tag, op_start, op_end)
    controls: tuple[Control, ...] = ()
    if op_end < end:
        c_start, c_end = expect(pdu, op_end, end, 0xA0)
        controls = _controls(pdu, c_start, c_end)
        if c_end != end:
            raise ProtocolError("trailing octets after controls")
    return Message(msgid, op, controls)


# --- the one-pass reader for the usual requests ----------------------------------------------
#
# Nearly every PDU a vendor sends is a simple bind or a search whose filter is an equality or
# an AND of equalities, without controls, every inner element in short form. `_quick` reads
# exactly that in one pass over the bytes, with no call per element, and returns None for
# anything else (then `decode`'s general reader runs from the start). It accepts a PDU only
# when its elements tile their parents exactly, each with the tag the general reader expects
# and a value the general reader would accept, so what it returns is what the general reader
# would have returned; every refusal, and every error message, stays the general reader's.


def _quick(pdu: bytes) -> Message | None:
    n = len(pdu)
    if pdu[0] != SEQUENCE:
        return None
    first = pdu[1]
    if first < 0x80:
        pos = 2
    elif first == 0x81:  # an envelope of 128-255 octets (a search with a long base DN)
        first = pdu[2]
        pos = 3
    else:
        return None
    if pos + first != n or pdu[pos] != INTEGER:
        return None
    id_len = pdu[pos + 1]
    if not 1 <= id_len <= 4:
        return None
    pos += 2
    msgid = int.from_bytes(pdu[pos : pos + id_len], "big", signed=True)
    if msgid < 0:
        return None
    pos += id_len
    tag = pdu[pos]
    size = pdu[pos + 1]
    if size < 0x80:
        pos += 2
    elif size == 0x81:
        size = pdu[pos + 2]
        pos += 3
    else:
        return None
    if pos + size != n:  # controls follow, or the lengths disagree
        return None
    op: Operation | None
    if tag == BIND_REQUEST:
        op = _quick_bind(pdu, pos, n)
    elif tag == SEARCH_REQUEST:
        op = _quick_search(pdu, pos, n)
    else:
        return None
    return None if op is None else Message(msgid, op)


def _quick_bind(data: bytes, pos: int, end: int) -> BindRequest | None:
    """version, name, simple password: `02 01 v 04 n name 80 p password`."""
    if data[pos] != INTEGER or data[pos + 1] != 1 or data[pos + 2] >= 0x80:
        return None
    version = data[pos + 2]
    if data[pos + 3] != OCTET_STRING:
        return None
    size = data[pos + 4]
    if size >= 0x80:
        return None
    pos += 5
    name_end = pos + size
    if name_end + 2 > end or data[name_end] != 0x80:
        return None
    p_size = data[name_end + 1]
    if p_size >= 0x80 or name_end + 2 + p_size != end:
        return None
    name = data[pos:name_end].decode("utf-8")
    return BindRequest(version, name, Secret(data[name_end + 2 : end]))


def _quick_search(data: bytes, pos: int, end: int) -> SearchRequest | None:
    """base, scope, deref, limits, typesOnly, an equality or an AND of equalities, the
    attribute list: each element in short form."""
    if data[pos] != OCTET_STRING:
        return None
    size = data[pos + 1]
    if size >= 0x80:
        return None
    pos += 2
    base = data[pos : pos + size].decode("utf-8")
    pos += size
    # scope and deref: one octet each; 0x80 and up is negative, refused by the general reader
    if data[pos : pos + 2] != b"\x0a\x01" or data[pos + 3 : pos + 5] != b"\x0a\x01":
        return None
    scope = data[pos + 2]
    deref = data[pos + 5]
    if scope > 2 or deref > 3:
        return None
    pos += 6
    limits = []
    for _ in range(2):
        if data[pos] != INTEGER:
            return None
        size = data[pos + 1]
        if not 1 <= size <= 4:
            return None
        value = int.from_bytes(data[pos + 2 : pos + 2 + size], "big", signed=True)
        if value < 0:
            return None
        limits.append(value)
        pos += 2 + size
    if data[pos] != 0x01 or data[pos + 1] != 1:
        return None
    types_only = data[pos + 2] != 0
    pos += 3
    tag = data[pos]
    size = data[pos + 1]
    if size >= 0x80:
        return None
    pos += 2
    f_end = pos + size
    filt: Filter
    if tag == 0xA3:
        ava = _quick_ava(data, pos, f_end)
        if ava is None:
            return None
        filt = ava
    elif tag == 0xA0:
        items: list[Filter] = []
        while pos < f_end:
            if data[pos] != 0xA3:
                return None
            size = data[pos + 1]
            if size >= 0x80:
                return None
            ava = _quick_ava(data, pos + 2, pos + 2 + size)
            if ava is None:
                return None
            items.append(ava)
            pos += 2 + size
        if pos != f_end:
            return None
        filt = And(tuple(items))
    else:
        return None
    pos = f_end
    if pos + 2 > end or data[pos] != SEQUENCE or pos + 2 + data[pos + 1] != end:
        return None  # (a long-form length makes the sum miss `end`)
    pos += 2
    attrs: list[str] = []
    while pos < end:
        size = data[pos + 1]
        if data[pos] != OCTET_STRING or size >= 0x80:
            return None
        pos += 2
        attrs.append(data[pos : pos + size].decode("utf-8"))
        pos += size
    if pos != end or len(attrs) > MAX_ATTRIBUTES:
        return None
    return SearchRequest(base, scope, deref, limits[0], limits[1], types_only, filt, tuple(attrs))


def _quick_ava(data: bytes, pos: int, end: int) -> Equality | None:
    """`04 a attr 04 v value`, exactly filling [pos, end)."""
    if data[pos] != OCTET_STRING:
        return None
    size = data[pos + 1]
    if size >= 0x80:
        return None
    pos += 2
    attr_end = pos + size
    if attr_end + 2 > end or data[attr_end] != OCTET_STRING:
        return None
    v_size = data[attr_end + 1]
    if v_size >= 0x80 or attr_end + 2 + v_size != end:
        return None
    return Equality(data[pos:attr_end].decode("utf-8"), data[attr_end + 2 : end])


def _operation(data: bytes, tag: int, start: int, end: int) -> Operation:
    if tag == BIND_REQUEST:
        return _bind(data, start, end)
    if tag == SEARCH_REQUEST:
        return _search(data, start, end)
    if tag == UNBIND_REQUEST:
        return UnbindRequest()
    if tag == ABANDON_REQUEST:
        return AbandonRequest(to_int(data, start, end))
    if tag == EXTENDED_REQUEST:
        return _extended(data, start, end)
    if tag == COMPARE_REQUEST:
        return _compare(data, start, end)
    if tag in UNSUPPORTED:
        return Unsupported(UNSUPPORTED[tag])
    raise ProtocolError(f"not a request: 0x{tag:02x}")


def _bind(data: bytes, start: int, end: int) -> BindRequest:
    v_start, pos = expect(data, start, end, INTEGER)
    version = to_int(data, v_start, pos)
    n_start, pos = expect(data, pos, end, OCTET_STRING)
    name = to_text(data, n_start, pos)
    tag, a_start, a_end = read_tlv(data, pos, end)
    if a_end != end:
        raise ProtocolError("trailing octets in bind")
    if tag == 0x80:
        return BindRequest(version, name, Secret(data[a_start:a_end]))
    if tag == 0xA3:
        m_start, m_end = expect(data, a_start, a_end, OCTET_STRING)
        return BindRequest(version, name, None, to_text(data, m_start, m_end))
    raise ProtocolError("unknown authentication choice")


def _search(data: bytes, start: int, end: int) -> SearchRequest:
    b_start, pos = expect(data, start, end, OCTET_STRING)
    base = to_text(data, b_start, pos)
    s_start, pos = expect(data, pos, end, ENUMERATED)
    scope = to_int(data, s_start, pos)
    d_start, pos = expect(data, pos, end, ENUMERATED)
    deref = to_int(data, d_start, pos)
    z_start, pos = expect(data, pos, end, INTEGER)
    size_limit = to_int(data, z_start, pos)
    t_start, pos = expect(data, pos, end, INTEGER)
    time_limit = to_int(data, t_start, pos)
    o_start, pos = expect(data, pos, end, 0x01)
    types_only = to_bool(data, o_start, pos)
    if scope not in (0, 1, 2) or deref not in (0, 1, 2, 3):
        raise ProtocolError("bad scope or derefAliases")
    if not (0 <= size_limit <= MAX_INT32 and 0 <= time_limit <= MAX_INT32):
        raise ProtocolError("bad size or time limit")
    budget = [MAX_FILTER_ITEMS]
    filt, pos = _filter(data, pos, end, 0, budget)
    a_start, a_end = expect(data, pos, end, SEQUENCE)
    if a_end != end:
        raise ProtocolError("trailing octets in search")
    attrs: list[str] = []
    pos = a_start
    while pos < a_end:
        x_start, pos = expect(data, pos, a_end, OCTET_STRING)
        attrs.append(to_text(data, x_start, pos))
        if len(attrs) > MAX_ATTRIBUTES:
            raise ProtocolError("too many attributes")
    return SearchRequest(base, scope, deref, size_limit, time_limit, types_only, filt, tuple(attrs))


def _ava(data: bytes, start: int, end: int) -> tuple[str, bytes]:
    a_start, pos = expect(data, start, end, OCTET_STRING)
    v_start, v_end = expect(data, pos, end, OCTET_STRING)
    if v_end != end:
        raise ProtocolError("trailing octets in assertion")
    return to_text(data, a_start, pos), data[v_start:v_end]


def _filter(data: bytes, pos: int, end: int, depth: int, budget: list[int]) -> tuple[Filter, int]:
    if depth > MAX_FILTER_DEPTH:
        raise ProtocolError("filter nested too deeply")
    budget[0] -= 1
    if budget[0] < 0:
        raise ProtocolError("filter too large")
    tag, start, stop = read_tlv(data, pos, end)
    if tag in (0xA0, 0xA1):
        items: list[Filter] = []
        p = start
        while p < stop:
            item, p = _filter(data, p, stop, depth + 1, budget)
            items.append(item)
        return (And(tuple(items)) if tag == 0xA0 else Or(tuple(items))), stop
    if tag == 0xA2:
        item, p = _filter(data, start, stop, depth + 1, budget)
        if p != stop:
            raise ProtocolError("trailing octets in not")
        return Not(item), stop
    if tag == 0xA3:
        return Equality(*_ava(data, start, stop)), stop
    if tag == 0xA5:
        return GreaterOrEqual(*_ava(data, start, stop)), stop
    if tag == 0xA6:
        return LessOrEqual(*_ava(data, start, stop)), stop
    if tag == 0xA8:
        return Approx(*_ava(data, start, stop)), stop
    if tag == 0x87:
        return Present(to_text(data, start, stop)), stop
    if tag == 0xA4:
        return _substrings(data, start, stop), stop
    if tag == 0xA9:
        return _extensible(data, start, stop), stop
    raise ProtocolError(f"unknown filter choice 0x{tag:02x}")


def _substrings(data: bytes, start: int, end: int) -> Substrings:
    a_start, pos = expect(data, start, end, OCTET_STRING)
    attr = to_text(data, a_start, pos)
    s_start, s_end = expect(data, pos, end, SEQUENCE)
    if s_end != end:
        raise ProtocolError("trailing octets in substrings")
    initial: bytes | None = None
    final: bytes | None = None
    middle: list[bytes] = []
    p = s_start
    seen = 0
    while p < s_end:
        tag, v_start, p = read_tlv(data, p, s_end)
        value = data[v_start:p]
        seen += 1
        if tag == 0x80 and seen == 1:
            initial = value
        elif tag == 0x81 and final is None:
            middle.append(value)
        elif tag == 0x82 and final is None:
            final = value
        else:
            raise ProtocolError("substrings out of order")
    if seen == 0:
        raise ProtocolError("empty substrings")
    return Substrings(attr, initial, tuple(middle), final)


def _extensible(data: bytes, start: int, end: int) -> Extensible:
    rule: str | None = None
    attr: str | None = None
    value: bytes | None = None
    dn_attributes = False
    p = start
    last = 0
    while p < end:
        tag, v_start, p = read_tlv(data, p, end)
        if tag <= last or tag not in (0x81, 0x82, 0x83, 0x84):
            raise ProtocolError("bad matching rule assertion")
        last = tag
        if tag == 0x81:
            rule = to_text(data, v_start, p)
        elif tag == 0x82:
            attr = to_text(data, v_start, p)
        elif tag == 0x83:
            value = data[v_start:p]
        else:
            dn_attributes = to_bool(data, v_start, p)
    if value is None or (rule is None and attr is None):
        raise ProtocolError("matching rule assertion without value, rule or type")
    return Extensible(rule, attr, value, dn_attributes)


def _compare(data: bytes, start: int, end: int) -> CompareRequest:
    d_start, pos = expect(data, start, end, OCTET_STRING)
    a_start, a_end = expect(data, pos, end, SEQUENCE)
    if a_end != end:
        raise ProtocolError("trailing octets in compare")
    attr, value = _ava(data, a_start, a_end)
    return CompareRequest(to_text(data, d_start, pos), attr, value)


def _extended(data: bytes, start: int, end: int) -> ExtendedRequest:
    n_start, pos = expect(data, start, end, 0x80)
    name = to_text(data, n_start, pos)
    value: bytes | None = None
    if pos < end:
        v_start, pos = expect(data, pos, end, 0x81)
        value = data[v_start:pos]
    if pos != end:
        raise ProtocolError("trailing octets in extended request")
    return ExtendedRequest(name, value)


def _controls(data: bytes, start: int, end: int) -> tuple[Control, ...]:
    out: list[Control] = []
    pos = start
    while pos < end:
        c_start, pos = expect(data, pos, end, SEQUENCE)
        o_start, p = expect(data, c_start, pos, OCTET_STRING)
        oid = to_text(data, o_start, p)
        critical = False
        value: bytes | None = None
        if p < pos and data[p] == 0x01:
            b_start, p = expect(data, p, pos, 0x01)
            critical = to_bool(data, b_start, p)
        if p < pos:
            v_start, p = expect(data, p, pos, OCTET_STRING)
            value = data[v_start:p]
        if p != pos:
            raise ProtocolError("trailing octets in control")
        out.append(Control(oid, critical, value))
        if len(out) > MAX_CONTROLS:
            raise ProtocolError("too many controls")
    return tuple(out)


# --- control and extended-operation values --------------------------------------------------


@dataclass(frozen=True, slots=True)
class PagedRequest:
    size: int
    cookie: bytes


def decode_paged(value: bytes | None) -> PagedRequest:
    if value is None:
        raise ProtocolError("paged results control without a value")
    start, end = expect(value, 0, len(value), SEQUENCE)
    s_start, pos = expect(value, start, end, INTEGER)
    c_start, c_end = expect(value, pos, end, OCTET_STRING)
    if c_end != end:
        raise ProtocolError("trailing octets in paged control")
    return PagedRequest(to_int(value, s_start, pos), value[c_start:c_end])


def paged_response(size: int, cookie: bytes) -> Control:
    return Control(OID_PAGED_RESULTS, False, sequence(integer(size), octets(cookie)))


PPOLICY_EXPIRED: Final = 0
PPOLICY_LOCKED: Final = 1
PPOLICY_CHANGE_AFTER_RESET: Final = 2


def ppolicy_response(error: int | None) -> Control:
    """draft-behera PasswordPolicyResponseValue; `error` is `[1] ENUMERATED` (IMPLICIT)."""
    body = b"" if error is None else tlv(0x81, bytes((error,)))
    return Control(OID_PPOLICY, False, sequence(body))


@dataclass(frozen=True, slots=True)
class PasswdModify:
    user: str | None
    old: Secret | None
    new: Secret | None


def decode_passwd_modify(value: bytes | None) -> PasswdModify:
    """RFC 3062 PasswdModifyRequestValue (every field optional, in order)."""
    if value is None:
        return PasswdModify(None, None, None)
    start, end = expect(value, 0, len(value), SEQUENCE)
    fields: dict[int, bytes] = {}
    pos = start
    last = 0x7F
    while pos < end:
        tag, v_start, pos = read_tlv(value, pos, end)
        if tag <= last or tag not in (0x80, 0x81, 0x82):
            raise ProtocolError("bad password modify request")
        last = tag
        fields[tag] = value[v_start:pos]
    user = fields.get(0x80)
    old = fields.get(0x81)
    new = fields.get(0x82)
    return PasswdModify(
        None if user is None else to_text(user, 0, len(user)),
        None if old is None else Secret(old),
        None if new is None else Secret(new),
    )


# --- encoding responses ---------------------------------------------------------------------


def _controls_octets(controls: tuple[Control, ...] | list[Control]) -> bytes:
    if not controls:
        return b""
    parts = []
    for c in controls:
        body = octets(c.oid)
        if c.critical:
            body += boolean(True)
        if c.value is not None:
            body += octets(c.value)
        parts.append(sequence(body))
    return tlv(0xA0, b"".join(parts))


def envelope(msgid: int, op: bytes, controls: tuple[Control, ...] | list[Control] = ()) -> bytes:
    if not controls:
        return tlv(SEQUENCE, _msgid(msgid) + op)
    return sequence(integer(msgid), op, _controls_octets(controls))


_SUCCESS_BIND: Final = tlv(BIND_RESPONSE, enumerated(0) + octets(b"") + octets(b""))
_SUCCESS_DONE: Final = tlv(SEARCH_RESULT_DONE, enumerated(0) + octets(b"") + octets(b""))


def _msgid(msgid: int) -> bytes:
    """The messageID element; one octet for the first 127 of a connection (no arithmetic)."""
    return bytes((INTEGER, 1, msgid)) if msgid < 0x80 else integer(msgid)


def bind_success(msgid: int) -> bytes:
    """A successful BindResponse without controls."""
    return tlv(SEQUENCE, _msgid(msgid) + _SUCCESS_BIND)


def search_done(msgid: int) -> bytes:
    """A successful SearchResultDone without controls: the end of nearly every search."""
    return tlv(SEQUENCE, _msgid(msgid) + _SUCCESS_DONE)


def result(
    msgid: int,
    tag: int,
    code: int,
    diagnostic: str = "",
    matched: str = "",
    controls: tuple[Control, ...] | list[Control] = (),
    extra: bytes = b"",
) -> bytes:
    """Any LDAPResult-shaped response (bind, search done, compare, modify, ...)."""
    if code == 0 and not (diagnostic or matched or controls or extra):
        if tag == BIND_RESPONSE:
            return tlv(SEQUENCE, _msgid(msgid) + _SUCCESS_BIND)  # the hot path: a bind
        if tag == SEARCH_RESULT_DONE:
            return tlv(SEQUENCE, _msgid(msgid) + _SUCCESS_DONE)
    body = enumerated(code) + octets(matched) + octets(diagnostic) + extra
    return envelope(msgid, tlv(tag, body), controls)


def extended(
    msgid: int,
    code: int,
    diagnostic: str = "",
    name: str | None = None,
    value: bytes | None = None,
) -> bytes:
    extra = b""
    if name is not None:
        extra += octets(name, 0x8A)
    if value is not None:
        extra += octets(value, 0x8B)
    return result(msgid, EXTENDED_RESPONSE, code, diagnostic, extra=extra)


def notice_of_disconnection(code: int, diagnostic: str) -> bytes:
    return extended(0, code, diagnostic, OID_NOTICE_OF_DISCONNECTION)


def entry(msgid: int, dn: str, attributes: list[tuple[str, list[bytes]]]) -> bytes:
    return envelope(msgid, entry_op(dn, attributes))


def entry_op(dn: str, attributes: list[tuple[str, list[bytes]]]) -> bytes:
    """A SearchResultEntry without its envelope: the same for every search that selects the
    same attributes of the same entry, so it can be kept and sent under any message id."""
    parts = [
        sequence(octets(name), tlv(0x31, b"".join(octets(v) for v in values)))
        for name, values in attributes
    ]
    return tlv(SEARCH_RESULT_ENTRY, octets(dn) + sequence(*parts))
