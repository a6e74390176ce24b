"""The one store contract: every plugin answers the same questions the same way.

`any_store` runs the read-only part against sqlite, postgres, koha-sql and evergreen-sql;
`writable` runs the rest against the stores the bridge owns (sqlite, postgres).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.core.patron import Patron
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    NewPatron,
    NotSupported,
    SearchableStore,
    Store,
    TokenStore,
    WritableStore,
    barcode_canonicalizer,
)
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN
from tests.plugins.conftest import CountingHasher, Opened
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, FINES, NO_PIN, UNKNOWN

# -- read-only contract: every store ------------------------------------------------------------


async def test_canonical_barcode_is_what_the_lookup_does(any_store: Opened) -> None:
    """Each store names the form its own lookup cannot tell apart from a barcode: the bridge's
    stores and Evergreen match exactly (no canonical call at all on the hot path); Koha's
    collation ignores case, so its canonical form does too."""
    store = any_store.store
    canonical = barcode_canonicalizer(store)
    mixed = "a" + ACTIVE.barcode
    if canonical is None:
        assert any_store.kind != "koha-sql"
        return
    assert any_store.kind == "koha-sql"
    assert canonical(mixed) == mixed.upper() and canonical(canonical(mixed)) == canonical(mixed)


async def test_is_a_store_and_tells_the_truth_about_itself(any_store: Opened) -> None:
    store = any_store.store
    assert isinstance(store, Store)
    caps = store.capabilities
    assert Capability.VERIFY in caps
    assert (Capability.BY_EMAIL in caps) == isinstance(store, SearchableStore)
    assert (Capability.ADMIN in caps) == isinstance(store, WritableStore)
    assert (Capability.RESET_TOKENS in caps) == isinstance(store, TokenStore)
    health = await store.health()
    assert health.ok, health.detail


async def test_lookup_maps_the_record(any_store: Opened) -> None:
    store = any_store.store
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    assert patron.barcode == ACTIVE.barcode
    assert patron.name == ACTIVE.name
    assert patron.email == ACTIVE.email
    assert patron.category == ACTIVE.category
    assert patron.expires == ACTIVE.expires
    assert patron.blocked is False
    assert patron.fines == Decimal("0.00")
    assert patron.record_id
    assert await store.lookup(UNKNOWN) is None


async def test_lookup_maps_standing(any_store: Opened) -> None:
    store = any_store.store
    expired = await store.lookup(EXPIRED.barcode)
    assert expired is not None and expired.is_expired(dt.date.today())
    blocked = await store.lookup(BLOCKED.barcode)
    assert blocked is not None and blocked.blocked and blocked.blocked_reason
    fines = await store.lookup(FINES.barcode)
    assert fines is not None and fines.fines == FINES.fines


async def test_verify_right_wrong_and_unknown(any_store: Opened, hasher: CountingHasher) -> None:
    store = any_store.store
    right = await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert right.pin_ok and right.patron is not None
    assert right.patron.barcode == ACTIVE.barcode
    wrong = await store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.patron is not None
    before = hasher.kdf_runs
    unknown = await store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert unknown.patron is None and not unknown.pin_ok
    assert hasher.kdf_runs == before + 1, "an unknown card must cost one (dummy) KDF run"


async def test_a_card_without_a_pin_matches_nothing_at_full_cost(
    any_store: Opened, hasher: CountingHasher
) -> None:
    before = hasher.kdf_runs
    result = await any_store.store.verify_pin(NO_PIN.barcode, Secret(""))
    assert result.patron is not None and not result.pin_ok
    result = await any_store.store.verify_pin(NO_PIN.barcode, Secret(DEMO_PIN))
    assert not result.pin_ok
    assert hasher.kdf_runs == before + 2


async def test_hostile_barcodes_are_only_data(any_store: Opened) -> None:
    """Barcodes are bound parameters: quote characters find nothing and break nothing."""
    store = any_store.store
    for barcode in ("' OR '1'='1", '"; DROP TABLE patrons; --', "29000000000011' --", "%", "_"):
        assert await store.lookup(barcode) is None
        assert (await store.verify_pin(barcode, Secret(DEMO_PIN))).patron is None
    assert await store.lookup(ACTIVE.barcode) is not None


async def test_lookup_by_email_and_record_id(any_store: Opened) -> None:
    store = any_store.store
    assert isinstance(store, SearchableStore)
    found = await store.lookup_by_email("FAMILY@example.ORG")
    assert sorted(p.barcode for p in found) == sorted([EXPIRED.barcode, BLOCKED.barcode])
    assert await store.lookup_by_email("nobody@example.org") == []
    patron = await store.lookup(FINES.barcode)
    assert patron is not None
    again = await store.lookup_by_record_id(patron.record_id)
    assert again is not None and again.barcode == FINES.barcode
    assert await store.lookup_by_record_id("999999999") is None


async def test_change_pin_is_refused_unless_capable(any_store: Opened) -> None:
    store = any_store.store
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    if Capability.CHANGE_PIN in store.capabilities:
        return  # the writable contract below covers it
    with pytest.raises(NotSupported):
        await store.change_pin(patron, Secret(NEW_PIN))
    assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok


# -- writable contract: the stores the bridge owns ----------------------------------------------


async def test_change_pin_is_durable(
    writable: Opened, hasher: CountingHasher, tmp_path: Path
) -> None:
    store = writable.store
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    await store.change_pin(patron, Secret(NEW_PIN))
    assert (await store.verify_pin(ACTIVE.barcode, Secret(NEW_PIN))).pin_ok
    assert not (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    # Durable: a second, independent store over the same database sees the new PIN.
    if writable.kind == "postgres":
        from tests.plugins.conftest import open_plugin, pg_settings

        other = await open_plugin("postgres", pg_settings(writable.dbname), hasher, tmp_path)
    else:
        from tests.plugins.conftest import open_plugin

        other = await open_plugin("sqlite", {"path": str(tmp_path / "p.db")}, hasher, tmp_path)
    try:
        assert (await other.verify_pin(ACTIVE.barcode, Secret(NEW_PIN))).pin_ok
    finally:
        await other.aclose()


async def test_change_pin_of_a_vanished_card_fails(writable: Opened) -> None:
    ghost = Patron(barcode=UNKNOWN, record_id="ghost")
    with pytest.raises(Exception, match=UNKNOWN):
        await writable.store.change_pin(ghost, Secret(NEW_PIN))


async def test_set_blocked_and_unblock(writable: Opened) -> None:
    store = writable.store
    assert isinstance(store, WritableStore)
    patron = await store.set_blocked(ACTIVE.barcode, "returned no books since 1999")
    assert patron.blocked and patron.blocked_reason == "returned no books since 1999"
    looked = await store.lookup(ACTIVE.barcode)
    assert looked is not None and looked.blocked
    patron = await store.set_blocked(ACTIVE.barcode, None)
    assert not patron.blocked and patron.blocked_reason is None
    with pytest.raises(LookupError):
        await store.set_blocked(UNKNOWN, "x")


async def test_add_patron_refuses_a_duplicate_unless_replacing(writable: Opened) -> None:
    store = writable.store
    assert isinstance(store, WritableStore)
    new = NewPatron(Patron(barcode="29000000000099", record_id="rec-99", name="New, Nia"))
    await store.add_patron(NewPatron(new.patron, pin=Secret(OTHER_PIN)))
    with pytest.raises(ValueError, match="already exists"):
        await store.add_patron(new)
    await store.add_patron(
        NewPatron(Patron(barcode="29000000000099", record_id="rec-99", name="New, Noa")),
        replace=True,
    )
    patron = await store.lookup("29000000000099")
    assert patron is not None and patron.name == "New, Noa"


async def test_add_patrons_counts_and_iterates(writable: Opened) -> None:
    store = writable.store
    assert isinstance(store, WritableStore)
    before = await store.count()
    batch = [
        NewPatron(
            Patron(barcode=f"2910000000{i:04d}", record_id=f"bulk-{i}", name=f"Bulk, No{i}"),
            pin=Secret(OTHER_PIN) if i % 100 == 0 else None,
            pin_hash=None,
        )
        for i in range(1200)
    ]
    assert await store.add_patrons(batch) == 1200
    assert await store.count() == before + 1200
    # Importing the same rows again replaces them (an export re-run), it does not duplicate.
    assert await store.add_patrons(batch[:10]) == 10
    assert await store.count() == before + 1200
    seen = [p.barcode async for p in store.iter_patrons()]
    assert len(seen) == before + 1200 and seen == sorted(seen)
    assert (await store.verify_pin("29100000000100", Secret(OTHER_PIN))).pin_ok


async def test_tokens_are_single_use_and_expire(writable: Opened) -> None:
    store = writable.store
    assert isinstance(store, TokenStore)
    now = dt.datetime.now(dt.UTC)
    first = hashlib.sha256(b"token one").digest()
    second = hashlib.sha256(b"token two").digest()
    await store.put_token(first, ACTIVE.barcode, now + dt.timedelta(minutes=30))
    assert await store.peek_token(first, now) == ACTIVE.barcode
    assert await store.peek_token(first, now) == ACTIVE.barcode  # peeking does not use it
    assert await store.take_token(first, now) == ACTIVE.barcode
    assert await store.take_token(first, now) is None  # single use
    assert await store.peek_token(first, now) is None
    # Expiry, and a new token voids the older ones for the card.
    third = hashlib.sha256(b"token three").digest()
    await store.put_token(third, FINES.barcode, now + dt.timedelta(minutes=30))
    await store.put_token(second, FINES.barcode, now + dt.timedelta(minutes=30))
    assert await store.peek_token(third, now) is None
    assert await store.take_token(second, now + dt.timedelta(minutes=31)) is None
    assert await store.take_token(second, now) == FINES.barcode
    assert await store.take_token(hashlib.sha256(b"never issued").digest(), now) is None


async def test_one_time_pin_is_marked_hashed_and_cleared_by_a_change(writable: Opened) -> None:
    """A one-time PIN from the desk: hashed like any PIN, reported with the time it was set
    (only when it matched), and the next PIN change makes it an ordinary PIN again."""
    from bridge.core.store import OneTimePinStore

    store = writable.store
    assert isinstance(store, OneTimePinStore)
    assert Capability.ONE_TIME_PIN in store.capabilities
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    await store.set_one_time_pin(patron, Secret(OTHER_PIN))
    right = await store.verify_pin(ACTIVE.barcode, Secret(OTHER_PIN))
    assert right.pin_ok and right.one_time_since is not None
    assert before <= right.one_time_since <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    wrong = await store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.one_time_since is None
    assert not (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    await store.change_pin(patron, Secret(NEW_PIN))
    changed = await store.verify_pin(ACTIVE.barcode, Secret(NEW_PIN))
    assert changed.pin_ok and changed.one_time_since is None
