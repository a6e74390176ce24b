"""Store fixtures: every plugin opened the way the daemon opens it, over the same seed patrons.

`writable_store` runs a test against each store the bridge owns (sqlite, postgres);
`any_store` adds the read-only ILS connectors (koha-sql on MariaDB, evergreen-sql on
PostgreSQL). Each fixture builds its own database and drops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bridge.core.patron import Patron
from bridge.core.pin import KdfParams, PinHasher
from bridge.core.secret import Secret
from bridge.core.store import NewPatron, Store, StoreServices, load_plugin
from tests.plugins import ils_fixtures, servers
from tests.plugins.seed import SEED

WRITABLE = ("sqlite", "postgres")
READ_ONLY = ("koha-sql", "evergreen-sql")


class CountingHasher(PinHasher):
    """The real hasher, counting KDF runs so tests can see that an unknown card cost one."""

    def __init__(self) -> None:
        super().__init__(os.urandom(32), KdfParams(argon2_memory_kib=8192, argon2_iterations=1))
        self.kdf_runs = 0

    def verify_sync(self, pin: Secret, stored: str) -> Any:
        self.kdf_runs += 1
        return super().verify_sync(pin, stored)


@pytest.fixture
def hasher() -> Iterator[CountingHasher]:
    h = CountingHasher()
    yield h
    h.close()


@dataclass
class Opened:
    kind: str
    store: Store
    dbname: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def seed_patrons() -> list[NewPatron]:
    return [
        NewPatron(
            Patron(
                barcode=s.barcode,
                record_id=f"rec-{s.barcode}",
                name=s.name,
                email=s.email,
                category=s.category,
                expires=s.expires,
                blocked=s.blocked is not None,
                blocked_reason=s.blocked,
                fines=s.fines,
                home_library=s.home_library,
            ),
            pin=Secret(s.pin) if s.pin else None,
        )
        for s in SEED
    ]


async def open_plugin(name: str, settings: dict[str, Any], hasher: PinHasher, base: Path) -> Any:
    plugin = load_plugin(name)
    parsed = msgspec.convert(settings, plugin.settings, strict=False)
    return await plugin.open(parsed, StoreServices(hasher=hasher, base_dir=str(base)))


def pg_settings(dbname: str, **more: Any) -> dict[str, Any]:
    return {
        "host": servers.PG_HOST,
        "port": servers.PG_PORT,
        "dbname": dbname,
        "user": "postgres",
        "query_timeout": 10.0,
        **more,
    }


@contextlib.asynccontextmanager
async def open_kind(
    kind: str,
    hasher: PinHasher,
    tmp_path: Path,
    *,
    seed: bool = True,
    build: dict[str, Any] | None = None,
    **more: Any,
) -> AsyncIterator[Opened]:
    """Open one store of `kind` over a fresh database holding the seed patrons (`build`: more
    arguments for the ILS fixture's builder; `more`: store settings)."""
    if kind == "sqlite":
        store = await open_plugin(
            "sqlite", {"path": str(tmp_path / "p.db"), **more}, hasher, tmp_path
        )
        try:
            if seed:
                await store.add_patrons(seed_patrons())
            yield Opened(kind, store)
        finally:
            await store.aclose()
    elif kind == "postgres":
        with servers.pg_database() as dbname:
            store = await open_plugin("postgres", pg_settings(dbname, **more), hasher, tmp_path)
            try:
                if seed:
                    await store.add_patrons(seed_patrons())
                yield Opened(kind, store, dbname)
            finally:
                await store.aclose()
    elif kind == "koha-sql":
        with servers.mariadb_database("pb_koha") as dbname:
            extra = ils_fixtures.build_koha(dbname, SEED if seed else (), **(build or {}))
            settings = {
                "host": servers.MY_HOST,
                "port": servers.MY_PORT,
                "database": dbname,
                "user": extra["user"],
                "password": extra["password"],
                "query_timeout": 10.0,
                **more,
            }
            store = await open_plugin("koha-sql", settings, hasher, tmp_path)
            try:
                yield Opened(kind, store, dbname, extra)
            finally:
                await store.aclose()
                ils_fixtures.drop_koha_user(extra["user"])
    elif kind == "evergreen-sql":
        extra = {}
        try:
            with servers.pg_database("pb_eg") as dbname:
                extra = ils_fixtures.build_evergreen(dbname, SEED if seed else (), **(build or {}))
                settings = pg_settings(
                    dbname, user=extra["user"], password=extra["password"], **more
                )
                store = await open_plugin("evergreen-sql", settings, hasher, tmp_path)
                try:
                    yield Opened(kind, store, dbname, extra)
                finally:
                    await store.aclose()
        finally:
            if extra:  # the role outlives its database's grants only once the database is gone
                ils_fixtures.drop_pg_role(extra["user"])
    else:
        raise AssertionError(kind)


@pytest.fixture(params=WRITABLE)
async def writable(
    request: pytest.FixtureRequest, hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Opened]:
    async with open_kind(request.param, hasher, tmp_path) as opened:
        yield opened


@pytest.fixture(params=WRITABLE + READ_ONLY)
async def any_store(
    request: pytest.FixtureRequest, hasher: CountingHasher, tmp_path: Path
) -> AsyncIterator[Opened]:
    async with open_kind(request.param, hasher, tmp_path) as opened:
        yield opened


def authenticator(store: Store) -> Any:
    """The real core over a store: a short card lock (2 failures) and no credential cache, so
    every call reaches the store."""
    from bridge.core.audit import Audit
    from bridge.core.auth import Authenticator
    from bridge.core.cache import VerifiedCache
    from bridge.core.throttle import Throttle, ThrottleRules

    rules = ThrottleRules(card_free_failures=1, card_lock_after=2, source_max_failures=1000)
    return Authenticator(
        store, throttle=Throttle(rules), cache=VerifiedCache(ttl=0), audit=Audit("hash", b"k")
    )


def ctx(fines_limit: str | None = "10.00") -> Any:
    from decimal import Decimal

    from bridge.core.patron import ClientPolicy, Context

    limit = None if fines_limit is None else Decimal(fines_limit)
    return Context("test", "contract", "192.0.2.7", ClientPolicy(fines_limit=limit))
