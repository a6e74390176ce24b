"""The one typed interface every store plugin implements, and how plugins are found.

Stores never hash PINs themselves: a store that keeps hashes is handed the core's `PinHasher`
when it opens, so the pepper, the worker pool, constant-time comparison and the dummy work for
unknown cards exist exactly once. A store that asks an ILS lets the ILS verify.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

from bridge.core.patron import Patron
from bridge.core.secret import Secret

ENTRY_POINT_GROUP = "patron_bridge.stores"


class Capability(enum.Enum):
    """What a store can do beyond lookup and verify."""

    VERIFY = "verify"
    CHANGE_PIN = "change_pin"
    BLOCK = "block"
    BY_EMAIL = "by_email"
    BY_RECORD_ID = "by_record_id"
    ADMIN = "admin"  # add/import/update patrons (WritableStore)
    RESET_TOKENS = "reset_tokens"  # TokenStore
    ONE_TIME_PIN = "one_time_pin"  # OneTimePinStore: a PIN that must be changed at next use


class StoreError(Exception):
    """Base for store failures."""


class StoreUnavailable(StoreError):
    """The backing store or ILS cannot answer now (down, timeout, circuit open)."""


class UnknownPatron(StoreError):
    """An operation named a barcode the store does not hold."""


class NotSupported(StoreError):
    """The store lacks the capability for this operation."""


@dataclass(frozen=True, slots=True)
class Verification:
    """A store's answer to a PIN check. `patron` None means the card is unknown."""

    patron: Patron | None
    pin_ok: bool
    needs_rehash: bool = False
    # When the PIN that matched is a one-time PIN staff issued (the store's `needs_reset`
    # flag on a card that has a PIN): the time it was set, which the core's expiry runs from.
    one_time_since: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""


@runtime_checkable
class Store(Protocol):
    """What the authenticator needs from any patron store."""

    capabilities: frozenset[Capability]

    async def lookup(self, barcode: str) -> Patron | None: ...

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification: ...

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None: ...

    async def health(self) -> Health: ...

    async def aclose(self) -> None: ...

    # Optional (not part of the runtime check, so stores written before it still qualify):
    #   def canonical_barcode(self, barcode: str) -> str
    # The one form of `barcode` the store's own lookup cannot tell apart from it (e.g. Koha's
    # case-insensitive collation: `k19abc` and `K19ABC` are one card). The authenticator keys
    # throttle, locks, cache and audit on it, so case variants share one guess budget. It must
    # be pure, cheap, idempotent and total: never raise, never do I/O, and keep an ASCII
    # printable barcode ASCII printable of the same length (input checks run on the result).
    # A store without it,
    # or whose lookup is exact, is the identity: set `canonical_barcode = staticmethod(
    # same_barcode)` (or leave it out) and the authenticator makes no call at all.
    #
    #   resolve_identifier: Callable[[str], Awaitable[str | None]] | None
    # Stores that accept more than one identifier per patron (koha-sql `identifier = "either"`)
    # name the card number an identifier means, so two identifiers of one patron share one
    # key. None (or absent): every identifier is its own key.


def same_barcode(barcode: str) -> str:
    """The identity canonical form: what stores with an exact barcode lookup declare."""
    return barcode


def ascii_case_insensitive(barcode: str) -> str:
    """The canonical form for lookups that ignore letter case (MariaDB/MySQL `_ci` collations:
    between printable ASCII characters they equate exactly the 26 letter pairs). Non-ASCII
    input is left alone: it never passes the barcode check, and `str.upper` could turn it
    into ASCII (`ſ` → `S`)."""
    return barcode.upper() if barcode.isascii() else barcode


def barcode_canonicalizer(store: object) -> Callable[[str], str] | None:
    """The store's `canonical_barcode`, or None when it is the identity (so the hot path
    makes no call)."""
    method = getattr(store, "canonical_barcode", None)
    if method is None or method is same_barcode:
        return None
    return method  # type: ignore[no-any-return]


def identifier_resolver(store: object) -> Callable[[str], Awaitable[str | None]] | None:
    """The store's `resolve_identifier`, or None when every identifier is its own key."""
    return getattr(store, "resolve_identifier", None)


@runtime_checkable
class SearchableStore(Store, Protocol):
    """Lookups by other keys (LDAP filter push-down, portal, reset by email)."""

    async def lookup_by_email(self, email: str) -> list[Patron]: ...

    async def lookup_by_record_id(self, record_id: str) -> Patron | None: ...


@dataclass(frozen=True, slots=True)
class NewPatron:
    """One patron to add: the record and either a PIN or a pre-hashed PIN from an ILS export."""

    patron: Patron
    pin: Secret | None = None
    pin_hash: str | None = None


@runtime_checkable
class OneTimePinStore(Store, Protocol):
    """A store that can keep a PIN marked "must be changed" (`Capability.ONE_TIME_PIN`): it is
    hashed like any PIN, `verify_pin` reports it in `Verification.one_time_since`, and the next
    `change_pin` clears the mark."""

    async def set_one_time_pin(self, patron: Patron, pin: Secret) -> None: ...


@runtime_checkable
class WritableStore(Store, Protocol):
    """Stores the bridge owns: patrons are added, imported, blocked and counted."""

    async def add_patron(self, new: NewPatron, *, replace: bool = False) -> None: ...

    async def add_patrons(self, batch: Iterable[NewPatron]) -> int: ...

    async def set_blocked(self, barcode: str, reason: str | None) -> Patron: ...

    async def count(self) -> int: ...

    def iter_patrons(self) -> AsyncIterator[Patron]: ...


@dataclass(frozen=True, slots=True)
class ResetToken:
    barcode: str
    expires_at: dt.datetime
    used_at: dt.datetime | None


@runtime_checkable
class TokenStore(Protocol):
    """Single-use PIN-reset tokens, stored by hash only."""

    async def put_token(self, token_hash: bytes, barcode: str, expires_at: dt.datetime) -> None: ...

    async def take_token(self, token_hash: bytes, now: dt.datetime) -> str | None:
        """Mark the token used and return its barcode, or None if unknown, used or expired."""
        ...

    async def peek_token(self, token_hash: bytes, now: dt.datetime) -> str | None:
        """The barcode of a live token without using it (to show the reset form)."""
        ...


OpenStore = Callable[[Any, "StoreServices"], Awaitable[Store]]


@dataclass(frozen=True, slots=True)
class StoreServices:
    """What the core hands a store when it opens: the hasher and where relative paths start."""

    hasher: Any  # bridge.core.pin.PinHasher; Any here keeps this module free of the KDF import
    base_dir: str
    # bridge.core.pepper.Pepper: the stores that keep the bridge's own hashes check it against
    # their recorded fingerprint before writing anything (None: no check, e.g. unit tests)
    pepper: Any = None
    # the peppers `pepper rotate` added beside it (list of Pepper, ids >= 2), checked the same way
    rotated: Any = ()


@dataclass(frozen=True, slots=True)
class StorePlugin:
    """The entry-point target every plugin module exports as `PLUGIN`."""

    name: str
    settings: type[Any]  # a msgspec.Struct for the plugin's `[store]` keys
    open: OpenStore
    description: str = ""
    # async (settings, base_dir) -> bridge.core.pepper.StoredPepper | None, read without
    # writing: `check-config` reports whether the pepper file matches (own stores only)
    inspect_pepper: Callable[[Any, str], Awaitable[Any]] | None = None


class PluginNotFound(StoreError):
    pass


def available_plugins() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_plugin(name: str) -> StorePlugin:
    """Import only the configured plugin, found through the entry-point group."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            plugin = ep.load()
            if not isinstance(plugin, StorePlugin):
                raise PluginNotFound(f"entry point {name!r} is not a StorePlugin")
            return plugin
    known = ", ".join(available_plugins()) or "none"
    raise PluginNotFound(f"no store plugin named {name!r} (installed: {known})")
