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
