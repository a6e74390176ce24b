"""alma against the Alma double, served for real on loopback.

Right, wrong, unknown (Alma tells them apart), expired, blocked, fines, the API key in a header
(never the PIN in the URL), 429 with Retry-After, 500, slow, refused, malformed, hostile
identifiers in the path. Alma has no tokens to expire: the key is sent on every call.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from plugins.alma import alma_date
from tests.pins import ALL, DEMO_PIN, WRONG_PIN
from tests.plugins.ils_http.alma_double import AlmaDouble, AlmaUser
from tests.plugins.ils_http.conftest import open_kind
from tests.plugins.ils_http.serve import Served
from tests.plugins.seed import ACTIVE, BLOCKED, UNKNOWN

Alma = tuple[AlmaDouble, Served]


open_alma = functools.partial(open_kind, "alma")


def secrets_stay_out_of_urls(double: AlmaDouble, *, key_in_url: bool = False) -> None:
    for _method, path, _body, meta in double.requests:
        seen = unquote_plus(path + "?" + meta["query"])
        for pin in ALL:
            assert pin not in seen
        assert (double.key in seen) is key_in_url


async def test_right_pin_reads_the_record(alma: Alma, alma_store: Any) -> None:
    double, _ = alma
    result = await alma_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.record_id == double.by_barcode(ACTIVE.barcode).primary_id
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.expires == ACTIVE.expires
    assert not patron.blocked and patron.fines == Decimal("0.00")
    secrets_stay_out_of_urls(double)


async def test_wrong_and_unknown_are_told_apart(alma: Alma, alma_store: Any) -> None:
    double, _ = alma
    wrong = await alma_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.patron is not None
    unknown = await alma_store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert unknown.patron is None and not unknown.pin_ok
    assert double.calls("POST") == 2 and double.calls("GET") == 0  # one call each


async def test_inactive_user_is_blocked(alma: Alma, alma_store: Any) -> None:
    double, _ = alma
    double.add(AlmaUser("gone@example.edu", "INACTIVE1", "Gone", "Gil", DEMO_PIN, active=False))
    inactive = await alma_store.verify_pin("INACTIVE1", Secret(DEMO_PIN))
    assert inactive.patron.blocked_reason == "inactive in Alma"


async def test_ignored_block_types(alma: Alma, tmp_path: Path) -> None:
    store = await open_alma(alma, tmp_path, ignored_blocks=["GENERAL"])
    try:
        assert not (await store.lookup(BLOCKED.barcode)).blocked
    finally:
        await store.aclose()


async def test_key_in_the_query_when_asked(alma: Alma, tmp_path: Path) -> None:
    double, _ = alma
    store = await open_alma(alma, tmp_path, api_key_in="query")
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        secrets_stay_out_of_urls(double, key_in_url=True)
    finally:
        await store.aclose()


async def test_bad_key_is_unavailable(alma: Alma, tmp_path: Path) -> None:
    store = await open_alma(alma, tmp_path, api_key="l8xx-not-the-key")
    try:
        with pytest.raises(StoreUnavailable, match="API key") as info:
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        assert "not-the-key" not in str(info.value)
        assert not (await store.health()).ok
    finally:
        await store.aclose()


async def test_status_is_cached_and_health(alma: Alma, alma_store: Any) -> None:
    double, _ = alma
    for _ in range(3):
        assert (await alma_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.calls("GET") == 1 and double.calls("POST") == 3
    assert (await alma_store.health()).ok


def test_alma_dates() -> None:
    assert alma_date("2027-12-31Z") == dt.date(2027, 12, 31)
    assert alma_date("2027-12-31") == dt.date(2027, 12, 31)
    assert alma_date(None) is None
    for bad in ("soon", "2027-13-01Z", "31/12/2027"):
        with pytest.raises(StoreUnavailable):
            alma_date(bad)


@given(st.text(max_size=30))
def test_any_date_text_parses_or_is_unavailable(value: str) -> None:
    with contextlib.suppress(StoreUnavailable):
        alma_date(value)
