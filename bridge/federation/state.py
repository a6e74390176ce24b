"""Where the provider keeps what must outlive a request: pending sign-ins, codes, access tokens,
remembered consents and single sign-on sessions.

One small interface (`FederationState`) with three homes, chosen by `[state]`:
- `memory` (one process; lost on restart): `MemoryState` below;
- the SQLite state file (`[state] backend = "sqlite"`, one host, any number of workers) or the
  postgres store's database (`[throttle] state = "store"`): `bridge.federation.state_sql`;
- Redis (`[state] backend = "redis"`, every worker of every host): `bridge.federation.state_redis`.

Values are opaque text (JSON made by the callers) under keys that are already hashes or random
ids. The one operation that must be atomic on the server side is `redeem`: it takes a code once
and, in the same step, stores the access token it gives and marks the code used with that
token's key, so a second redemption (on any host, at any moment) finds the mark and deletes the
token. Two hosts can never both take one code, and no interleaving leaves a token alive after a
replay was seen.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bridge.config import Config

MAX_ENTRIES = 100_000


class StateUnavailable(Exception):
    """The shared state did not answer (the pages answer 503; nothing is decided without it)."""


class Taken(enum.Enum):
    UNKNOWN = "unknown"  # no such code (or long expired)
    REPLAYED = "replayed"  # used before: the token it gave is now deleted
    TAKEN = "taken"  # this call took it


@dataclass(frozen=True, slots=True)
class Redeemed:
    outcome: Taken
    value: str | None = None  # the code's stored value when taken


class FederationState(Protocol):
    """Expiring text values by key, shared as widely as the `[state]` backend reaches."""

    shared: bool  # False: this process alone (memory)

    async def put(self, key: str, value: str, ttl: float, *, tag: str | None = None) -> None:
        """Store (or replace) `key` for `ttl` seconds; `tag` groups keys for `delete_tagged`."""
        ...

    async def get(self, key: str) -> str | None: ...

    async def delete(self, key: str) -> None: ...

    async def delete_tagged(self, tag: str) -> None:
        """Delete every key stored with this tag (a patron's sessions)."""
        ...

    async def put_new(self, key: str, value: str, ttl: float) -> str:
        """Store `value` unless `key` exists; the value now stored (for a key made once)."""
        ...

    async def redeem(self, code: str, token: str, token_ttl: float) -> Redeemed:
        """Take the code once: store its value under `token` and mark it used by `token`."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    expires: float
    value: str
    tag: str | None = None
    used: str | None = None


@dataclass(slots=True)
class MemoryState:
    """This process only: a bounded dict (oldest entries dropped beyond MAX_ENTRIES)."""

    clock: Callable[[], float]
    shared: bool = False
    _items: OrderedDict[str, _Entry] = field(default_factory=OrderedDict)

    def _live(self, key: str) -> _Entry | None:
        entry = self._items.get(key)
        if entry is not None and entry.expires <= self.clock():
            del self._items[key]
            return None
        return entry

    def _sweep(self) -> None:
        now = self.clock()
        for key in [k for k, e in self._items.items() if e.expires <= now]:
            del self._items[key]
        while len(self._items) > MAX_ENTRIES:
            self._items.popitem(last=False)

    async def put(self, key: str, value: str, ttl: float, *, tag: str | None = None) -> None:
        self._items.pop(key, None)
        self._items[key] = _Entry(self.clock() + ttl, value, tag)
        if len(self._items) % 1000 == 0 or len(self._items) > MAX_ENTRIES:
            self._sweep()

    async def get(self, key: str) -> str | None:
        entry = self._live(key)
        return None if entry is None or entry.used is not None else entry.value

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def delete_tagged(self, tag: str) -> None:
        for key in [k for k, e in self._items.items() if e.tag == tag]:
            del self._items[key]

    async def put_new(self, key: str, value: str, ttl: float) -> str:
        entry = self._live(key)
        if entry is None:
            await self.put(key, value, ttl)
            return value
        return entry.value

    async def redeem(self, code: str, token: str, token_ttl: float) -> Redeemed:
        entry = self._live(code)
        if entry is None:
            return Redeemed(Taken.UNKNOWN)
        if entry.used is not None:
            self._items.pop(entry.used, None)
            return Redeemed(Taken.REPLAYED)
        entry.used = token
        await self.put(token, entry.value, token_ttl)
        return Redeemed(Taken.TAKEN, entry.value)

    async def aclose(self) -> None:
        self._items.clear()


def open_state(config: Config, store: Any, clock: Callable[[], float]) -> FederationState:
    """The home `[state]` implies: Redis, the SQLite state file, the postgres store, or memory."""
    backend = config.state_backend
    if backend == "redis":
        from bridge.federation.state_redis import RedisState
        from bridge.state.redis_client import connect
        from bridge.state.shared import redis_ca

        client = connect(config.state, redis_ca(config))
        return RedisState(client, config.state.key_prefix + "oidc:")
    if backend == "sqlite":
        from bridge.federation.state_sql import sqlite_state

        return sqlite_state(config.state_path)
    if backend == "store":
        dsn = getattr(store, "_dsn", "")
        if dsn:
            from bridge.federation.state_sql import postgres_state

            return postgres_state(dsn)
    return MemoryState(clock)
