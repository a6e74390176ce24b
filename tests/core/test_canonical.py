"""Canonical barcodes: the authenticator keys throttle, locks, cache and audit on the store's
canonical form, resolved once at construction (identity stores cost no call per request), and
resolves identifiers for stores that accept several per patron."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.core.patron import Outcome, Patron
from bridge.core.secret import Secret
from bridge.core.store import (
    StoreUnavailable,
    ascii_case_insensitive,
    barcode_canonicalizer,
    same_barcode,
)
from bridge.core.throttle import ThrottleRules
from plugins.sqlite import SqliteStore
from tests.core.support import ACTIVE, UNKNOWN, fast_hasher, make_auth, sqlite_store
from tests.pins import DEMO_PIN, WRONG_PIN

LOCK_AT_TWO = ThrottleRules(card_free_failures=1, card_lock_after=2, source_max_failures=1000)


class CaseInsensitive:
    """A SQLite store whose lookup ignores case (as Koha's collation does), counting how often
    the authenticator asks for the canonical form."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.calls = 0

    def canonical_barcode(self, barcode: str) -> str:
        self.calls += 1
        return ascii_case_insensitive(barcode)

    async def lookup(self, barcode: str) -> Patron | None:
        return await self.inner.lookup(barcode.upper())

    async def verify_pin(self, barcode: str, pin: Secret) -> Any:
        return await self.inner.verify_pin(barcode.upper(), pin)

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        await self.inner.change_pin(patron, new_pin)

    async def health(self) -> Any:
        return await self.inner.health()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    hasher = fast_hasher()
    inner = await sqlite_store(tmp_path / "p.db", hasher, DEMO_PIN)
    yield inner
    await inner.aclose()
    hasher.close()


@pytest.fixture
def ctx() -> Iterator[Any]:
    from tests.core.support import ctx as make

    yield make()


def test_identity_stores_cost_no_call(store: SqliteStore) -> None:
    assert SqliteStore.canonical_barcode is same_barcode
    assert barcode_canonicalizer(store) is None
    assert barcode_canonicalizer(object()) is None  # a store written before the method


async def test_case_variants_share_lock_and_cache(store: SqliteStore, ctx: Any) -> None:
    wrapped = CaseInsensitive(store)
    # The demo barcodes are digits: give the active one letters the way Koha might store them.
    rig = make_auth(wrapped, fast_hasher(), rules=LOCK_AT_TWO)
    auth = rig.auth
    for typed in ("x" + ACTIVE, "X" + ACTIVE):
        decision = await auth.authenticate(typed, Secret(DEMO_PIN), ctx)
        assert decision.outcome is Outcome.UNKNOWN_CARD  # no such card, but counted once each
    assert rig.throttle.card_locked("X" + ACTIVE, rig.clock())
    locked = auth.settle("x" + ACTIVE, Secret(DEMO_PIN), ctx)
    assert locked is not None and locked.outcome is Outcome.CARD_LOCKED
    auth.clear_lock("x" + ACTIVE, actor="test")
    assert not rig.throttle.card_locked("X" + ACTIVE, rig.clock())
    assert wrapped.calls == 4  # authenticate twice, settle, clear_lock: once each


async def test_cached_answer_found_under_either_case(ctx: Any, tmp_path: Path) -> None:
    hasher = fast_hasher()
    inner = await sqlite_store(tmp_path / "c.db", hasher, DEMO_PIN)
    try:
        from bridge.core.patron import Patron as P
        from bridge.core.store import NewPatron

        await inner.add_patron(
            NewPatron(P("K19ABC", "r9", "Casey, Cam", None, "ADULT", None), pin=Secret(DEMO_PIN))
        )
        rig = make_auth(CaseInsensitive(inner), hasher, rules=LOCK_AT_TWO)
        first = await rig.auth.authenticate("k19abc", Secret(DEMO_PIN), ctx)
        assert first.outcome is Outcome.ACCEPTED
        cached = rig.auth.settle("K19aBC", Secret(DEMO_PIN), ctx)
        assert cached is not None and cached.outcome is Outcome.ACCEPTED  # no store call
        for typed in ("k19ABC", "K19abc"):
            wrong = await rig.auth.authenticate(typed, Secret(WRONG_PIN), ctx)
            assert wrong.outcome is Outcome.BAD_PIN
        locked = rig.auth.settle("k19abc", Secret(DEMO_PIN), ctx)
        assert locked is not None and locked.outcome is Outcome.CARD_LOCKED
    finally:
        await inner.aclose()
        hasher.close()


class Resolving(CaseInsensitive):
    """Accepts `alias-<barcode>` as a second identifier of each patron."""

    def __init__(self, inner: SqliteStore, *, down: bool = False) -> None:
        super().__init__(inner)
        self.down = down
        self.resolved: list[str] = []

    async def resolve_identifier(self, identifier: str) -> str | None:
        self.resolved.append(identifier)
        if self.down:
            raise StoreUnavailable("resolver down")
        card = identifier.removeprefix("ALIAS-")
        return card if await self.inner.lookup(card) is not None else None

    async def verify_pin(self, barcode: str, pin: Secret) -> Any:
        if self.down:
            raise StoreUnavailable("store down")
        return await super().verify_pin(barcode.removeprefix("ALIAS-"), pin)


async def test_resolved_identifiers_share_the_card_key(store: SqliteStore, ctx: Any) -> None:
    resolving = Resolving(store)
    rig = make_auth(resolving, fast_hasher(), rules=LOCK_AT_TWO)
    for typed in ("alias-" + ACTIVE, ACTIVE):
        wrong = await rig.auth.authenticate(typed, Secret(WRONG_PIN), ctx)
        assert wrong.outcome is Outcome.BAD_PIN
    assert rig.throttle.card_locked(ACTIVE, rig.clock())
    assert not rig.throttle.card_locked("ALIAS-" + ACTIVE, rig.clock())
    locked = await rig.auth.authenticate("Alias-" + ACTIVE, Secret(DEMO_PIN), ctx)
    assert locked.outcome is Outcome.CARD_LOCKED
    assert rig.auth.settle(ACTIVE, Secret(DEMO_PIN), ctx) is None  # always through the store
    # Malformed input never reaches the resolver; an unknown identifier keys on itself.
    resolving.resolved.clear()
    bad = await rig.auth.authenticate("not a barcode", Secret(DEMO_PIN), ctx)
    assert bad.outcome is Outcome.BAD_INPUT and resolving.resolved == []
    unknown = await rig.auth.authenticate(UNKNOWN, Secret(DEMO_PIN), ctx)
    assert unknown.outcome is Outcome.UNKNOWN_CARD


async def test_resolver_down_is_store_unavailable(store: SqliteStore, ctx: Any) -> None:
    rig = make_auth(Resolving(store, down=True), fast_hasher(), rules=LOCK_AT_TWO)
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx)
    assert decision.outcome is Outcome.STORE_UNAVAILABLE
