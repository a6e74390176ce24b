"""The directory the bridge pretends to be: names, entries and which lookups a search needs.

    <base>                         dcObject + organization
      ou=patrons                   one entry per card: uid=<barcode>
      ou=groups                    cn=<patron category>, member of it = patron's category
      ou=services                  vendor bind identities (configured)

A patron entry is built from the `Patron` record on demand and never carries PIN material. Its
`uniqueIdentifier` (configurable) holds the ILS record id, and `entryUUID` a UUID derived from
it, so vendors that key statistics or targetedIDs on a stable id keep them when a card is
replaced. Card standing is published (`patronStatus`, `patronExpired`, `patronBlocked`,
`patronExpires`) so a vendor filter such as `(&(uid=X)(patronStatus=active))` can use it.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.metadata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from bridge.core.patron import Patron
from bridge.ldap import dn as dnlib
from bridge.ldap.filters import Kind, fold
from bridge.ldap.messages import entry_op
from bridge.ldap.settings import LdapServiceAccount, LdapSettings

PATRON_CLASSES: Final = (b"top", b"person", b"organizationalPerson", b"inetOrgPerson")
OPERATIONAL: Final = frozenset(
    {"entryuuid", "entrydn", "structuralobjectclass", "hassubordinates", "subschemasubentry"}
)
LOCATE_CACHE: Final = 4096
#: Longest DN (characters) whose location is remembered; longer ones are parsed each time.
LOCATE_NAME_MAX: Final = 512
_UUID_NAMESPACE: Final = uuid.UUID("6f1d2c1e-3b7a-5c55-9a43-0c6a3a9b2e11")


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The installed distribution's version (RFC 3045 vendorVersion), read once."""
    try:
        return importlib.metadata.version("patron-bridge")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


@functools.lru_cache(maxsize=4096)
def entry_uuid(record_id: str) -> bytes:
    """A UUID derived from the ILS record id: stable across card replacements, valid UUID
    syntax whatever the ILS's id looks like (remembered: hashing costs more than the lookup)."""
    return str(uuid.uuid5(_UUID_NAMESPACE, record_id)).encode()


#: Patron entries (and groups) kept built; the table is cleared when it reaches this size.
ENTRY_MEMO = 4096
#: Encoded answers kept per entry (distinct attribute requests; vendors each send one shape).
ENCODED_PER_ENTRY = 8
#: Longest attribute list whose answer is kept, in names and in characters: a request's names
#: are the cache key, so this bounds what a client can make the directory hold (entries x 8
#: keys of at most 512 characters, besides the encoded entries themselves).
ENCODED_MAX_REQUESTED = 16
ENCODED_MAX_CHARS = 512


@dataclass(slots=True)
class Entry:
    """An entry as published: DN and attributes (display name → values), in a stable order.
    Never changed once built (the directory hands the same entry to every search)."""

    dn: str
    attributes: list[tuple[str, list[bytes]]]
    index: dict[str, list[bytes]] = field(default_factory=dict)  # lower name → values
    patron: bool = False  # a patron's entry (service accounts' attribute allow-lists apply)
    # Encoded answers already sent, by what was asked: a vendor asks for the same attributes
    # in every search, so the entry is encoded once, not once per search. A cache of the
    # entry's own (unchanging) content, bounded per entry; the directory bounds the entries.
    encoded: dict[tuple[tuple[str, ...], frozenset[str] | None, bool], bytes] = field(
        default_factory=dict
    )
    # lower name -> its values folded (`filters.fold`), built the first time one is tested
    folded: dict[str, frozenset[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = {name.lower(): values for name, values in self.attributes}

    def holds(self, attr: str, value: bytes) -> bool:
        """Whether an equality on `attr` (lower case) with `value` is True here, exactly as
        `filters.evaluate` decides it; the entry's values are folded once, not per search."""
        folded = self.folded.get(attr)
        if folded is None:
            values = self.index.get(attr)
            if values is None:
                return False
            folded = self.folded[attr] = frozenset(fold(v) for v in values)
        return fold(value) in folded

    def answer(
        self, requested: tuple[str, ...], allowed: frozenset[str] | None, types_only: bool
    ) -> bytes:
        """The SearchResultEntry operation (no envelope) for these requested attributes."""
        key = (requested, allowed, types_only)
        op = self.encoded.get(key)
        if op is None:
            if (
                len(requested) > ENCODED_MAX_REQUESTED
                or sum(map(len, requested)) > ENCODED_MAX_CHARS
            ):  # an odd request: answered, not kept
                return entry_op(self.dn, self.select(requested, allowed, types_only))
            if len(self.encoded) >= ENCODED_PER_ENTRY:
                self.encoded.clear()
            op = self.encoded[key] = entry_op(self.dn, self.select(requested, allowed, types_only))
        return op

    def select(
        self, requested: tuple[str, ...], allowed: frozenset[str] | None, types_only: bool
    ) -> list[tuple[str, list[bytes]]]:
        """RFC 4511 §4.5.1.8: `1.1` none, `*`/empty all user attributes, `+` operational."""
        wanted = {a.lower() for a in requested}
        everything = not wanted or "*" in wanted
        operational = "+" in wanted
        out = []
        for name, values in self.attributes:
            low = name.lower()
            if allowed is not None and low not in allowed and low != "objectclass":
                continue
            is_op = low in OPERATIONAL
            if (is_op and (operational or low in wanted)) or (
                not is_op and (everything or low in wanted)
            ):
                out.append((name, [] if types_only else values))
        return out


# --- where a DN points ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootDSE:
    pass


@dataclass(frozen=True, slots=True)
class Node:
    """A fixed container: the base entry or one of the three organizational units."""

    name: str  # "base", "patrons", "groups", "services"


@dataclass(frozen=True, slots=True)
class PatronName:
    barcode: str


@dataclass(frozen=True, slots=True)
class GroupName:
    category: str


@dataclass(frozen=True, slots=True)
class ServiceName:
    index: int


@dataclass(frozen=True, slots=True)
class Missing:
    """Inside our naming context but no such entry; `matched` is the nearest existing DN."""

    matched: str


@dataclass(frozen=True, slots=True)
class Outside:
    pass


Location = RootDSE | Node | PatronName | GroupName | ServiceName | Missing | Outside


class Directory:
    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self.base_dn = settings.base_dn
        self.base = dnlib.parse(settings.base_dn)
        self.patrons_dn = f"ou=patrons,{self.base_dn}"
        self.groups_dn = f"ou=groups,{self.base_dn}"
        self.services_dn = f"ou=services,{self.base_dn}"
        self._ou = {("ou", name): name for name in ("patrons", "groups", "services")}
        self.record_attr = settings.record_id_attribute
        keys: dict[str, Kind] = {
            "uid": "barcode",
            "mail": "email",
            settings.record_id_attribute.lower(): "record",
        }
        self.posix = settings.posix
        if settings.posix:
            keys["uidnumber"] = "uid_number"
        self.keys: Mapping[str, Kind] = keys
        # objectClass values a patron entry can have (searches that rule them all out never
        # look a patron up: `filters.excludes`)
        self.patron_classes = frozenset(
            c.decode().lower() for c in PATRON_CLASSES + ((b"posixAccount",) if self.posix else ())
        )
        self.services: dict[tuple[dnlib.RDN, ...], int] = {
            dnlib.parse(a.dn): i for i, a in enumerate(settings.service_accounts)
        }
        self.groups = {g.casefold(): g for g in settings.groups}
        domain = settings.bind_domain
        self._domain_suffix = None if domain is None else "@" + domain.casefold()
        self._located: dict[str, Location] = {}
        # Published entries are immutable once built: containers and groups come from the
        # config, and a patron's entry depends only on the record and the day. Built once and
        # reused, a search-then-bind login (the EZproxy pattern) does not rebuild the base, the
        # ou nodes, the groups and the patron for every patron login.
        self._nodes: dict[str, Entry] = {}
        self._groups: dict[str, Entry] = {}
        self._patrons: dict[str, tuple[Patron, dt.date, Entry]] = {}  # by barcode

    # -- names ------------------------------------------------------------------------------
    def patron_dn(self, barcode: str) -> str:
        return f"uid={dnlib.escape(barcode)},{self.patrons_dn}"

    def group_dn(self, category: str) -> str:
        return f"cn={dnlib.escape(category)},{self.groups_dn}"

    def locate(self, name: str) -> Location:
        """What a DN string names; raises dn.DNError when it is not a DN.

        Answers are remembered (bounded): clients send the same few DNs over and over, and a
        cached bind should not pay for parsing its DN each time."""
        found = self._located.get(name)
        if found is None:
            found = self._locate(name)
            if len(name) > LOCATE_NAME_MAX:
                return found  # not a name clients repeat: never kept (a 200 KB DN flood)
            if len(self._located) >= LOCATE_CACHE:
                self._located.clear()
            self._located[name] = found
        return found

    def _locate(self, name: str) -> Location:
        raw = dnlib.parse(name, fold=False)
        rdns = dnlib.fold(raw)
        if not rdns:
            return RootDSE()
        if rdns in self.services:
            return ServiceName(self.services[rdns])
        k = len(self.base)
        if not dnlib.is_within(rdns, self.base):
            return Outside()
        depth = len(rdns) - k
        if depth == 0:
            return Node("base")
        ou_rdn = rdns[-k - 1]
        ou = self._ou.get(ou_rdn[0]) if len(ou_rdn) == 1 else None
        if ou is None:
            return Missing(self.base_dn)
        if depth == 1:
            return Node(ou)
        ou_dn = f"ou={ou},{self.base_dn}"
        leaf = raw[0]
        if depth > 2 or len(leaf) != 1:
            return Missing(ou_dn)
        attr, value = leaf[0]
        if ou == "patrons" and attr == "uid":
            return PatronName(value)
        if ou == "groups" and attr == "cn":
            return GroupName(value)
        return Missing(ou_dn)

    def bind_name(self, name: str) -> Location:
        """A bind name: a DN, or (when enabled) a bare barcode or `barcode@domain`."""
        if self._domain_suffix is not None and name.casefold().endswith(self._domain_suffix):
            barcode = name[: -len(self._domain_suffix)]
            return PatronName(barcode) if barcode else Missing("")
        if "=" not in name:
            return PatronName(name) if self.settings.bind_barcode else Missing("")
        try:
            return self.locate(name)
        except dnlib.DNError:
            return Missing("")

    def service(self, index: int) -> LdapServiceAccount:
        return self.settings.service_accounts[index]

    # -- entries ----------------------------------------------------------------------------
    def root_dse(self, extensions: list[str], controls: list[str]) -> Entry:
        return Entry(
            "",
            [
                ("objectClass", [b"top", b"extensibleObject"]),
                ("namingContexts", [self.base_dn.encode()]),
                ("defaultNamingContext", [self.base_dn.encode()]),
                ("supportedLDAPVersion", [b"3"]),
                ("supportedExtension", [e.encode() for e in extensions]),
                ("supportedControl", [c.encode() for c in controls]),
                ("supportedSASLMechanisms", []),
                ("vendorName", [b"Patron Bridge"]),
                ("vendorVersion", [f"patron-bridge {package_version()}".encode()]),
            ],
        )

    def node(self, name: str) -> Entry:
        entry = self._nodes.get(name)
        if entry is None:
            entry = self._nodes[name] = self._node(name)
        return entry

    def _node(self, name: str) -> Entry:
        if name == "base":
            first = self.base[0][0]
            attrs: list[tuple[str, list[bytes]]] = [
                ("objectClass", [b"top", b"dcObject", b"organization"]),
                (first[0], [first[1].encode()]),
                ("o", [first[1].encode()]),
            ]
            return Entry(self.base_dn, attrs)
        return Entry(
            f"ou={name},{self.base_dn}",
            [("objectClass", [b"top", b"organizationalUnit"]), ("ou", [name.encode()])],
        )

    def group(self, category: str) -> Entry:
        """A group entry without its member list (listing members would enumerate patrons)."""
        key = category.casefold()
        entry = self._groups.get(key)
        if entry is None:
            entry = self._group(category)
            if key in self.groups:  # configured ones only: a name from a request is not kept
                self._groups[key] = entry
        return entry

    def _group(self, category: str) -> Entry:
        name = self.groups.get(category.casefold(), category)
        if not self.posix:
            return Entry(
                self.group_dn(name),
                [("objectClass", [b"top", b"groupOfNames"]), ("cn", [name.encode()])],
            )
        # posixGroup without memberUid: listing members would enumerate patrons; a patron's
        # groups come from its gidNumber (its primary group).
        return Entry(
            self.group_dn(name),
            [
                ("objectClass", [b"top", b"groupOfNames", b"posixGroup"]),
                ("cn", [name.encode()]),
                ("gidNumber", [str(self.gid_number(name)).encode()]),
            ],
        )

    # -- the posix view ---------------------------------------------------------------------
    def gid_number(self, category: str) -> int:
        s = self.settings
        for name, gid in s.posix_gids.items():
            if name.casefold() == category.casefold():
                return gid
        return s.posix_default_gid

    def uid_number(self, p: Patron) -> int | None:
        """base + the record id, when the record id is a plain number (else no posix view)."""
        rid = p.record_id
        if not (rid.isascii() and rid.isdigit()) or len(rid) > 10:
            return None
        number = self.settings.posix_uid_base + int(rid)
        return number if number <= 2**31 - 1 else None

    def record_for_uid_number(self, text: str) -> str | None:
        """The record id a uidNumber stands for (the inverse of `uid_number`)."""
        if not (text.isascii() and text.isdigit()) or len(text) > 10:
            return None
        rid = int(text) - self.settings.posix_uid_base
        return str(rid) if rid >= 0 else None

    def _posix(self, p: Patron, attrs: list[tuple[str, list[bytes]]]) -> None:
        number = self.uid_number(p)
        if number is None:
            return
        s = self.settings
        fields = {
            "uid": p.barcode,
            "record_id": p.record_id,
            "category": p.category.lower(),
            "uid_number": number,
        }
        attrs[0] = ("objectClass", [*attrs[0][1], b"posixAccount"])
        attrs.extend(
            [
                ("uidNumber", [str(number).encode()]),
                ("gidNumber", [str(self.gid_number(p.category)).encode()]),
                ("homeDirectory", [s.posix_home.format(**fields).encode()]),
                ("loginShell", [s.posix_shell.format(**fields).encode()]),
                ("gecos", [(p.name or p.barcode).encode()]),
            ]
        )

    def patron(self, p: Patron, today: dt.date) -> Entry:
        """The card's entry, kept with the record and day it was built from: the same record
        object (what the verified cache hands out) is found without hashing the record."""
        hit = self._patrons.get(p.barcode)
        if hit is not None and (hit[0] is p or hit[0] == p) and hit[1] == today:
            return hit[2]
        if len(self._patrons) >= ENTRY_MEMO:
            self._patrons.clear()
        entry = self._patron(p, today)
        self._patrons[p.barcode] = (p, today, entry)
        return entry

    def _patron(self, p: Patron, today: dt.date) -> Entry:
        dn = self.patron_dn(p.barcode)
        expired = p.is_expired(today)
        status = b"blocked" if p.blocked else b"expired" if expired else b"active"
        attrs: list[tuple[str, list[bytes]]] = [
            ("objectClass", list(PATRON_CLASSES)),
            ("uid", [p.barcode.encode()]),
            ("cn", [(p.name or p.barcode).encode()]),
            ("sn", [p.surname.encode()]),
        ]
        if p.given_name:
            attrs.append(("givenName", [p.given_name.encode()]))
        if p.name:
            attrs.append(("displayName", [p.name.encode()]))
        if p.email:
            attrs.append(("mail", [p.email.encode()]))
        if p.category:
            attrs.append(("employeeType", [p.category.encode()]))
            attrs.append(("memberOf", [self.group_dn(p.category).encode()]))
        if p.home_library:
            attrs.append(("l", [p.home_library.encode()]))
        attrs.append((self.record_attr, [p.record_id.encode()]))
        if self.posix:
            self._posix(p, attrs)
        attrs.append(("patronStatus", [status]))
        attrs.append(("patronExpired", [b"TRUE" if expired else b"FALSE"]))
        attrs.append(("patronBlocked", [b"TRUE" if p.blocked else b"FALSE"]))
        if p.expires is not None:
            attrs.append(("patronExpires", [p.expires.strftime("%Y%m%d000000Z").encode()]))
        attrs.extend(
            [
                ("entryUUID", [entry_uuid(p.record_id)]),
                ("entryDN", [dn.encode()]),
                ("structuralObjectClass", [b"inetOrgPerson"]),
                ("hasSubordinates", [b"FALSE"]),
            ]
        )
        return Entry(dn, attrs, patron=True)
