"""folio against the FOLIO double, served for real on loopback.

Right, wrong, unknown, expired, blocked (manual and automated), fines, token expiry mid-run,
401 then a new login, 429, 500, slow, refused, malformed, hostile barcodes (CQL and URL
escaping). The double's answers are checked against our schemas of FOLIO's RAMLs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.core.secret import Secret
from bridge.core.store import Capability, StoreUnavailable
from plugins.folio import cql_string
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.plugins.conftest import authenticator, ctx
from tests.plugins.ils_http.conftest import open_kind
from tests.plugins.ils_http.folio_double import GROUPS, FolioDouble, FolioUser, cql_filter
from tests.plugins.ils_http.serve import Served
from tests.plugins.ils_http.test_connector_failures import BY_KIND
from tests.plugins.seed import ACTIVE, FINES, NO_PIN, UNKNOWN

Folio = tuple[FolioDouble, Served]


open_folio = functools.partial(open_kind, "folio")


def new_user(barcode: str, **more: Any) -> FolioUser:
    return FolioUser(str(uuid.uuid4()), barcode, "Odd", "Otto", DEMO_PIN, **more)


# -- outcomes -----------------------------------------------------------------------------------
async def test_right_pin_reads_the_record(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    result = await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.record_id == double.by_barcode(ACTIVE.barcode).id
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.expires == ACTIVE.expires
    assert not patron.blocked and patron.fines == Decimal("0.00")
    double.assert_no_pin_in_urls()


async def test_wrong_pin_and_no_pin(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    wrong = await folio_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.patron.record_id == double.by_barcode(ACTIVE.barcode).id
    assert double.count("/patron-pin/verify") == 1
    assert double.count("/manualblocks") == 0  # no standing read after a wrong PIN
    nopin = await folio_store.verify_pin(NO_PIN.barcode, Secret(DEMO_PIN))
    assert not nopin.pin_ok and nopin.patron is not None


async def test_unknown_card_never_reaches_the_pin_check(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    result = await folio_store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert result.patron is None and not result.pin_ok
    assert double.count("/patron-pin/verify") == 0


async def test_automated_blocks_inactive_and_expired_manual_blocks(
    folio: Folio, folio_store: Any
) -> None:
    double, _ = folio
    auto = double.add(new_user("AUTO1"))
    double.automated[auto.id] = [
        {
            "patronBlockConditionId": str(uuid.uuid4()),
            "blockBorrowing": True,
            "blockRenewals": False,
            "blockRequests": False,
            "message": "Maximum number of overdue items reached",
        }
    ]
    renew_only = double.add(new_user("AUTO2"))
    double.automated[renew_only.id] = [
        {"blockBorrowing": False, "blockRenewals": True, "blockRequests": False, "message": "r"}
    ]
    lapsed = double.add(new_user("MANUAL1"))
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    double.manual[lapsed.id] = [
        {
            "desc": "old",
            "borrowing": True,
            "userId": lapsed.id,
            "expirationDate": yesterday.isoformat(),
        }
    ]
    double.add(new_user("INACTIVE1", active=False, expires=dt.date.today() + dt.timedelta(30)))
    got = await folio_store.verify_pin("AUTO1", Secret(DEMO_PIN))
    assert got.patron.blocked_reason == "Maximum number of overdue items reached"
    assert not (await folio_store.verify_pin("AUTO2", Secret(DEMO_PIN))).patron.blocked
    assert not (await folio_store.verify_pin("MANUAL1", Secret(DEMO_PIN))).patron.blocked
    inactive = await folio_store.verify_pin("INACTIVE1", Secret(DEMO_PIN))
    assert inactive.patron.blocked_reason == "inactive in FOLIO"


async def test_identifier_modes(folio: Folio, tmp_path: Path) -> None:
    double, _ = folio
    double.by_barcode(ACTIVE.barcode).external = "EXT-42"
    by_name = await open_folio(folio, tmp_path, identifier="username")
    either = await open_folio(folio, tmp_path, identifier="either")
    external = await open_folio(folio, tmp_path, identifier="externalSystemId")
    try:
        assert (await by_name.verify_pin("user1", Secret(DEMO_PIN))).pin_ok
        assert (await by_name.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).patron is None
        assert (await either.verify_pin("user1", Secret(DEMO_PIN))).pin_ok
        assert (await either.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        assert (await external.verify_pin("EXT-42", Secret(DEMO_PIN))).pin_ok
    finally:
        for store in (by_name, either, external):
            await store.aclose()


# -- login and tokens ---------------------------------------------------------------------------
async def test_one_login_serves_many_calls(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    results = await asyncio.gather(
        *(folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN)) for _ in range(6))
    )
    assert all(r.pin_ok for r in results) and double.logins == 1


async def test_token_expiry_mid_run_logs_in_again(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    double.expire_tokens()
    assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.logins == 2


async def test_token_lifetime_from_the_cookie(folio: Folio, tmp_path: Path) -> None:
    double, _ = folio
    double.token_lifetime = 60
    store = await open_folio(folio, tmp_path)
    now = [0.0]
    store.http.monotonic = lambda: now[0]
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        now[0] = 50.0  # inside Max-Age less the renewal margin (6 s): same token
        assert (await store.lookup(ACTIVE.barcode)) is not None
        assert double.logins == 1
        now[0] = 55.0  # inside the margin: a fresh login before FOLIO would refuse
        assert (await store.lookup(FINES.barcode)) is not None
        assert double.logins == 2
    finally:
        await store.aclose()


async def test_legacy_login(folio: Folio, tmp_path: Path) -> None:
    double, _ = folio
    store = await open_folio(folio, tmp_path, login="legacy")
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        double.expire_tokens()
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        assert double.count("/authn/login") == 2
    finally:
        await store.aclose()


async def test_401_then_login_then_success(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    double.fail("pin-verify", "401")
    assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.logins == 2 and double.count("/patron-pin/verify") == 3
    double.fail("users", "401", "401")
    with pytest.raises(StoreUnavailable, match="credentials"):
        await folio_store.lookup(ACTIVE.barcode)


async def test_bad_service_password(folio: Folio, tmp_path: Path) -> None:
    store = await open_folio(folio, tmp_path, password="not-the-password")
    try:
        with pytest.raises(StoreUnavailable, match="login refused") as info:
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        assert "not-the-password" not in str(info.value)
        assert not (await store.health()).ok
    finally:
        await store.aclose()


# -- failures -----------------------------------------------------------------------------------


# -- escaping -----------------------------------------------------------------------------------


def test_cql_strings_parse_back_to_the_value() -> None:
    for value in BY_KIND["folio"].hostile:
        terms = cql_filter(f"barcode=={cql_string(value)}")
        assert terms is not None and len(terms) == 1
        assert terms[0][1].fullmatch(value)
        assert not terms[0][1].fullmatch(value + "x")


# -- lookups, PIN change, health ----------------------------------------------------------------
async def test_status_is_cached_per_record(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    for _ in range(3):
        assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.count("/manualblocks") == 1 and double.count("/patron-pin/verify") == 3
    assert double.count(f"/groups/{GROUPS['ADULT']}") == 1


async def test_user_is_kept_after_a_good_pin(
    folio: Folio, folio_store: Any, tmp_path: Path
) -> None:
    double, _ = folio
    for _ in range(3):
        assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.count("/users") == 1 and double.count("/patron-pin/verify") == 3
    # Every PIN still goes to FOLIO; a wrong one drops the user, so the card is looked up again.
    assert not (await folio_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))).pin_ok
    assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.count("/users") == 2 and double.count("/patron-pin/verify") == 5
    never = await open_folio(folio, tmp_path, user_cache_seconds=0)
    try:
        for _ in range(2):
            assert (await never.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    finally:
        await never.aclose()
    assert double.count("/users") == 4
    double.assert_no_pin_in_urls()


async def test_change_pin(folio: Folio, folio_store: Any) -> None:
    assert Capability.CHANGE_PIN in folio_store.capabilities
    patron = await folio_store.lookup(ACTIVE.barcode)
    await folio_store.change_pin(patron, Secret(NEW_PIN))
    assert (await folio_store.verify_pin(ACTIVE.barcode, Secret(NEW_PIN))).pin_ok
    assert not (await folio_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok


async def test_pin_change_through_the_core(folio_store: Any) -> None:
    auth = authenticator(folio_store)
    result = await auth.change_pin(
        ACTIVE.barcode, Secret(DEMO_PIN), Secret(NEW_PIN), Secret(NEW_PIN), ctx()
    )
    assert result.ok, result.reason
    assert (await auth.authenticate(ACTIVE.barcode, Secret(NEW_PIN), ctx())).accepted


async def test_lookups(folio: Folio, folio_store: Any) -> None:
    double, _ = folio
    assert await folio_store.lookup_by_email("example.org") == []
    uid = double.by_barcode(FINES.barcode).id
    assert (await folio_store.lookup_by_record_id(uid)).fines == Decimal("25.00")
    assert await folio_store.lookup_by_record_id(str(uuid.uuid4())) is None
    assert await folio_store.lookup_by_record_id("../users") is None
    assert (await folio_store.health()).ok
