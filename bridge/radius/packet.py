"""Pure RADIUS codec: bytes in, typed packet out, and replies back to bytes.

RFC 2865 (packet format, User-Password hiding, Response Authenticator), RFC 2866 (Accounting
Request Authenticator), RFC 3579 (Message-Authenticator) and RFC 5997 (Status-Server). Nothing
here does I/O or reads a clock: the server hands in bytes and secrets, and gets values or a
`ProtocolError` whose message is safe to log (never a secret, never a PIN).

Written on the standard library rather than `pyrad.packet` because every request passes through
it: one decode per packet, no attribute name lookups, and the password kept as exact bytes
(pyrad's `PwDecrypt` decodes with errors ignored, so `12 e9 34` would become "1234").
MD5 and HMAC-MD5 are what the protocol mandates; they authenticate packets here, they never
protect a stored PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Final, NamedTuple, NoReturn, cast

# Packet codes.
ACCESS_REQUEST: Final = 1
ACCESS_ACCEPT: Final = 2
ACCESS_REJECT: Final = 3
ACCOUNTING_REQUEST: Final = 4
ACCOUNTING_RESPONSE: Final = 5
ACCESS_CHALLENGE: Final = 11
STATUS_SERVER: Final = 12

# Attribute types the codec and server read by number (the dictionary names the rest).
USER_NAME: Final = 1
USER_PASSWORD: Final = 2
CHAP_PASSWORD: Final = 3
REPLY_MESSAGE: Final = 18
VENDOR_SPECIFIC: Final = 26
PROXY_STATE: Final = 33
CHAP_CHALLENGE: Final = 60
EAP_MESSAGE: Final = 79
MESSAGE_AUTHENTICATOR: Final = 80

HEADER_LENGTH: Final = 20
MAX_PACKET: Final = 4096  # RFC 2865 section 3: larger packets are malformed
MAX_VALUE: Final = 253
MAX_PASSWORD: Final = 128  # RFC 2865 section 5.2

_HEADER = struct.Struct("!BBH")
_new_tuple = tuple.__new__
_ZERO_MAC: Final = bytes(16)
_MA_HEADER: Final = bytes((80, 18))  # Message-Authenticator's type and length octets
_MA_ZEROED: Final = _MA_HEADER + _ZERO_MAC  # the attribute as it is signed
_join = b"".join


def _md5_constructor() -> Callable[[bytes], hashlib._Hash]:
    """CPython's own MD5 (`_md5`) where the build has it, else hashlib's OpenSSL one.

    Every request pays two HMAC-MD5s and two MD5s over a few dozen octets; for inputs that
    small the OpenSSL wrapper's per-call overhead (EVP context, provider lookups) is most of
    the cost: under callgrind an MD5 of secret + 16 octets is about 5,200 instructions through
    hashlib against 2,900 through `_md5`, and an HMAC from copied key states 9,100 against
    5,100. The digests are the same bytes; MD5 here authenticates packets as RFC 2865
    mandates and never protects a stored PIN (which is also why FIPS mode does not apply)."""
    try:
        return cast(Callable[[bytes], "hashlib._Hash"], importlib.import_module("_md5").md5)
    except ImportError:  # a build without the builtin hashes
        return hashlib.md5


_MD5 = _md5_constructor()


class ProtocolError(Exception):
    """The bytes are not a well-formed RADIUS packet (or value); the message names why.

    `kind` is the same reason without the numbers in it ("truncated packet", not "truncated
    packet (40 of 300 octets)"): logs are limited per kind, so a sender varying lengths cannot
    make every packet a new line."""

    def __init__(self, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind or message


class SharedSecret:
    """A client's shared secret with its HMAC-MD5 key schedule computed once.

    Every request needs two HMAC-MD5s and two MD5s with the secret; a fresh `hmac.digest`
    hashes both 64-octet key blocks again (and, through OpenSSL 3, fetches the algorithm),
    where copying the precomputed inner and outer states does neither. A plain MD5 over the
    secret and a few octets is cheaper hashed whole than copied from a state. Never shows its
    value."""

    __slots__ = ("_inner", "_outer", "value")

    def __init__(self, value: bytes) -> None:
        self.value = value
        key = (_MD5(value).digest() if len(value) > 64 else value).ljust(64, b"\x00")
        self._inner = _MD5(bytes(b ^ 0x36 for b in key))
        self._outer = _MD5(bytes(b ^ 0x5C for b in key))

    def hmac_md5(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def md5_after(self, data: bytes) -> bytes:
        """MD5(secret + data), the User-Password keystream block."""
        return _MD5(self.value + data).digest()

    def __repr__(self) -> str:
        return "SharedSecret(***)"


def _key(secret: SharedSecret | bytes) -> SharedSecret:
    return secret if isinstance(secret, SharedSecret) else SharedSecret(secret)


class Packet(NamedTuple):
    """One decoded packet. `raw` is exactly `Length` octets (RFC 2865: padding ignored);
    `mac_offset` is where the Message-Authenticator value starts in `raw`, or -1.

    Immutable. A tuple made with `tuple.__new__` in `decode`: a dataclass's `__init__` (a
    frozen one sets each field through `object.__setattr__`) is a Python call on every
    datagram."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, bytes], ...]
    raw: bytes
    mac_offset: int = -1

    def get(self, kind: int) -> bytes | None:
        """The first value of an attribute type, or None."""
        for code, value in self.attributes:
            if code == kind:
                return value
        return None

    def all(self, kind: int) -> list[bytes]:
        """Every value of an attribute type, in packet order (Proxy-State must keep it)."""
        return [value for code, value in self.attributes if code == kind]

    def has(self, kind: int) -> bool:
        return self.get(kind) is not None  # `get`'s loop: `any` over a generator costs twice

    def vendor_attributes(self, vendor: int) -> list[tuple[int, bytes]]:
        """Sub-attributes of Vendor-Specific attributes for one vendor (RFC 2865 format)."""
        prefix = vendor.to_bytes(4, "big")
        found: list[tuple[int, bytes]] = []
        for code, value in self.attributes:
            if code == VENDOR_SPECIFIC and value[:4] == prefix:
                found.extend(_sub_attributes(value))
        return found

    @property
    def has_message_authenticator(self) -> bool:
        return self.mac_offset >= 0


def _sub_attributes(vsa: bytes) -> list[tuple[int, bytes]]:
    """RFC 2865 section 5.26 sub-attributes after the vendor id; stops at the first bad one."""
    found = []
    pos = 4
    while pos + 2 <= len(vsa):
        sub, length = vsa[pos], vsa[pos + 1]
        if length < 2 or pos + length > len(vsa):
            break
        found.append((sub, vsa[pos + 2 : pos + length]))
        pos += length
    return found


def decode(data: bytes) -> Packet:
    """Parse one datagram; raise ProtocolError for anything RFC 2865 calls malformed.

    Every datagram comes through here, so the attribute loop is kept short (about 35
    bytecodes an attribute): a header that runs past the end shows up as the IndexError of
    reading its length octet (`data` is exactly `Length` octets), and an attribute that runs
    past the end is seen once, after the loop, since it ends the loop; only a
    Message-Authenticator's own checks need to know first."""
    size = len(data)
    if size < HEADER_LENGTH:
        raise ProtocolError(f"short packet ({size} octets)", "short packet")
    code, identifier, length = _HEADER.unpack_from(data)
    if length < HEADER_LENGTH or length > MAX_PACKET:
        raise ProtocolError(f"bad length field {length}", "bad length field")
    if size != length:
        if size < length:
            raise ProtocolError(f"truncated packet ({size} of {length} octets)", "truncated packet")
        data = data[:length]
    else:
        data = bytes(data)
    attributes: list[tuple[int, bytes]] = []
    add = attributes.append
    mac_offset = -1
    pos = HEADER_LENGTH
    kind = 0
    try:
        while pos < length:
            kind = data[pos]
            start = pos + 2
            pos += data[pos + 1]
            if pos < start:
                _short_attribute(kind, pos - start + 2)
            if kind == MESSAGE_AUTHENTICATOR:
                if pos > length:
                    break
                if pos - start != 16:
                    raise ProtocolError("Message-Authenticator is not 16 octets")
                if mac_offset >= 0:
                    raise ProtocolError("more than one Message-Authenticator")
                mac_offset = start
            add((kind, data[start:pos]))
    except IndexError:
        raise ProtocolError("truncated attribute header") from None
    if pos > length:  # only the last attribute can overrun: the loop stops after it
        raise ProtocolError(
            f"attribute {kind} overruns the packet", "attribute overruns the packet"
        )
    return _new_tuple(Packet, (code, identifier, data[4:20], tuple(attributes), data, mac_offset))


def _short_attribute(kind: int, alen: int) -> NoReturn:
    """An attribute shorter than its own header (a length of 0 would never advance)."""
    raise ProtocolError(f"attribute {kind} has length {alen}", "bad attribute length")


# --- what an Access-Request asks ---------------------------------------------------------------

MICROSOFT: Final = (311).to_bytes(4, "big")
_MS_CHAP: Final = frozenset({1, 11, 25})  # MS-CHAP-Response, MS-CHAP-Challenge, MS-CHAP2-Response
# The attribute types `access_fields` looks at; a NAS sends a dozen others it skips.
_ACCESS_KINDS: Final = frozenset(
    {USER_NAME, USER_PASSWORD, PROXY_STATE, CHAP_PASSWORD, EAP_MESSAGE, VENDOR_SPECIFIC}
)


class AccessFields(NamedTuple):
    """The parts of an Access-Request the server acts on, found in one pass.

    A tuple made with `tuple.__new__`, one per request: a slots dataclass's `__init__` (or a
    NamedTuple's own `__new__`) is a Python call, about 600 instructions more."""

    user_name: bytes | None
    user_password: bytes | None
    unsupported: str | None  # why the request cannot be checked, or None for PAP
    proxy_state: bool
    eap: bool  # it carries EAP-Message (for the EAP front end, when one is configured)


def access_fields(packet: Packet) -> AccessFields:
    """User-Name, User-Password, and whether it is CHAP, MS-CHAP or EAP instead of PAP (and
    whether it carries EAP-Message at all: the server asked `Packet.has` again per request).

    PINs are kept hashed (or only the ILS knows them), so only PAP can be checked."""
    user = password = None
    unsupported = None
    proxy_state = eap = False
    for kind, value in packet.attributes:
        if kind not in _ACCESS_KINDS:  # NAS-Identifier, Calling-Station-Id, ...: one test each
            continue
        if kind == USER_NAME:
            user = value if user is None else user
        elif kind == USER_PASSWORD:
            password = value if password is None else password
        elif kind == PROXY_STATE:
            proxy_state = True
        elif kind == CHAP_PASSWORD:
            unsupported = "CHAP is not supported: PINs are not stored in clear; use PAP"
        elif kind == EAP_MESSAGE:
            unsupported = "EAP is not supported: terminate EAP-TTLS elsewhere, proxy inner PAP"
            eap = True
        elif (
            kind == VENDOR_SPECIFIC
            and value[:4] == MICROSOFT
            and any(sub in _MS_CHAP for sub, _ in _sub_attributes(value))
        ):
            unsupported = "MS-CHAP is not supported: PINs are not stored in clear; use PAP"
    if unsupported is None and (user is None or password is None):
        unsupported = "no User-Name or no User-Password"
    return _new_tuple(AccessFields, (user, password, unsupported, proxy_state, eap))


# --- authenticity ------------------------------------------------------------------------------


def message_authenticator_ok(packet: Packet, secret: SharedSecret | bytes) -> bool:
    """RFC 3579 section 3.2: HMAC-MD5 over the packet with the attribute's value zeroed.

    For an Accounting-Request the Request Authenticator is itself a hash over the packet, so the
    HMAC is taken with that field zeroed too (as FreeRADIUS and RFC 5080 do)."""
    if packet.mac_offset < 0:
        return False
    raw = packet.raw
    at = packet.mac_offset
    received = raw[at : at + 16]
    if packet.code == ACCOUNTING_REQUEST:
        signed = raw[:4] + _ZERO_MAC + raw[20:at] + _ZERO_MAC + raw[at + 16 :]
    else:
        signed = raw[:at] + _ZERO_MAC + raw[at + 16 :]
    key = secret if isinstance(secret, SharedSecret) else SharedSecret(secret)
    inner = key._inner.copy()  # key.hmac_md5, inlined: this runs for every request
    inner.update(signed)
    outer = key._outer.copy()
    outer.update(inner.digest())
    return hmac.compare_digest(outer.digest(), received)


def accounting_authenticator_ok(packet: Packet, secret: SharedSecret | bytes) -> bool:
    """RFC 2866 section 3: MD5(Code+Identifier+Length+16 zero octets+Attributes+Secret)."""
    raw = packet.raw
    expected = _MD5(raw[:4] + _ZERO_MAC + raw[20:] + _key(secret).value).digest()
    return hmac.compare_digest(expected, packet.authenticator)


# --- User-Password (RFC 2865 section 5.2) ------------------------------------------------------


def _xor16(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(16, "big")


def decrypt_password(hidden: bytes, secret: SharedSecret | bytes, authenticator: bytes) -> bytes:
    """The User-Password as the exact octets the user typed (trailing NUL padding removed).

    Never decoded to text here: invalid UTF-8 is the authenticator's decision (it refuses it),
    and dropping bytes would turn `59 e9 61` into something else."""
    size = len(hidden)
    key = secret if isinstance(secret, SharedSecret) else SharedSecret(secret)
    if size == 16:  # every PIN fits one block: no chaining, no calls but the MD5
        stream = _MD5(key.value + authenticator).digest()
        number = int.from_bytes(hidden, "big") ^ int.from_bytes(stream, "big")
        return number.to_bytes(16, "big").rstrip(b"\x00")
    if size < 16 or size > MAX_PASSWORD or size % 16:
        raise ProtocolError(
            f"User-Password of {size} octets (want 16..128, a multiple of 16)",
            "bad User-Password length",
        )
    plain = bytearray()
    last = authenticator
    for pos in range(0, size, 16):
        chunk = hidden[pos : pos + 16]
        plain += _xor16(chunk, key.md5_after(last))
        last = chunk
    return bytes(plain).rstrip(b"\x00")


def encrypt_password(password: bytes, secret: SharedSecret | bytes, authenticator: bytes) -> bytes:
    """The inverse of `decrypt_password` (used by tests, the benchmark and any client code)."""
    if len(password) > MAX_PASSWORD:
        raise ProtocolError("password longer than 128 octets")
    padded = password + bytes(-len(password) % 16 or (16 if not password else 0))
    key = _key(secret)
    out = bytearray()
    last = authenticator
    for pos in range(0, len(padded), 16):
        chunk = _xor16(padded[pos : pos + 16], key.md5_after(last))
        out += chunk
        last = chunk
    return bytes(out)


# --- encoding ----------------------------------------------------------------------------------


def encode_attributes(attributes: Iterable[tuple[int, bytes]]) -> bytes:
    """Type-length-value octets; a value longer than 253 octets is a ProtocolError."""
    out = bytearray()
    for kind, value in attributes:
        if len(value) > MAX_VALUE:
            raise ProtocolError(
                f"attribute {kind} value longer than {MAX_VALUE} octets", "attribute value too long"
            )
        out.append(kind)
        out.append(len(value) + 2)
        out += value
    return bytes(out)


def encode_reply(
    code: int,
    request: Packet,
    attributes: bytes,
    secret: SharedSecret | bytes,
    *,
    message_authenticator: bool = True,
) -> bytes:
    """A reply to `request` with pre-encoded `attributes`.

    The Message-Authenticator goes first (BlastRADIUS hardening, as FreeRADIUS 3.2.5+ does):
    it is computed with the Request Authenticator in the header, then the Response
    Authenticator MD5(Code+ID+Length+RequestAuth+Attributes+Secret) is computed over the result.
    """
    if message_authenticator:
        body_len = HEADER_LENGTH + 18 + len(attributes)
    else:
        body_len = HEADER_LENGTH + len(attributes)
    if body_len > MAX_PACKET:
        raise ProtocolError("reply longer than 4096 octets")
    key = secret if isinstance(secret, SharedSecret) else SharedSecret(secret)
    # Each piece joined once where it is hashed or sent (every request: `a + b + c` copies
    # twice, and three such chains cost about 2,000 instructions more than these joins).
    head = _HEADER.pack(code, request.identifier, body_len)
    authenticator = request.authenticator
    if message_authenticator:
        inner = key._inner.copy()  # key.hmac_md5, inlined: this runs for every request
        inner.update(_join((head, authenticator, _MA_ZEROED, attributes)))
        outer = key._outer.copy()
        outer.update(inner.digest())
        mac = outer.digest()
        response = _MD5(
            _join((head, authenticator, _MA_HEADER, mac, attributes, key.value))
        ).digest()
        return _join((head, response, _MA_HEADER, mac, attributes))
    response = _MD5(_join((head, authenticator, attributes, key.value))).digest()
    return _join((head, response, attributes))


def encode_request(
    code: int,
    identifier: int,
    authenticator: bytes,
    attributes: Sequence[tuple[int, bytes]],
    secret: SharedSecret | bytes,
    *,
    message_authenticator: bool = True,
) -> bytes:
    """A request packet (for tests, the benchmark and client code; the server never sends one).

    Access-Request and Status-Server carry the given random authenticator; an
    Accounting-Request's authenticator is computed (RFC 2866) and `authenticator` is ignored."""
    key = _key(secret)
    body = encode_attributes(attributes)
    if message_authenticator:
        body = b"\x50\x12" + _ZERO_MAC + body
    length = HEADER_LENGTH + len(body)
    head = _HEADER.pack(code, identifier, length)
    auth = _ZERO_MAC if code == ACCOUNTING_REQUEST else authenticator
    if message_authenticator:
        mac = key.hmac_md5(head + auth + body)
        body = b"\x50\x12" + mac + body[18:]
    if code == ACCOUNTING_REQUEST:
        auth = _MD5(head + _ZERO_MAC + body + key.value).digest()
    return head + auth + body


def reply_ok(reply: bytes, request_authenticator: bytes, secret: SharedSecret | bytes) -> bool:
    """A client's check of a reply's Response Authenticator (tests and the benchmark use it)."""
    if len(reply) < HEADER_LENGTH:
        return False
    expected = _MD5(reply[:4] + request_authenticator + reply[20:] + _key(secret).value).digest()
    return hmac.compare_digest(expected, reply[4:20])
