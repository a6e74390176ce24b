"""symphony against the ILSWS double, served for real on loopback.

The PIN check carries no staff session (so its 401 can only mean the patron's credentials and
is never retried); reads use the staff session, renewed once on a 401.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins.ils_http.conftest import open_kind
from tests.plugins.ils_http.serve import Served
from tests.plugins.ils_http.symphony_double import SymphonyDouble
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, FINES, UNKNOWN

Symphony = tuple[SymphonyDouble, Served]


open_symphony = functools.partial(open_kind, "symphony")


async def test_right_pin_reads_the_record(symphony: Symphony, symphony_store: Any) -> None:
    double, _ = symphony
    result = await symphony_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.record_id == double.by_barcode(ACTIVE.barcode).key
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.home_library == "MAIN"
    assert patron.expires == ACTIVE.expires and not patron.blocked
    double.assert_no_pin_in_urls()


async def test_wrong_pin_is_not_retried(symphony: Symphony, symphony_store: Any) -> None:
    double, _ = symphony
    wrong = await symphony_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.patron.record_id
    assert double.count("/user/patron/authenticate") == 1  # the 401 was not retried


async def test_without_tell_unknown(symphony: Symphony, tmp_path: Path) -> None:
    store = await open_symphony(symphony, tmp_path, tell_unknown=False)
    try:
        result = await store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
        assert result.patron is not None and not result.pin_ok
    finally:
        await store.aclose()


async def test_staff_session_reused_and_renewed_once(
    symphony: Symphony, symphony_store: Any
) -> None:
    double, _ = symphony
    for barcode in (ACTIVE.barcode, FINES.barcode, EXPIRED.barcode):
        assert await symphony_store.lookup(barcode) is not None
    assert double.logins == 1
    double.expire_sessions()  # the session timed out mid-run
    assert (await symphony_store.verify_pin(BLOCKED.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.logins == 2
    assert double.count("/user/patron/authenticate") == 1


async def test_bad_client_id_or_staff_password(symphony: Symphony, tmp_path: Path) -> None:
    store = await open_symphony(symphony, tmp_path, password="wrong-staff-password")
    try:
        with pytest.raises(StoreUnavailable, match="staff login refused") as info:
            await store.lookup(ACTIVE.barcode)
        assert "wrong-staff-password" not in str(info.value)
        assert not (await store.health()).ok
    finally:
        await store.aclose()
    store = await open_symphony(symphony, tmp_path, client_id="WrongClient")
    try:
        assert not (await store.health()).ok  # what shows a wrong client id
    finally:
        await store.aclose()


async def test_status_is_cached_per_record(symphony: Symphony, symphony_store: Any) -> None:
    double, _ = symphony
    for _ in range(3):
        assert (await symphony_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    key = double.by_barcode(ACTIVE.barcode).key
    assert double.count(f"/user/patron/key/{key}") == 1
    assert (await symphony_store.health()).ok
