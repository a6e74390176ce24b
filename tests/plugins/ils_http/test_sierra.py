"""sierra against the Sierra double, served for real on loopback.

Right, wrong, unknown, expired, blocked, fines, token expiry mid-run, 401 then renewal, 429,
500, slow, refused, malformed, hostile barcodes. The double's answers are checked against our
schemas of Sierra's published models.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bridge.core.secret import Secret
from bridge.core.store import Capability, StoreUnavailable
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.plugins.conftest import authenticator, ctx
from tests.plugins.ils_http.conftest import open_kind
from tests.plugins.ils_http.serve import Served
from tests.plugins.ils_http.sierra_double import SierraDouble, SierraPatron
from tests.plugins.seed import ACTIVE, FINES, UNKNOWN

Sierra = tuple[SierraDouble, Served]


open_sierra = functools.partial(open_kind, "sierra")


async def test_right_pin_reads_the_record(sierra: Sierra, sierra_store: Any) -> None:
    double, _ = sierra
    result = await sierra_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.record_id == str(double.by_barcode(ACTIVE.barcode).id)
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.home_library == "main"
    assert patron.expires == ACTIVE.expires and not patron.blocked
    double.assert_no_pin_in_urls()


async def test_wrong_pin_and_unknown(sierra: Sierra, sierra_store: Any, tmp_path: Path) -> None:
    double, _ = sierra
    wrong = await sierra_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.patron is not None
    assert double.count("/patrons/validate") == 1
    unknown = await sierra_store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert unknown.patron is None and not unknown.pin_ok
    plain = await open_sierra(sierra, tmp_path, tell_unknown=False)
    try:
        assert (await plain.verify_pin(UNKNOWN, Secret(DEMO_PIN))).patron is not None
    finally:
        await plain.aclose()


async def test_case_insensitive_pins_by_default(sierra: Sierra, tmp_path: Path) -> None:
    double, _ = sierra
    double.add(SierraPatron(2_000_001, "ALPHA1", "Alpha, Al", "AbCd"))
    loose = await open_sierra(sierra, tmp_path)
    strict = await open_sierra(sierra, tmp_path, case_sensitive=True)
    try:
        assert (await loose.verify_pin("ALPHA1", Secret("abcd"))).pin_ok
        assert not (await strict.verify_pin("ALPHA1", Secret("abcd"))).pin_ok
    finally:
        await loose.aclose()
        await strict.aclose()


async def test_deleted_record_is_unknown(sierra: Sierra, sierra_store: Any) -> None:
    double, _ = sierra
    double.add(SierraPatron(2_000_002, "GONE1", "Gone, Gil", DEMO_PIN, deleted=True))
    assert await sierra_store.lookup("GONE1") is None
    assert await sierra_store.lookup_by_record_id("2000002") is None


async def test_token_reuse_expiry_and_401(sierra: Sierra, sierra_store: Any) -> None:
    double, _ = sierra
    results = await asyncio.gather(
        *(sierra_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN)) for _ in range(5))
    )
    assert all(r.pin_ok for r in results) and double.tokens_issued == 1
    double.expire_tokens()
    assert (await sierra_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.tokens_issued == 2
    double.fail("validate", "401")
    assert (await sierra_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.tokens_issued == 3
    double.fail("validate", "401", "401")
    with pytest.raises(StoreUnavailable, match="credentials"):
        await sierra_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))


async def test_bad_key(sierra: Sierra, tmp_path: Path) -> None:
    store = await open_sierra(sierra, tmp_path, secret="wrong-secret")
    try:
        with pytest.raises(StoreUnavailable, match="token refused") as info:
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        assert "wrong-secret" not in str(info.value)
        assert not (await store.health()).ok
    finally:
        await store.aclose()


async def test_status_is_cached_per_barcode(sierra: Sierra, sierra_store: Any) -> None:
    double, _ = sierra
    for _ in range(3):
        assert (await sierra_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.count("/patrons/find") == 1 and double.count("/patrons/validate") == 3


async def test_change_pin(sierra: Sierra, sierra_store: Any) -> None:
    assert Capability.CHANGE_PIN in sierra_store.capabilities
    patron = await sierra_store.lookup(ACTIVE.barcode)
    await sierra_store.change_pin(patron, Secret(NEW_PIN))
    assert (await sierra_store.verify_pin(ACTIVE.barcode, Secret(NEW_PIN))).pin_ok
    with pytest.raises(StoreUnavailable, match="PIN rules"):
        await sierra_store.change_pin(patron, Secret("1234"))
    with pytest.raises(StoreUnavailable, match="no longer"):
        await sierra_store.change_pin(replace(patron, record_id="42"), Secret(NEW_PIN))
    auth = authenticator(sierra_store)
    result = await auth.change_pin(
        ACTIVE.barcode, Secret(NEW_PIN), Secret(DEMO_PIN), Secret(DEMO_PIN), ctx()
    )
    assert result.ok, result.reason


async def test_lookups(sierra: Sierra, sierra_store: Any) -> None:
    double, _ = sierra
    found = await sierra_store.lookup_by_email("ADA@example.org")
    assert [p.barcode for p in found] == [ACTIVE.barcode]
    assert await sierra_store.lookup_by_email("nobody@example.org") == []
    with pytest.raises(StoreUnavailable, match="share"):
        await sierra_store.lookup_by_email("family@example.org")  # two patrons: Sierra's 409
    record = str(double.by_barcode(FINES.barcode).id)
    assert (await sierra_store.lookup_by_record_id(record)).barcode == FINES.barcode
    assert await sierra_store.lookup_by_record_id("999999999") is None
    assert await sierra_store.lookup_by_record_id("../1") is None
    assert (await sierra_store.health()).ok
