"""`Authenticator.resumed`: the standing check for a resumed 802.1X TTLS session (no PIN): one
store lookup, the client's policy, locks, audited with its own reason. Real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.core.patron import ClientPolicy, Outcome, Patron
from bridge.core.secret import Secret
from plugins.sqlite import SqliteStore
from tests.core.support import (
    ACTIVE,
    BLOCKED,
    EXPIRED,
    FINES,
    UNKNOWN,
    Rig,
    ctx,
    fast_hasher,
    make_auth,
    sqlite_store,
)
from tests.core.test_auth import CountingHasher, FailingStore
from tests.pins import DEMO_PIN, WRONG_PIN


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    hasher = fast_hasher()
    store: SqliteStore = await sqlite_store(tmp_path / "patrons.db", hasher, DEMO_PIN)
    yield make_auth(store, store.hasher)
    await store.aclose()
    hasher.close()


async def test_good_standing_is_accepted_without_pin_work(rig: Rig) -> None:
    counter = CountingHasher(rig.hasher)
    seen: list[tuple[str, str]] = []
    rig.auth.audit.taps.append(lambda barcode, c, d: seen.append((barcode, d.reason)))
    decision = await rig.auth.resumed(ACTIVE, rig.ctx)
    assert decision.outcome is Outcome.ACCEPTED and decision.reason == "resumed"
    assert decision.patron is not None and counter.calls == 0
    assert seen == [(ACTIVE, "resumed")]
    assert rig.throttle.failures(ACTIVE, rig.clock.now) == 0


async def test_standing_per_policy_now(rig: Rig) -> None:
    for barcode, outcome in [
        (EXPIRED, Outcome.CARD_EXPIRED),
        (BLOCKED, Outcome.CARD_BLOCKED),
        (FINES, Outcome.FINES_OVER_LIMIT),
        (UNKNOWN, Outcome.UNKNOWN_CARD),
    ]:
        decision = await rig.auth.resumed(barcode, rig.ctx)
        assert decision.outcome is outcome and decision.reason.startswith("resumed: ")
    lenient = ctx(ClientPolicy(allow_expired=True))
    assert (await rig.auth.resumed(EXPIRED, lenient)).accepted


async def test_locked_card_is_refused(rig: Rig) -> None:
    rules = rig.throttle.rules
    for _ in range(rules.card_lock_after):
        rig.clock.now += rules.card_delay_max + 1
        await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    decision = await rig.auth.resumed(ACTIVE, rig.ctx)
    assert decision.outcome is Outcome.CARD_LOCKED


async def test_malformed_and_store_down() -> None:
    hasher = fast_hasher()
    try:
        rig = make_auth(FailingStore(), hasher)
        assert (await rig.auth.resumed("2123 4", rig.ctx)).outcome is Outcome.BAD_INPUT
        down = await rig.auth.resumed(ACTIVE, rig.ctx)
        assert down.outcome is Outcome.STORE_UNAVAILABLE
    finally:
        hasher.close()


async def test_settle_resumed_answers_a_cached_card_without_the_store(rig: Rig) -> None:
    """A card whose PIN was verified within cache.ttl: decided inline from the cached record,
    audited like `resumed`; a card not cached (or dropped from the cache) is left to it."""
    assert rig.auth.settle_resumed(ACTIVE, rig.ctx) is None  # never verified: the store decides
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    counter = CountingHasher(rig.hasher)
    looked: list[str] = []
    lookup = rig.auth.store.lookup

    async def counting(barcode: str) -> Patron | None:
        looked.append(barcode)
        return await lookup(barcode)

    rig.auth.store.lookup = counting  # type: ignore[method-assign]
    seen: list[tuple[str, str]] = []
    rig.auth.audit.taps.append(lambda barcode, c, d: seen.append((barcode, d.reason)))
    decision = rig.auth.settle_resumed(ACTIVE, rig.ctx)
    assert decision is not None and decision.outcome is Outcome.ACCEPTED
    assert decision.reason == "resumed" and decision.patron is not None
    assert seen == [(ACTIVE, "resumed")] and looked == [] and counter.calls == 0
    rig.auth.invalidate(ACTIVE)  # a block or PIN change through the bridge drops the record
    assert rig.auth.settle_resumed(ACTIVE, rig.ctx) is None and seen == [(ACTIVE, "resumed")]


async def test_settle_resumed_refuses_like_resumed(rig: Rig) -> None:
    await rig.auth.authenticate(FINES, Secret(DEMO_PIN), rig.ctx)  # right PIN, over its fines
    over = rig.auth.settle_resumed(FINES, rig.ctx)
    assert over is not None and over.outcome is Outcome.FINES_OVER_LIMIT
    assert over.reason.startswith("resumed: fines")
    malformed = rig.auth.settle_resumed("2123 4", rig.ctx)
    assert malformed is not None and malformed.outcome is Outcome.BAD_INPUT
    rules = rig.throttle.rules
    for _ in range(rules.card_lock_after):
        rig.clock.now += rules.card_delay_max + 1
        await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    locked = rig.auth.settle_resumed(ACTIVE, rig.ctx)
    assert locked is not None and locked.outcome is Outcome.CARD_LOCKED
    assert locked.reason.startswith("resumed: ")
    assert rig.throttle.failures(FINES, rig.clock.now) == 0  # nothing counted for a resumption
