"""Distinguished names (RFC 4514): parse, normalise, escape.

Clients send back the DN a search returned, but not always byte for byte: `UID=212...,
OU=Patrons, DC=Library,dc=example`, `uid=21\\32...` and `uid=212...,ou=patrons,...` must all
name the same entry, or a vendor's search-then-bind fails for reasons nobody can see. So every
DN is compared in one normal form: attribute types lower-cased, values unescaped, unescaped
outer spaces dropped, values case-folded (every attribute we name by is case-insensitive),
multi-valued RDNs sorted.
"""

from __future__ import annotations

import re
from typing import Final

RDN = tuple[tuple[str, str], ...]  # ((type, value), ...) normalised

_SPECIAL: Final = frozenset(',+"\\<>;=')
_HEX: Final = frozenset("0123456789abcdefABCDEF")
# Common OID forms of the attribute types that appear in our DNs.
_OID_NAMES: Final = {
    "0.9.2342.19200300.100.1.1": "uid",
    "0.9.2342.19200300.100.1.25": "dc",
    "2.5.4.3": "cn",
    "2.5.4.11": "ou",
    "2.5.4.10": "o",
}


# `type=value(,type=value)*`: letter-led types, values free of anything that needs the full
# parser (escapes, quotes, `+`, `#`). Such DNs take the fast path in `parse`.
_TYPE: Final = r" *[A-Za-z][A-Za-z0-9-]* *"
_VALUE: Final = r'=[^,+"\\<>;=#\x00]*'
_PLAIN: Final = re.compile(f"{_TYPE}{_VALUE}(?:,{_TYPE}{_VALUE})*")


class DNError(ValueError):
    """Not a valid DN string."""


def parse(dn: str, *, fold: bool = True) -> tuple[RDN, ...]:
    """RDNs from leftmost (the entry) to rightmost (the root), normalised.

    `fold=False` keeps the values' case (a barcode is looked up as typed)."""
    if not dn.strip():
        return ()
    if _PLAIN.fullmatch(dn):  # nearly every DN a client sends: no escapes, no multi-valued RDNs
        out = []
        for part in dn.split(","):
            attr, _, value = part.partition("=")
            name = attr.strip().lower()
            value = value.strip(" ")
            out.append(((_OID_NAMES.get(name, name), value.casefold() if fold else value),))
        return tuple(out)
    return parse_general(dn, fold=fold)


def parse_general(dn: str, *, fold: bool = True) -> tuple[RDN, ...]:
    """The full RFC 4514 parser (escapes, multi-valued RDNs, OIDs, #-values)."""
    if not dn.strip():
        return ()
    rdns: list[RDN] = []
    current: list[tuple[str, str]] = []
    i, n = 0, len(dn)
    while True:
        attr, i = _attr_type(dn, i)
        value, i = _attr_value(dn, i)
        current.append((attr, value.casefold() if fold else value))
        if i >= n:
            rdns.append(tuple(sorted(current)))
            return tuple(rdns)
        sep = dn[i]
        i += 1
        if sep in ",;":
            rdns.append(tuple(sorted(current)))
            current = []


def _attr_type(dn: str, i: int) -> tuple[str, int]:
    n = len(dn)
    while i < n and dn[i] == " ":
        i += 1
    start = i
    while i < n and dn[i] != "=":
        i += 1
    if i >= n:
        raise DNError("attribute type without '='")
    name = dn[start:i].strip().lower()
    if name.startswith("oid."):
        name = name[4:]
    name = _OID_NAMES.get(name, name)
    if not name or not (name[0].isalpha() or name[0].isdigit()):
        raise DNError("bad attribute type")
    if not all(c.isalnum() or c in "-." for c in name):
        raise DNError("bad attribute type")
    return name, i + 1


def _attr_value(dn: str, i: int) -> tuple[str, int]:
    """Unescaped value and the index of the separator after it (or len)."""
    n = len(dn)
    while i < n and dn[i] == " ":
        i += 1
    if i < n and dn[i] == "#":  # BER-encoded value: keep the hex text, compare as is
        start = i
        while i < n and dn[i] not in ",;+":
            i += 1
        return dn[start:i].strip().lower(), i
    out: list[str] = []
    raw = bytearray()
    trailing = 0  # unescaped spaces at the end of `out`
    while i < n:
        c = dn[i]
        if c == "\\":
            if i + 1 >= n:
                raise DNError("dangling escape")
            nxt = dn[i + 1]
            if nxt in _HEX and i + 2 < n and dn[i + 2] in _HEX:
                raw.append(int(dn[i + 1 : i + 3], 16))
                i += 3
                continue
            _flush(raw, out)
            if nxt not in _SPECIAL and nxt not in " #":
                raise DNError("bad escape")
            out.append(nxt)
            trailing = 0
            i += 2
            continue
        _flush(raw, out)
        if c in ",;+":
            break
        if c in '"<>=' or c == "\x00":
            raise DNError(f"unescaped {c!r}")
        out.append(c)
        trailing = trailing + 1 if c == " " else 0
        i += 1
    _flush(raw, out)
    if trailing:
        out = out[:-trailing]
    return "".join(out), i


def _flush(raw: bytearray, out: list[str]) -> None:
    if raw:
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise DNError("escaped octets are not UTF-8") from None
        raw.clear()


def normalise(dn: str) -> str:
    """One string per entry, for dictionary keys and comparisons."""
    return ",".join("+".join(f"{a}={escape(v)}" for a, v in rdn) for rdn in parse(dn))


def escape(value: str) -> str:
    """An attribute value as it may appear in a DN string."""
    out = []
    for i, c in enumerate(value):
        if c in _SPECIAL or (c == "#" and i == 0) or (c == " " and (i == 0 or i == len(value) - 1)):
            out.append("\\" + c)
        elif c == "\x00":
            out.append("\\00")
        else:
            out.append(c)
    return "".join(out)


def fold(rdns: tuple[RDN, ...]) -> tuple[RDN, ...]:
    """Case-fold the values of RDNs parsed with `fold=False`."""
    return tuple(tuple(sorted((a, v.casefold()) for a, v in rdn)) for rdn in rdns)


def is_within(rdns: tuple[RDN, ...], suffix: tuple[RDN, ...]) -> bool:
    """True when `rdns` names `suffix` itself or an entry below it."""
    k = len(suffix)
    return len(rdns) >= k and (k == 0 or rdns[-k:] == suffix)
