"""`Authenticator.recent`: a directory search by barcode answered from the verified cache. It
answers only for a card verified within cache.ttl, never longer, and a PIN change, a block or an
invalidation drops it at once (then the search asks the store). Real SQLite, real fast KDF."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core.cache import VerifiedCache
from bridge.core.secret import Secret
from plugins.sqlite import SqliteStore
from tests.core.support import ACTIVE, UNKNOWN, Rig, fast_hasher, make_auth, sqlite_store
from tests.pins import DEMO_PIN, NEW_PIN


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    hasher = fast_hasher()
    store = await sqlite_store(tmp_path / "patrons.db", hasher, DEMO_PIN)
    yield store
    await store.aclose()
    hasher.close()


@pytest.fixture
def rig(store: SqliteStore) -> Rig:
    return make_auth(store, store.hasher)


async def test_nothing_before_a_verification(rig: Rig) -> None:
    assert rig.auth.recent(ACTIVE) is None
    assert rig.auth.recent(UNKNOWN) is None


async def test_the_verified_record_within_ttl_only(rig: Rig) -> None:
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    found = rig.auth.recent(ACTIVE)
    assert found is not None and found == await rig.auth.lookup(ACTIVE)
    rig.clock.now += rig.cache.ttl + 1
    assert rig.auth.recent(ACTIVE) is None


async def test_a_wrong_pin_caches_nothing(rig: Rig) -> None:
    await rig.auth.authenticate(ACTIVE, Secret(NEW_PIN), rig.ctx)  # not this card's PIN
    assert rig.auth.recent(ACTIVE) is None


async def test_invalidate_drops_it(rig: Rig) -> None:
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    rig.auth.invalidate(ACTIVE)
    assert rig.auth.recent(ACTIVE) is None


async def test_a_block_drops_it_and_the_store_answers_blocked(rig: Rig) -> None:
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    await rig.auth.block(ACTIVE, "Lost card", actor="test")
    assert rig.auth.recent(ACTIVE) is None
    looked_up = await rig.auth.lookup(ACTIVE)
    assert looked_up is not None and looked_up.blocked


async def test_malformed_barcodes_never_reach_the_cache(rig: Rig) -> None:
    for hostile in ("", "x" * 10_000, "\x00", "21234000000001\n"):
        assert rig.auth.recent(hostile) is None


def test_cache_patron_respects_ttl_zero_and_does_not_reorder() -> None:
    from tests.core.support import demo_patrons

    patron = demo_patrons()[0]
    off = VerifiedCache(ttl=0)
    off.put(patron.barcode, Secret(DEMO_PIN), patron, 0.0)
    assert off.patron(patron.barcode, 0.0) is None
    cache = VerifiedCache(ttl=30, max_entries=2)
    other = demo_patrons()[1]
    cache.put(patron.barcode, Secret(DEMO_PIN), patron, 0.0)
    cache.put(other.barcode, Secret(DEMO_PIN), other, 0.0)
    assert cache.patron(patron.barcode, 1.0) is patron  # read: not moved to the end
    cache.put("21234000000009", Secret(DEMO_PIN), other, 1.0)
    assert cache.patron(patron.barcode, 1.0) is None  # the oldest went first: bounded
    assert cache.patron(other.barcode, 29.9) is other
    assert cache.patron(other.barcode, 30.0) is None
