"""koha-rest against the Koha double, served for real on loopback.

Every scenario the connector must survive: right, wrong, unknown, expired, blocked, fines,
token expiry mid-run, 401 then renewal, 429, 500, slow, refused, malformed, hostile barcodes.
The double's answers are checked against our schema of Koha's contract by the fixture.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.core.patron import Outcome
from bridge.core.secret import Secret
from bridge.core.store import Capability, StoreUnavailable
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.plugins.conftest import CountingHasher, authenticator, ctx, open_plugin
from tests.plugins.ils_http.conftest import koha_settings, open_kind, schema_problems
from tests.plugins.ils_http.koha_double import SCHEMAS, KohaDouble, KohaPatron
from tests.plugins.ils_http.serve import Served
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, UNKNOWN

Koha = tuple[KohaDouble, Served]


open_koha = functools.partial(open_kind, "koha")


# -- outcomes -----------------------------------------------------------------------------------
async def test_right_pin_reads_the_record(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    result = await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.barcode == ACTIVE.barcode
    assert patron.record_id == str(double.by_card(ACTIVE.barcode).patron_id)
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.home_library == "MAIN"
    assert patron.expires == ACTIVE.expires and not patron.blocked
    assert patron.fines == Decimal("0.00")
    double.assert_no_pin_in_urls()


async def test_wrong_pin_is_counted_once_by_koha(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    result = await koha_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not result.pin_ok and result.patron is not None
    assert result.patron.record_id == str(double.by_card(ACTIVE.barcode).patron_id)
    assert double.by_card(ACTIVE.barcode).login_attempts == 1
    assert double.count("/auth/password/validation") == 1


async def test_unknown_card(koha: Koha, koha_store: Any, tmp_path: Path) -> None:
    result = await koha_store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert result.patron is None and not result.pin_ok
    # Without the follow-up lookup Koha's single answer is all there is: "wrong PIN".
    plain = await open_koha(koha, tmp_path, tell_unknown=False)
    try:
        result = await plain.verify_pin(UNKNOWN, Secret(DEMO_PIN))
        assert result.patron is not None and not result.pin_ok
    finally:
        await plain.aclose()


async def test_restricted_and_unconfirmed_address(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    double.add(KohaPatron(900, "RESTRICTED1", "Stop", "Sam", DEMO_PIN, restricted=True))
    double.add(KohaPatron(901, "GONE1", "Gone", "Gil", DEMO_PIN, incorrect_address=True))
    restricted = await koha_store.verify_pin("RESTRICTED1", Secret(DEMO_PIN))
    assert restricted.pin_ok and restricted.patron.blocked_reason == "restricted in Koha"
    gone = await koha_store.verify_pin("GONE1", Secret(DEMO_PIN))
    assert gone.pin_ok and gone.patron.blocked_reason == "address unconfirmed"


async def test_locked_account_is_refused_even_with_the_right_pin(
    koha: Koha, koha_store: Any
) -> None:
    double, _ = koha
    double.failed_login_attempts = 2
    for _ in range(2):
        assert not (await koha_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))).pin_ok
    assert not (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok


async def test_expired_password_is_a_blocked_patron(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    double.by_card(ACTIVE.barcode).password_expired = True
    result = await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok and result.patron.blocked
    assert "expired" in (result.patron.blocked_reason or "")


async def test_identifier_modes(koha: Koha, tmp_path: Path) -> None:
    double, _ = koha
    userid = double.by_card(ACTIVE.barcode).userid
    card_only = await open_koha(koha, tmp_path)
    by_user = await open_koha(koha, tmp_path, identifier="userid")
    either = await open_koha(koha, tmp_path, identifier="either")
    try:
        # Koha matches usernames first; a card-number library must not accept one.
        assert not (await card_only.verify_pin(userid, Secret(DEMO_PIN))).pin_ok
        assert (await by_user.verify_pin(userid, Secret(DEMO_PIN))).pin_ok
        assert not (await by_user.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        assert (await either.verify_pin(userid, Secret(DEMO_PIN))).pin_ok
        assert (await either.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        assert (await by_user.lookup(userid)).barcode == ACTIVE.barcode
    finally:
        for store in (card_only, by_user, either):
            await store.aclose()


# -- tokens -------------------------------------------------------------------------------------
async def test_one_token_serves_many_calls(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    for _ in range(5):
        assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.tokens_issued == 1


async def test_token_expiry_mid_run_renews_once(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    double.expire_tokens()  # Koha forgot every token (restart, expiry)
    assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.tokens_issued == 2
    assert double.by_card(ACTIVE.barcode).login_attempts == 0


async def test_short_lived_tokens_are_renewed_before_expiry(koha: Koha, tmp_path: Path) -> None:
    double, _ = koha
    double.token_lifetime = 1
    store = await open_koha(koha, tmp_path)
    now = [1000.0]
    store.http.monotonic = lambda: now[0]
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        now[0] += 5  # past the token's lifetime on the bridge's clock
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        assert double.tokens_issued == 2
    finally:
        await store.aclose()


async def test_401_then_renewal_then_success(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    double.fail("validation", "401")
    assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.tokens_issued == 2
    assert double.count("/auth/password/validation") == 3


async def test_401_twice_is_unavailable_not_a_wrong_pin(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    double.fail("validation", "401", "401")
    with pytest.raises(StoreUnavailable, match="credentials"):
        await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))


async def test_bad_client_secret_is_unavailable(koha: Koha, tmp_path: Path) -> None:
    store = await open_koha(koha, tmp_path, secret="not-the-secret")
    try:
        with pytest.raises(StoreUnavailable, match="token refused") as info:
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        assert "not-the-secret" not in str(info.value)
        assert not (await store.health()).ok
    finally:
        await store.aclose()


# -- failures -----------------------------------------------------------------------------------


async def test_slow_status_read_ends_at_the_deadline(koha: Koha, tmp_path: Path) -> None:
    double, _ = koha
    store = await open_koha(koha, tmp_path, request_timeout=0.5)
    try:
        double.fail("patron", "slow")
        with pytest.raises(StoreUnavailable, match="timed out"):
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        double.release.set()
    finally:
        await store.aclose()


async def test_breaker_opens_and_a_probe_closes_it(koha: Koha, tmp_path: Path) -> None:
    double, _ = koha
    store = await open_koha(koha, tmp_path, breaker_failures=2, breaker_reset=5.0)
    now = [100.0]
    store.http.monotonic = lambda: now[0]
    try:
        double.fail("validation", "500", "500")
        for _ in range(2):
            with pytest.raises(StoreUnavailable):
                await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        with pytest.raises(StoreUnavailable, match="circuit"):
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        now[0] += 6
        assert (await store.health()).ok  # the probe
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    finally:
        await store.aclose()


# -- escaping -----------------------------------------------------------------------------------


# -- lookups, PIN change, health ----------------------------------------------------------------
async def test_status_is_cached_per_record(koha: Koha, koha_store: Any) -> None:
    double, _ = koha
    for _ in range(3):
        assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    patron_id = double.by_card(ACTIVE.barcode).patron_id
    assert double.count(f"/patrons/{patron_id}") == 1
    assert double.count("/auth/password/validation") == 3  # the PIN check is never cached


async def test_change_pin(koha: Koha, koha_store: Any) -> None:
    assert Capability.CHANGE_PIN in koha_store.capabilities
    patron = await koha_store.lookup(ACTIVE.barcode)
    await koha_store.change_pin(patron, Secret(NEW_PIN))
    assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(NEW_PIN))).pin_ok
    assert not (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    with pytest.raises(StoreUnavailable, match="password rules") as info:
        await koha_store.change_pin(patron, Secret("12"))
    assert "12" not in str(info.value).replace("password rules", "")
    with pytest.raises(StoreUnavailable, match="no longer"):
        await koha_store.change_pin(replace(patron, record_id="424242"), Secret(NEW_PIN))


async def test_pin_change_through_the_core(koha_store: Any) -> None:
    from bridge.core.pin import PinPolicy

    auth = authenticator(koha_store)
    auth.pin_policy = PinPolicy()
    result = await auth.change_pin(
        ACTIVE.barcode, Secret(DEMO_PIN), Secret(NEW_PIN), Secret(NEW_PIN), ctx()
    )
    assert result.ok, result.reason
    decision = await auth.authenticate(ACTIVE.barcode, Secret(NEW_PIN), ctx())
    assert decision.outcome is Outcome.ACCEPTED


async def test_lookup_by_email_is_exact(koha: Koha, koha_store: Any) -> None:
    found = await koha_store.lookup_by_email("family@example.org")
    assert sorted(p.barcode for p in found) == sorted([EXPIRED.barcode, BLOCKED.barcode])
    assert await koha_store.lookup_by_email("example.org") == []  # Koha alone would "contain"
    assert await koha_store.lookup_by_record_id("abc") is None
    assert await koha_store.lookup_by_record_id("../101") is None


async def test_health(koha: Koha, koha_store: Any) -> None:
    health = await koha_store.health()
    assert health.ok, health.detail


async def test_expired_date_is_read_as_a_date(koha: Koha, koha_store: Any) -> None:
    patron = await koha_store.lookup(EXPIRED.barcode)
    assert patron.is_expired(dt.date.today())


async def test_concurrent_first_calls_fetch_one_token(koha: Koha, koha_store: Any) -> None:
    import asyncio

    double, _ = koha
    results = await asyncio.gather(
        *(koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN)) for _ in range(8))
    )
    assert all(r.pin_ok for r in results)
    assert double.tokens_issued == 1


# -- transport ----------------------------------------------------------------------------------
async def test_logins_reuse_one_connection(koha: Koha, koha_store: Any) -> None:
    _, served = koha
    for _ in range(10):
        assert (await koha_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert served.counter.connections == 1  # keep-alive: token, checks, reads on one socket


async def test_pool_size_caps_connections(koha: Koha, tmp_path: Path) -> None:
    import asyncio

    _, served = koha
    store = await open_koha(koha, tmp_path, pool_size=2)
    try:
        for _ in range(3):
            results = await asyncio.gather(*(store.lookup(ACTIVE.barcode) for _ in range(8)))
            assert all(r is not None for r in results)
        assert served.counter.connections <= 2
    finally:
        await store.aclose()


async def test_tls_with_the_configured_ca_file(tmp_path: Path) -> None:
    from bridge.tls import generate_self_signed

    cert, key = tmp_path / "ils.crt", tmp_path / "ils.key"
    generate_self_signed(cert, key, ["127.0.0.1"])
    double = KohaDouble()
    with Served(double.app(), tls=(str(cert), str(key))) as served:
        assert served.url.startswith("https://")
        store = await open_plugin(
            "koha-rest",
            koha_settings(double, served.url, ca_file="ils.crt"),  # relative to the config
            CountingHasher(),
            tmp_path,
        )
        untrusted = await open_plugin(
            "koha-rest", koha_settings(double, served.url), CountingHasher(), tmp_path
        )
        try:
            assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
            with pytest.raises(StoreUnavailable):  # the system CAs do not know this one
                await untrusted.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        finally:
            await store.aclose()
            await untrusted.aclose()
            double.release.set()
    assert not schema_problems(double.responses, SCHEMAS)
