"""Search filters: evaluate one against an entry, find the indexed lookups it implies, print it.

The directory never scans patrons. `lookups(filter)` answers "which barcodes, mail addresses or
record ids must a matching patron have?"; when the filter does not pin that down (a presence or
substring test on the login attribute, a bare `(objectClass=*)`, a negation) the answer is None
and the search is refused as enumeration. Candidates found by those lookups are then checked
against the whole filter with `evaluate`, RFC 4511's three-valued logic (True, False, None for
Undefined), so `(&(uid=X)(employeeType=ADULT))` means exactly what it says.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

from bridge.ldap.messages import (
    And,
    Approx,
    Equality,
    Extensible,
    Filter,
    GreaterOrEqual,
    LessOrEqual,
    Not,
    Or,
    Present,
    Substrings,
)

MAX_LOOKUPS: Final = 16
# Matching rules that mean "equality, ignoring case" for the attributes we publish.
EQUALITY_RULES: Final = frozenset(
    {
        "caseignorematch",
        "caseexactmatch",
        "caseignoreia5match",
        "caseexactia5match",
        "2.5.13.2",
        "2.5.13.5",
        "1.3.6.1.4.1.1466.109.114.2",
        "1.3.6.1.4.1.1466.109.114.1",
        "objectidentifiermatch",
        "2.5.13.0",
    }
)

Kind = Literal["barcode", "email", "record", "uid_number"]


@dataclass(frozen=True, slots=True)
class Lookup:
    kind: Kind
    value: str


# Attributes: lower-case name → values as they are published.
Attributes = Mapping[str, list[bytes]]


#: Longest value whose folded form is remembered: published attribute values and the filter
#: values clients repeat are short; a long one comes from a request and is folded each time,
#: so hostile filters (up to `max_pdu` each) cannot fill the cache.
FOLD_MEMO_MAX = 256


def _fold_now(value: bytes) -> str:
    return " ".join(value.decode("utf-8", "replace").split()).casefold()


_fold_memo = functools.lru_cache(maxsize=8192)(_fold_now)


def _fold(value: bytes) -> str:
    """Case- and space-insensitive form of a value (the matching rule every published attribute
    uses). Remembered when short: published entries are reused, so the same values are folded
    for every search that tests them."""
    return _fold_memo(value) if len(value) <= FOLD_MEMO_MAX else _fold_now(value)


fold = _fold  # for entries that keep their values folded (`Entry.holds`)


def point(f: Filter) -> bytes | None:
    """The X of `(uid=X)`, or of an AND of `(uid=X)` and objectClass equalities (EZproxy's
    `(&(objectClass=inetOrgPerson)(uid=X))`): a filter that names one card and tests nothing
    but its classes, so a search with it is one keyed lookup and a few set tests. None for any
    other filter (the general path: `lookups` and `evaluate`)."""
    if type(f) is Equality:
        return f.value if f.attr.lower() == "uid" else None
    if type(f) is not And:
        return None
    value = None
    for item in f.items:
        if type(item) is not Equality:
            return None
        attr = item.attr.lower()
        if attr == "uid":
            if value is not None:
                return None
            value = item.value
        elif attr != "objectclass":
            return None
    return value


def evaluate(f: Filter, attrs: Attributes) -> bool | None:
    # The commonest shapes first: `match` tries the cases in order.
    match f:
        case And(items):
            result: bool | None = True
            for item in items:
                r = evaluate(item, attrs)
                if r is False:
                    return False
                if r is None:
                    result = None
            return result
        case Equality(attr, value) | Approx(attr, value):
            values = attrs.get(attr.lower())
            if values is None:
                return False
            wanted = _fold(value)
            return any(_fold(v) == wanted for v in values)
        case Or(items):
            result = False
            for item in items:
                r = evaluate(item, attrs)
                if r is True:
                    return True
                if r is None:
                    result = None
            return result
        case Present(attr):
            return attr.lower() in attrs
        case Not(item):
            r = evaluate(item, attrs)
            return None if r is None else not r
        case Substrings(attr, initial, middle, final):
            values = attrs.get(attr.lower())
            if values is None:
                return False
            return any(_substring_match(_fold(v), initial, middle, final) for v in values)
        case GreaterOrEqual(attr, value):
            values = attrs.get(attr.lower())
            return values is not None and any(_fold(v) >= _fold(value) for v in values)
        case LessOrEqual(attr, value):
            values = attrs.get(attr.lower())
            return values is not None and any(_fold(v) <= _fold(value) for v in values)
        case Extensible(rule, attr, value, _dn_attributes):
            if attr is None or (rule is not None and rule.lower() not in EQUALITY_RULES):
                return None
            return evaluate(Equality(attr, value), attrs)


def _substring_match(
    text: str, initial: bytes | None, middle: tuple[bytes, ...], final: bytes | None
) -> bool:
    pos = 0
    end = len(text)
    if initial is not None:
        head = _fold(initial)
        if not text.startswith(head):
            return False
        pos = len(head)
    if final is not None:
        tail = _fold(final)
        if len(text) - len(tail) < pos or not text.endswith(tail):
            return False
        end = len(text) - len(tail)
    for part in middle:
        piece = _fold(part)
        found = text.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def required(f: Filter) -> frozenset[str]:
    """Attributes (lower case) an entry must have for the filter to be True there. A search
    tests the fixed entries (base, containers, groups) against every filter; EZproxy's
    `(&(objectClass=inetOrgPerson)(uid=X))` needs `uid`, which none of them has, so one set
    test replaces evaluating the filter on each. And needs all its items' attributes, Or only
    those every item needs; a negation or an unknown matching rule needs none."""
    match f:
        case Equality(attr, _) | Approx(attr, _) | Present(attr):
            return frozenset((attr.lower(),))
        case And(items):
            return frozenset().union(*(required(i) for i in items))
        case Or(items):
            if not items:
                return frozenset()
            return frozenset.intersection(*(required(i) for i in items))
        case Substrings(attr, _, _, _) | GreaterOrEqual(attr, _) | LessOrEqual(attr, _):
            return frozenset((attr.lower(),))
        case Extensible(rule, attr, _, _) if attr is not None and (
            rule is None or rule.lower() in EQUALITY_RULES
        ):
            return frozenset((attr.lower(),))
        case _:
            return frozenset()


def lookups(f: Filter, keys: Mapping[str, Kind]) -> frozenset[Lookup] | None:
    """Indexed lookups that find every patron the filter can match, or None if it cannot say.

    `keys` maps a lower-case attribute name to the lookup its equality implies
    (uid → barcode, mail → email, the record-id attribute → record).
    """
    match f:
        case Equality(attr, value) | Approx(attr, value):
            kind = keys.get(attr.lower())
            if kind is None:
                return None
            try:
                text = value.decode("utf-8").strip()
            except UnicodeDecodeError:
                return frozenset()
            return frozenset({Lookup(kind, text)})
        case Extensible(rule, attr, value, False) if attr is not None and (
            rule is None or rule.lower() in EQUALITY_RULES
        ):
            return lookups(Equality(attr, value), keys)
        case And(items):
            bounded = [p for p in (lookups(i, keys) for i in items) if p is not None]
            return min(bounded, key=len) if bounded else None
        case Or(items):
            found: set[Lookup] = set()
            for item in items:
                plan = lookups(item, keys)
                if plan is None:
                    return None
                found |= plan
                if len(found) > MAX_LOOKUPS:
                    return None
            return frozenset(found)
        case _:
            return None


def excludes(f: Filter, classes: frozenset[str]) -> bool:
    """Whether the filter can match no entry whose objectClass values are all in `classes`
    (lower case), decided from its objectClass equalities alone: `(objectClass=sudoRole)` or
    `(&(cn=x)(objectClass=posixGroup))` can never name a patron, so a search with it is
    answered from the fixed entries, without a lookup and without being taken for
    enumeration. Conservative: anything it cannot decide (a negation) may match."""
    match f:
        case Equality(attr, value) if attr.lower() == "objectclass":
            return _fold(value) not in classes
        case And(items):
            return any(excludes(i, classes) for i in items)
        case Or(items):
            return all(excludes(i, classes) for i in items)
        case _:
            return False


def _escape(value: bytes) -> str:
    out = []
    for b in value:
        c = chr(b)
        if c in "*()\\ " or b < 0x20 or b > 0x7E:  # spaces too: string parsers strip them
            out.append(f"\\{b:02x}")
        else:
            out.append(c)
    return "".join(out)


def text(f: Filter) -> str:
    """RFC 4515 string form (for audit lines and tests)."""
    match f:
        case And(items):
            return "(&" + "".join(text(i) for i in items) + ")"
        case Or(items):
            return "(|" + "".join(text(i) for i in items) + ")"
        case Not(item):
            return f"(!{text(item)})"
        case Equality(attr, value):
            return f"({attr}={_escape(value)})"
        case Approx(attr, value):
            return f"({attr}~={_escape(value)})"
        case GreaterOrEqual(attr, value):
            return f"({attr}>={_escape(value)})"
        case LessOrEqual(attr, value):
            return f"({attr}<={_escape(value)})"
        case Present(attr):
            return f"({attr}=*)"
        case Substrings(attr, initial, middle, final):
            parts = [
                _escape(initial or b""),
                *(_escape(m) for m in middle),
                _escape(final or b""),
            ]
            return f"({attr}=" + "*".join(parts) + ")"
        case Extensible(rule, attr, value, dn_attributes):
            head = (attr or "") + (":dn" if dn_attributes else "") + (f":{rule}" if rule else "")
            return f"({head}:={_escape(value)})"
