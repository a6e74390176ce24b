"""Every outcome of the Authenticator, per-client policy, the verified cache, rehash on login and
the dummy KDF work for unknown cards. Real SQLite store and real (fast) KDF; a clock by hand."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import bcrypt
import pytest

from bridge.core.patron import ClientPolicy, Outcome, Patron
from bridge.core.pin import HashCheck, PinHasher
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    Health,
    NewPatron,
    StoreUnavailable,
    Verification,
)
from bridge.core.throttle import ThrottleRules
from plugins.sqlite import SqliteStore
from tests.core.support import (
    ACTIVE,
    BLOCKED,
    EXPIRED,
    FAST_SCRYPT,
    FINES,
    MINOR,
    UNKNOWN,
    Rig,
    ctx,
    fast_hasher,
    make_auth,
    sqlite_store,
)
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN


class CountingHasher:
    """Counts KDF verifications by wrapping the hasher's synchronous verify."""

    def __init__(self, hasher: PinHasher) -> None:
        self.calls = 0
        inner = hasher.verify_sync

        def counted(pin: Secret, stored: str) -> HashCheck:
            self.calls += 1
            return inner(pin, stored)

        hasher.verify_sync = counted  # type: ignore[method-assign]


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


def stored_hash(store: SqliteStore, barcode: str) -> str:
    with sqlite3.connect(store.path) as conn:
        row = conn.execute("SELECT pin_hash FROM patrons WHERE barcode = ?", (barcode,)).fetchone()
    return str(row[0])


# -- outcomes ---------------------------------------------------------------------------------


async def test_accepted(rig: Rig) -> None:
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.ACCEPTED and decision.accepted and decision.pin_ok
    assert decision.patron is not None and decision.patron.name == "Rivera, Ana"


async def test_bad_pin(rig: Rig) -> None:
    decision = await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    assert decision.outcome is Outcome.BAD_PIN and not decision.pin_ok
    assert rig.throttle.failures(ACTIVE, rig.clock.now) == 1


async def test_unknown_card_costs_one_dummy_kdf(rig: Rig) -> None:
    counter = CountingHasher(rig.hasher)
    decision = await rig.auth.authenticate(UNKNOWN, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.UNKNOWN_CARD and decision.patron is None
    assert counter.calls == 1  # the same KDF work as a known card: no timing oracle
    await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    assert counter.calls == 2


async def test_card_with_no_pin_does_dummy_work_and_refuses(store: SqliteStore, rig: Rig) -> None:
    await store.add_patron(NewPatron(Patron("21234000000099", "r99", "No Pin")))
    counter = CountingHasher(rig.hasher)
    decision = await rig.auth.authenticate("21234000000099", Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.BAD_PIN and counter.calls == 1


async def test_expired_blocked_fines(rig: Rig) -> None:
    for barcode, outcome in [
        (EXPIRED, Outcome.CARD_EXPIRED),
        (BLOCKED, Outcome.CARD_BLOCKED),
        (FINES, Outcome.FINES_OVER_LIMIT),
        (MINOR, Outcome.ACCEPTED),
    ]:
        decision = await rig.auth.authenticate(barcode, Secret(DEMO_PIN), rig.ctx)
        assert decision.outcome is outcome, barcode
        assert decision.pin_ok and decision.patron is not None
    blocked = await rig.auth.authenticate(BLOCKED, Secret(DEMO_PIN), rig.ctx)
    assert blocked.reason == "Lost"
    fines = await rig.auth.authenticate(FINES, Secret(DEMO_PIN), rig.ctx)
    assert "25.00" in fines.reason


async def test_wrong_pin_on_blocked_card_says_bad_pin(rig: Rig) -> None:
    """The standing of a card is only told to someone who knows its PIN."""
    decision = await rig.auth.authenticate(BLOCKED, Secret(WRONG_PIN), rig.ctx)
    assert decision.outcome is Outcome.BAD_PIN and not decision.pin_ok


async def test_card_locked_after_failures(rig: Rig) -> None:
    rules = rig.throttle.rules
    for _ in range(rules.card_lock_after):
        rig.clock.now += rules.card_delay_max + 1  # past any delay
        decision = await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
        assert decision.outcome is Outcome.BAD_PIN
    rig.clock.now += rules.card_delay_max + 1
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.CARD_LOCKED and not decision.pin_ok
    assert decision.retry_after is not None and 0 < decision.retry_after <= rules.card_lock_seconds
    rig.auth.clear_lock(ACTIVE, actor="test")
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.ACCEPTED


async def test_delay_refuses_without_pin_work(rig: Rig) -> None:
    rules = rig.throttle.rules
    for _ in range(rules.card_free_failures + 1):
        await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    counter = CountingHasher(rig.hasher)
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.CARD_LOCKED and decision.retry_after is not None
    assert counter.calls == 0
    rig.clock.now += decision.retry_after
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    assert rig.throttle.failures(ACTIVE, rig.clock.now) == 0  # success resets


class FailingStore:
    capabilities = frozenset({Capability.VERIFY})

    async def lookup(self, barcode: str) -> Patron | None:
        raise StoreUnavailable("ils: connection refused")

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        raise StoreUnavailable("ils: connection refused")

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        raise StoreUnavailable("ils: connection refused")

    async def health(self) -> Health:
        raise StoreUnavailable("ils: connection refused")

    async def aclose(self) -> None:
        return None


async def test_store_unavailable() -> None:
    hasher = fast_hasher()
    try:
        rig = make_auth(FailingStore(), hasher)
        decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
        assert decision.outcome is Outcome.STORE_UNAVAILABLE
        assert "connection refused" in decision.reason
        # An outage is not the patron's failure: nothing counted against the card or source.
        assert rig.throttle.failures(ACTIVE, rig.clock.now) == 0
        assert not (await rig.auth.health()).ok
        result = await rig.auth.set_pin(ACTIVE, Secret(NEW_PIN), actor="t")
        assert not result.ok and result.outcome is Outcome.STORE_UNAVAILABLE
    finally:
        hasher.close()


@pytest.mark.parametrize(
    ("barcode", "pin"),
    [
        ("", Secret(DEMO_PIN)),
        ("2123 4000", Secret(DEMO_PIN)),
        ("x" * 65, Secret(DEMO_PIN)),
        ("21234\u00e9", Secret(DEMO_PIN)),
        ("2123\n4", Secret(DEMO_PIN)),
        (ACTIVE, Secret("")),
        (ACTIVE, Secret(b"\xff\xfe12")),
        (ACTIVE, Secret("1" * 129)),
    ],
)
async def test_bad_input(rig: Rig, barcode: str, pin: Secret) -> None:
    counter = CountingHasher(rig.hasher)
    decision = await rig.auth.authenticate(barcode, pin, rig.ctx)
    assert decision.outcome is Outcome.BAD_INPUT and counter.calls == 0


# -- per-client policy ------------------------------------------------------------------------


async def test_client_policy(rig: Rig) -> None:
    lenient = ctx(ClientPolicy(allow_expired=True, allow_blocked=True, fines_limit=None))
    for barcode in (EXPIRED, BLOCKED, FINES):
        decision = await rig.auth.authenticate(barcode, Secret(DEMO_PIN), lenient)
        assert decision.outcome is Outcome.ACCEPTED, barcode
    only_expired = ctx(ClientPolicy(allow_expired=True))
    assert (await rig.auth.authenticate(EXPIRED, Secret(DEMO_PIN), only_expired)).accepted
    decision = await rig.auth.authenticate(BLOCKED, Secret(DEMO_PIN), only_expired)
    assert decision.outcome is Outcome.CARD_BLOCKED
    high_limit = ctx(ClientPolicy(fines_limit=Decimal("25.00")))
    assert (await rig.auth.authenticate(FINES, Secret(DEMO_PIN), high_limit)).accepted
    low_limit = ctx(ClientPolicy(fines_limit=Decimal("24.99")))
    decision = await rig.auth.authenticate(FINES, Secret(DEMO_PIN), low_limit)
    assert decision.outcome is Outcome.FINES_OVER_LIMIT
    # The same cached credential is judged by each client's own policy.
    decision = await rig.auth.authenticate(FINES, Secret(DEMO_PIN), ctx(ClientPolicy()))
    assert decision.outcome is Outcome.FINES_OVER_LIMIT


# -- the verified cache -----------------------------------------------------------------------


async def test_cache_hit_skips_kdf(rig: Rig) -> None:
    counter = CountingHasher(rig.hasher)
    first = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    second = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert first.accepted and second.accepted and counter.calls == 1
    assert second.reason == "verified (cached)"
    # A wrong PIN never matches the cache entry.
    wrong = await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    assert wrong.outcome is Outcome.BAD_PIN and counter.calls == 2
    # Past the TTL the KDF runs again.
    rig.clock.now += rig.cache.ttl + 1
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    assert counter.calls == 3


async def test_cache_never_holds_the_pin(rig: Rig) -> None:
    await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    entry = rig.cache._entries[ACTIVE]
    assert DEMO_PIN.encode() not in entry.digest and len(entry.digest) == 32


async def test_pin_change_invalidates_cache(rig: Rig) -> None:
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    result = await rig.auth.change_pin(
        ACTIVE, Secret(DEMO_PIN), Secret(NEW_PIN), Secret(NEW_PIN), rig.ctx
    )
    assert result.ok, result.reason
    assert ACTIVE not in rig.cache._entries
    old = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert old.outcome is Outcome.BAD_PIN
    assert (await rig.auth.authenticate(ACTIVE, Secret(NEW_PIN), rig.ctx)).accepted


async def test_staff_reset_invalidates_cache_and_clears_lock(rig: Rig) -> None:
    assert (await rig.auth.authenticate(MINOR, Secret(DEMO_PIN), rig.ctx)).accepted
    invalidated: list[str] = []
    rig.auth.on_invalidate.append(invalidated.append)
    result = await rig.auth.set_pin(MINOR, Secret(OTHER_PIN), actor="desk")
    assert result.ok and invalidated == [MINOR]
    assert (await rig.auth.authenticate(MINOR, Secret(DEMO_PIN), rig.ctx)).outcome is (
        Outcome.BAD_PIN
    )
    refused = await rig.auth.set_pin(MINOR, Secret("2222"), actor="desk")
    assert not refused.ok and refused.policy is not None and refused.policy.code == "repeating"
    unknown = await rig.auth.set_pin(UNKNOWN, Secret(OTHER_PIN), actor="desk")
    assert unknown.outcome is Outcome.UNKNOWN_CARD


async def test_a_change_is_answered_after_the_hooks_remote_work(rig: Rig) -> None:
    """A hook whose work is remote (ending the patron's sessions in the shared session store)
    returns it: a PIN change is answered only once that work is done, so a patron who changes
    the PIN to shut someone out is not told "done" while the other session still works."""
    done: list[str] = []
    release = asyncio.Event()

    async def end_sessions(barcode: str) -> None:
        await release.wait()
        done.append(barcode)

    called = asyncio.Event()

    def hook(barcode: str) -> asyncio.Future[None]:
        called.set()
        return asyncio.ensure_future(end_sessions(barcode))

    rig.auth.on_invalidate.append(hook)
    change = asyncio.ensure_future(
        rig.auth.change_pin(ACTIVE, Secret(DEMO_PIN), Secret(NEW_PIN), Secret(NEW_PIN), rig.ctx)
    )
    await called.wait()  # the PIN is changed in the store; the sessions are being ended
    for _ in range(10):
        await asyncio.sleep(0)
    assert not change.done() and done == []
    release.set()
    assert (await change).ok and done == [ACTIVE]


async def test_change_pin_refusals(rig: Rig) -> None:
    mismatch = await rig.auth.change_pin(
        ACTIVE, Secret(DEMO_PIN), Secret(NEW_PIN), Secret(OTHER_PIN), rig.ctx
    )
    assert not mismatch.ok and "do not match" in mismatch.reason
    wrong_old = await rig.auth.change_pin(
        ACTIVE, Secret(WRONG_PIN), Secret(NEW_PIN), Secret(NEW_PIN), rig.ctx
    )
    assert not wrong_old.ok and wrong_old.outcome is Outcome.BAD_PIN
    same = await rig.auth.change_pin(
        ACTIVE, Secret(DEMO_PIN), Secret(DEMO_PIN), Secret(DEMO_PIN), rig.ctx
    )
    assert not same.ok and same.policy is not None and same.policy.code == "same_as_old"


async def test_block_invalidates_cache(rig: Rig) -> None:
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    patron = await rig.auth.block(ACTIVE, "Card stolen", actor="desk")
    assert patron is not None and patron.blocked
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.CARD_BLOCKED and decision.reason == "Card stolen"
    assert await rig.auth.block(UNKNOWN, "x", actor="desk") is None


async def test_lock_invalidates_cache(rig: Rig) -> None:
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
    rules = rig.throttle.rules
    for _ in range(rules.card_lock_after):
        rig.clock.now += rules.card_delay_max + 1
        await rig.auth.authenticate(ACTIVE, Secret(WRONG_PIN), rig.ctx)
    rig.clock.now += 1
    assert ACTIVE not in rig.cache._entries
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.CARD_LOCKED


async def test_global_spray_guard_is_scoped_to_the_failing_sources(rig: Rig) -> None:
    """One PIN sprayed over 400 sequential barcodes from four addresses trips the global guard
    at its threshold; the spraying addresses are refused (even for a right PIN), patrons
    already in the verified cache and patrons from any other address still get in."""
    rules = ThrottleRules(global_max_failures=300, global_window=60.0, source_max_failures=10**6)
    rig.throttle.rules = rules
    sprayers = [f"198.51.100.{i}" for i in range(4)]
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx(source=sprayers[0]))).accepted
    outcomes = []
    for i in range(400):
        barcode = f"2129900{i:07d}"
        decision = await rig.auth.authenticate(
            barcode, Secret(WRONG_PIN), ctx(source=sprayers[i % 4])
        )
        outcomes.append(decision.outcome)
    assert outcomes[:300] == [Outcome.UNKNOWN_CARD] * 300
    assert set(outcomes[300:]) == {Outcome.CARD_LOCKED}
    # The cached patron passes even from a spraying address; an uncached one does not.
    assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx(source=sprayers[0]))).accepted
    refused = await rig.auth.authenticate(MINOR, Secret(DEMO_PIN), ctx(source=sprayers[1]))
    assert refused.outcome is Outcome.CARD_LOCKED and refused.retry_after is not None
    # Elsewhere the library works: an uncached patron from another address is let in.
    assert (await rig.auth.authenticate(MINOR, Secret(DEMO_PIN), ctx(source="192.0.2.50"))).accepted
    rig.clock.now += rules.global_window + 1
    decision = await rig.auth.authenticate(FINES, Secret(DEMO_PIN), ctx(source=sprayers[1]))
    assert decision.pin_ok


# -- rehash on login --------------------------------------------------------------------------


async def test_scrypt_hash_is_rehashed_to_argon2id(tmp_path: Path) -> None:
    pepper = b"p" * 32
    old = fast_hasher(FAST_SCRYPT, pepper)
    new = fast_hasher(pepper=pepper)
    store = await sqlite_store(tmp_path / "p.db", old, DEMO_PIN)
    try:
        assert stored_hash(store, ACTIVE).startswith("$scrypt$")
        store.hasher = new
        rig = make_auth(store, new)
        assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
        await rig.auth.aclose()  # waits for the background rehash
        assert stored_hash(store, ACTIVE).startswith("$argon2id$")
        assert stored_hash(store, MINOR).startswith("$scrypt$")  # untouched until it logs in
        rig.cache.clear()
        assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
        assert (await rig.auth.authenticate(MINOR, Secret(DEMO_PIN), rig.ctx)).accepted
        await rig.auth.aclose()
    finally:
        await store.aclose()
        old.close()
        new.close()


async def test_legacy_bcrypt_is_rehashed_to_argon2id(store: SqliteStore, rig: Rig) -> None:
    koha = bcrypt.hashpw(DEMO_PIN.encode(), bcrypt.gensalt(4, prefix=b"2a")).decode()
    patron = Patron("21234000000042", "r42", "Imported, Ida")
    await store.add_patron(NewPatron(patron, pin_hash=koha))
    wrong = await rig.auth.authenticate(patron.barcode, Secret(WRONG_PIN), rig.ctx)
    assert wrong.outcome is Outcome.BAD_PIN
    await rig.auth.aclose()
    assert stored_hash(store, patron.barcode) == koha  # a failed login never rehashes
    assert (await rig.auth.authenticate(patron.barcode, Secret(DEMO_PIN), rig.ctx)).accepted
    await rig.auth.aclose()
    assert stored_hash(store, patron.barcode).startswith("$argon2id$")
    rig.cache.clear()
    assert (await rig.auth.authenticate(patron.barcode, Secret(DEMO_PIN), rig.ctx)).accepted


async def test_outdated_argon2_params_are_rehashed(tmp_path: Path) -> None:
    pepper = b"q" * 32
    weak = fast_hasher(pepper=pepper)
    stronger = fast_hasher(
        type(weak.params)(argon2_memory_kib=8192, argon2_iterations=2), pepper=pepper
    )
    store = await sqlite_store(tmp_path / "p.db", weak, DEMO_PIN)
    try:
        store.hasher = stronger
        rig = make_auth(store, stronger)
        assert (await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)).accepted
        await rig.auth.aclose()
        assert ",t=2," in stored_hash(store, ACTIVE)
    finally:
        await store.aclose()
        weak.close()
        stronger.close()


async def test_corrupt_stored_hash_is_store_unavailable_not_bad_pin(
    store: SqliteStore, rig: Rig
) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute(
            "UPDATE patrons SET pin_hash = ? WHERE barcode = ?",
            ("$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$!!corrupt!!", ACTIVE),
        )
    decision = await rig.auth.authenticate(ACTIVE, Secret(DEMO_PIN), rig.ctx)
    assert decision.outcome is Outcome.STORE_UNAVAILABLE
    assert "corrupt" not in decision.reason
    assert rig.throttle.failures(ACTIVE, rig.clock.now) == 0
