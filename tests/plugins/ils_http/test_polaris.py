"""polaris against the Polaris double, served for real on loopback: every request signed
(HMAC-SHA1 over method, the exact URL, the date and the secret) and checked by the double."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from plugins.polaris import http_date, parse_date, signature
from tests.pins import ALL, DEMO_PIN, WRONG_PIN
from tests.plugins.ils_http.conftest import open_kind
from tests.plugins.ils_http.polaris_double import PolarisDouble
from tests.plugins.ils_http.serve import Served
from tests.plugins.seed import ACTIVE, FINES, UNKNOWN

Polaris = tuple[PolarisDouble, Served]


open_polaris = functools.partial(open_kind, "polaris")


def no_pin_anywhere_but_the_auth_body(double: PolarisDouble) -> None:
    for _method, path, body, meta in double.requests:
        seen = unquote_plus(path + "?" + meta["query"])
        for pin in ALL:
            assert pin not in seen
        if not path.endswith("/authenticator/patron"):
            assert not any(pin.encode() in body for pin in ALL)


# -- the signer ---------------------------------------------------------------------------------
def test_signature_is_the_documented_concatenation() -> None:
    url = "https://polaris.example.org/PAPIService/REST/public/v1/1033/100/1/patron/2100/basicdata"
    date = "Wed, 17 Oct 2012 22:23:32 GMT"
    raw = hmac.new(b"key", f"GET{url}{date}secret".encode(), hashlib.sha1).digest()
    assert signature("key", "GET", url, date, "secret") == base64.b64encode(raw).decode()
    assert signature("key", "GET", url, date) != signature("key", "GET", url, date, "secret")
    assert http_date(1350512612) == date


@pytest.mark.parametrize(
    ("value", "day"),
    [
        ("/Date(1360051200000-0800)/", dt.date(2013, 2, 5)),  # 08:00 UTC = midnight at -8
        ("/Date(1360051200000-0900)/", dt.date(2013, 2, 4)),  # 23:00 the day before
        ("/Date(1360051200000+0000)/", dt.date(2013, 2, 5)),
        ("/Date(1360051200000)/", dt.date(2013, 2, 5)),
        ("2022-01-04T14:58:32-04:00", dt.date(2022, 1, 4)),
        (None, None),
    ],
)
def test_papi_dates(value: str | None, day: dt.date | None) -> None:
    assert parse_date(value) == day


@pytest.mark.parametrize("value", ["/Date(abc)/", "/Date(99999999999999999999)/", "soon"])
def test_bad_papi_dates_are_unavailable(value: str) -> None:
    with pytest.raises(StoreUnavailable):
        parse_date(value)


@given(st.text(max_size=40))
def test_any_date_text_parses_or_is_unavailable(value: str) -> None:
    with contextlib.suppress(StoreUnavailable):
        parse_date(value)


# -- outcomes -----------------------------------------------------------------------------------
async def test_right_pin_reads_the_record(polaris: Polaris, polaris_store: Any) -> None:
    double, _ = polaris
    result = await polaris_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.record_id == str(double.by_barcode(ACTIVE.barcode).patron_id)
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.home_library == "Main Library"
    assert patron.expires == ACTIVE.expires and not patron.blocked
    assert double.staff_logins == 0  # a good PIN needs no staff session
    no_pin_anywhere_but_the_auth_body(double)


async def test_wrong_pin_is_sent_once_and_polaris_locks(
    polaris: Polaris, polaris_store: Any
) -> None:
    double, _ = polaris
    for _ in range(3):
        wrong = await polaris_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
        assert not wrong.pin_ok and wrong.patron.record_id
    assert double.count("/authenticator/patron") == 3
    locked = await polaris_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert not locked.pin_ok  # Polaris's own lock: the right PIN is refused too


async def test_without_staff_credentials(polaris: Polaris, tmp_path: Path) -> None:
    store = await open_polaris(polaris, tmp_path, staff_user="", password="")
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        unknown = await store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
        assert unknown.patron is not None and not unknown.pin_ok  # cannot tell: "wrong PIN"
        with pytest.raises(StoreUnavailable, match="staff"):
            await store.lookup(ACTIVE.barcode)
    finally:
        await store.aclose()


# -- sessions and signatures --------------------------------------------------------------------
async def test_staff_session_is_reused_and_renewed_once(
    polaris: Polaris, polaris_store: Any
) -> None:
    double, _ = polaris
    for _ in range(3):
        assert await polaris_store.lookup(ACTIVE.barcode) is not None
    assert double.staff_logins == 1
    double.revoke_staff_tokens()  # the staff AccessSecret expired mid-run
    assert await polaris_store.lookup(FINES.barcode) is not None
    assert double.staff_logins == 2


async def test_bad_key_or_clock_is_unavailable_never_a_wrong_pin(
    polaris: Polaris, tmp_path: Path
) -> None:
    double, _ = polaris
    store = await open_polaris(polaris, tmp_path, api_key="not-the-key")
    try:
        with pytest.raises(StoreUnavailable, match="signature") as info:
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
        assert "not-the-key" not in str(info.value)
    finally:
        await store.aclose()
    double.skew_seconds = 3600  # the bridge's clock an hour behind Polaris's
    store = await open_polaris(polaris, tmp_path)
    try:
        with pytest.raises(StoreUnavailable, match="signature"):
            await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    finally:
        await store.aclose()
    assert double.by_barcode(ACTIVE.barcode).failures == 0  # never reached the patron


async def test_date_header_variant(polaris: Polaris, tmp_path: Path) -> None:
    store = await open_polaris(polaris, tmp_path, date_header="Date")
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    finally:
        await store.aclose()


async def test_bad_staff_password(polaris: Polaris, tmp_path: Path) -> None:
    store = await open_polaris(polaris, tmp_path, password="wrong-staff-password")
    try:
        with pytest.raises(StoreUnavailable, match="staff login refused") as info:
            await store.lookup(ACTIVE.barcode)
        assert "wrong-staff-password" not in str(info.value)
    finally:
        await store.aclose()


# -- failures -----------------------------------------------------------------------------------


async def test_status_is_cached_per_barcode(polaris: Polaris, polaris_store: Any) -> None:
    double, _ = polaris
    for _ in range(3):
        assert (await polaris_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.count("/circulationblocks") == 1 and double.count("/authenticator/patron") == 3


async def test_health(polaris_store: Any) -> None:
    assert (await polaris_store.health()).ok
