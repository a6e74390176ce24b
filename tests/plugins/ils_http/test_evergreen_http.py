"""evergreen-http against the Evergreen double (OpenSRF gateway + IDL), served on loopback.

Right, wrong, unknown, expired, blocked, fines, inactive, barred, the staff session expiring
mid-run and renewed once, 429, 500, OpenSRF's own 500, slow, refused, malformed, hostile
barcodes, field positions taken from the served IDL. The double's answers are checked against
our schemas of the gateway envelope, events and fieldmapper objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from plugins.evergreen_osrf import GatewayError, Idl, envelope, event, request_form
from tests.pins import ALL, DEMO_PIN, WRONG_PIN
from tests.plugins.conftest import CountingHasher
from tests.plugins.ils_http.conftest import evergreen_settings, open_kind, opened, serving
from tests.plugins.ils_http.evergreen_double import SCHEMAS, EgPatron, EvergreenDouble
from tests.plugins.ils_http.scenarios import (
    pin_check_fails,
)
from tests.plugins.ils_http.serve import Served
from tests.plugins.seed import ACTIVE, BLOCKED, FINES, UNKNOWN

Evergreen = tuple[EvergreenDouble, Served]
LOGIN = "open-ils.auth.login"


open_evergreen = functools.partial(open_kind, "evergreen")


def no_pin_in_urls(double: EvergreenDouble) -> None:
    """PINs travel only in the POST body's `param` (never a URL, never another field)."""
    for _method, path, body, meta in double.requests:
        for pin in ALL:
            assert pin not in unquote_plus(path + "?" + meta.get("query", ""))
        form = parse_qs(body.decode())
        for key, values in form.items():
            if key != "param":
                assert not any(pin in v for v in values for pin in ALL)


def logins(double: EvergreenDouble) -> int:
    return double.count(LOGIN)  # patron and staff logins alike


async def test_right_pin_reads_the_record(evergreen: Evergreen, evergreen_store: Any) -> None:
    double, _ = evergreen
    result = await evergreen_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert result.pin_ok
    patron = result.patron
    assert patron.record_id == str(double.by_barcode(ACTIVE.barcode).id)
    assert patron.name == "Reader, Ada" and patron.email == ACTIVE.email
    assert patron.category == "ADULT" and patron.home_library == "4"
    assert patron.expires == ACTIVE.expires and not patron.blocked
    assert patron.fines == Decimal("0.00")
    no_pin_in_urls(double)
    await evergreen_store.ended()  # the patron's session is ended in the background
    assert double.deleted_sessions == 1 and not [
        s for s in double.sessions.values() if s.kind == "opac"
    ]


async def test_wrong_pin_and_unknown(
    evergreen: Evergreen, evergreen_store: Any, tmp_path: Path
) -> None:
    double, _ = evergreen
    wrong = await evergreen_store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))
    assert not wrong.pin_ok and wrong.patron is not None
    assert logins(double) == 2 and double.pin_checks() == 1  # then the staff session
    unknown = await evergreen_store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert unknown.patron is None and not unknown.pin_ok
    plain = await open_evergreen(evergreen, tmp_path, tell_unknown=False)
    try:
        assert (await plain.verify_pin(UNKNOWN, Secret(DEMO_PIN))).patron is not None
    finally:
        await plain.aclose()


async def test_without_a_staff_account(evergreen: Evergreen, tmp_path: Path) -> None:
    """PIN checks and status work in the patron's own session; lookups say what they need."""
    store = await open_evergreen(evergreen, tmp_path, staff_user="", password="")
    try:
        assert (await store.verify_pin(FINES.barcode, Secret(DEMO_PIN))).patron.fines == 25
        refused = await store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
        assert not refused.pin_ok and refused.patron is not None  # cannot tell: bad PIN
        with pytest.raises(StoreUnavailable, match="staff_user"):
            await store.lookup(ACTIVE.barcode)
        assert (await store.health()).ok  # opensrf.system.echo
    finally:
        await store.aclose()


async def test_inactive_barred_and_card_inactive(
    evergreen: Evergreen, evergreen_store: Any
) -> None:
    double, _ = evergreen
    double.add(EgPatron(501, "31000000000001", "ina", "Idle", "Ian", DEMO_PIN, active=False))
    double.add(EgPatron(502, "31000000000002", "bar", "Barred", "Bo", DEMO_PIN, barred=True))
    double.add(EgPatron(503, "31000000000003", "lost", "Lost", "Liv", DEMO_PIN, card_active=False))
    inactive = await evergreen_store.verify_pin("31000000000001", Secret(DEMO_PIN))
    assert inactive.pin_ok and inactive.patron.blocked_reason == "inactive in Evergreen"
    wrong = await evergreen_store.verify_pin("31000000000001", Secret(WRONG_PIN))
    assert not wrong.pin_ok  # Evergreen says "inactive" only with the right PIN
    barred = await evergreen_store.verify_pin("31000000000002", Secret(DEMO_PIN))
    assert not barred.pin_ok and barred.patron.blocked_reason == "barred in Evergreen"
    card = await evergreen_store.verify_pin("31000000000003", Secret(DEMO_PIN))
    assert card.pin_ok and card.patron.blocked_reason == "card inactive"


async def test_username_and_either(evergreen: Evergreen, tmp_path: Path) -> None:
    double, _ = evergreen
    by_name = await open_evergreen(evergreen, tmp_path, identifier="username")
    either = await open_evergreen(evergreen, tmp_path, identifier="either")
    name = double.by_barcode(ACTIVE.barcode).usrname
    try:
        result = await by_name.verify_pin(name, Secret(DEMO_PIN))
        assert result.pin_ok and result.patron.barcode == ACTIVE.barcode
        assert (await either.verify_pin(name, Secret(DEMO_PIN))).pin_ok
        assert (await either.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        wrong = await by_name.verify_pin(name, Secret(WRONG_PIN))
        assert not wrong.pin_ok and wrong.patron is not None  # "wrong PIN", not "unknown"
    finally:
        await by_name.aclose()
        await either.aclose()


async def test_staff_session_expiry_mid_run(evergreen: Evergreen, evergreen_store: Any) -> None:
    """NO_SESSION (Evergreen's "401") on a staff call: one new staff login, the call again."""
    double, _ = evergreen
    assert await evergreen_store.lookup(ACTIVE.barcode) is not None
    assert double.logins["staff"] == 1
    double.expire_sessions()
    assert await evergreen_store.lookup(ACTIVE.barcode) is not None
    assert double.logins["staff"] == 2
    results = await asyncio.gather(*(evergreen_store.lookup(FINES.barcode) for _ in range(5)))
    assert all(r is not None for r in results) and double.logins["staff"] == 2


async def test_staff_login_refused(evergreen: Evergreen, tmp_path: Path) -> None:
    store = await open_evergreen(evergreen, tmp_path, password="wrong-staff-password")
    try:
        with pytest.raises(StoreUnavailable, match="staff login refused") as info:
            await store.lookup(ACTIVE.barcode)
        assert "wrong-staff-password" not in str(info.value)
        assert not (await store.health()).ok
    finally:
        await store.aclose()


async def test_failures_are_never_resent(evergreen: Evergreen, tmp_path: Path) -> None:
    """Evergreen counts failed logins (block_count): one check per attempt, no more."""
    double, _ = evergreen
    store = await open_evergreen(evergreen, tmp_path, tell_unknown=False)
    try:
        for _ in range(10):
            assert not (await store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))).pin_ok
        assert logins(double) == 10
        # Evergreen's own lock-out now refuses even the right PIN; the bridge says "wrong".
        assert not (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", ["500", "malformed"])
async def test_unreadable_idl_is_unavailable_then_retried(
    evergreen: Evergreen, evergreen_store: Any, kind: str
) -> None:
    double, _ = evergreen
    await pin_check_fails(double, evergreen_store, "idl", kind if kind == "500" else "wrongtype")
    assert (await evergreen_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok


async def test_positions_come_from_the_served_idl(tmp_path: Path) -> None:
    """An Evergreen whose IDL orders every class differently: the same answers."""
    for pair in serving(EvergreenDouble(shuffle_idl=True), SCHEMAS):
        double, served = pair
        settings = evergreen_settings(double, served.url)
        async with opened("evergreen-http", settings, CountingHasher(), tmp_path) as store:
            result = await store.verify_pin(FINES.barcode, Secret(DEMO_PIN))
            assert result.pin_ok and result.patron.name == "Fines, Fay"
            assert result.patron.fines == Decimal("25.00") and result.patron.category == "ADULT"
            assert (await store.lookup(BLOCKED.barcode)).blocked


async def test_status_is_cached_per_barcode(evergreen: Evergreen, evergreen_store: Any) -> None:
    double, _ = evergreen
    for _ in range(3):
        assert (await evergreen_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert double.count("open-ils.actor.user.fleshed.retrieve") == 1 and logins(double) == 3
    await evergreen_store.ended()
    assert double.deleted_sessions == 3


# -- the wire format (plugins/evergreen_osrf.py) ---------------------------------------------------
IDL_XML = b"""<?xml version="1.0"?><IDL xmlns="http://opensrf.org/spec/IDL/base/v1">
<class id="au"><fields><field name="id"/><field name="card"/></fields></class>
<class id="ac"><fields><field name="barcode"/></fields></class></IDL>"""


def test_idl_maps_positions_and_nesting() -> None:
    idl = Idl.parse(IDL_XML, ["au", "ac"])
    got = idl.unpack({"__c": "au", "__p": [7, {"__c": "ac", "__p": ["B1"]}]})
    assert got == {"__c": "au", "id": 7, "card": {"__c": "ac", "barcode": "B1"}}
    with pytest.raises(GatewayError):
        idl.unpack({"__c": "au", "__p": [1, 2, 3]})  # more positions than fields
    with pytest.raises(GatewayError):
        idl.unpack({"__c": "aou", "__p": []})


def test_idl_flattened_by_mod_idlchunk_reads_the_same() -> None:
    """mod_idlchunk with its default text/html content type writes every element empty."""
    flat = b"""<IDL xmlns="http://opensrf.org/spec/IDL/base/v1"><class id="au" /><fields />
    <field name="id" /><field name="card" /><links /><link field="card" />
    <class id="ac" /><fields /><field name="barcode" /></IDL>"""
    assert Idl.parse(flat, ["au", "ac"]).classes == Idl.parse(IDL_XML, ["au", "ac"]).classes


@pytest.mark.parametrize(
    "xml",
    [
        IDL_XML[:60],  # truncated
        b"<IDL>" + b"<x>" * 10 + b"</IDL>",  # malformed
        b'<!DOCTYPE IDL [<!ENTITY a "aaaa">]><IDL>&a;</IDL>',  # a DTD: refused
        IDL_XML.replace(b'name="card"', b'name="id"'),  # duplicate field
        IDL_XML.replace(b'<class id="ac">', b'<class id="acx">'),  # a class missing
        b" " * (16 * 1024 * 1024 + 1),  # oversized
    ],
)
def test_hostile_idl_is_refused(xml: bytes) -> None:
    with pytest.raises(GatewayError):
        Idl.parse(xml, ["au", "ac"])


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"payload": [], "status": 404, "debug": "method not found"}',
        b'{"payload": 5, "status": 200}',
        b'{"payload": [1, 2',
        b"[" * 5000,
    ],
)
def test_bad_envelopes_are_refused(body: bytes) -> None:
    with pytest.raises(GatewayError):
        envelope(body)


def test_request_form_and_events() -> None:
    form = request_form("open-ils.auth", "open-ils.auth.login", [{"barcode": "A+B"}, None])
    assert form["param"] == ['{"barcode":"A+B"}', "null"]
    failed = event({"ilsevent": 1000, "textcode": "LOGIN_FAILED"})
    assert failed is not None and failed.textcode == "LOGIN_FAILED"
    assert event({"__c": "au", "__p": []}) is None and event("x") is None
    with pytest.raises(GatewayError):
        event({"textcode": 5})


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=4)))
def test_unpack_any_json_never_crashes_otherwise(value: Any) -> None:
    idl = Idl.parse(IDL_XML, ["au", "ac"])
    with contextlib.suppress(GatewayError):
        idl.unpack({"__c": "au", "__p": [value, value]})
        idl.unpack(value)


@given(st.binary(max_size=300))
def test_envelope_of_any_bytes(body: bytes) -> None:
    with contextlib.suppress(GatewayError):
        envelope(body)


async def test_a_refused_fines_summary_is_never_no_fines(
    evergreen: Evergreen, evergreen_store: Any
) -> None:
    """An event where the fines summary belongs (a permission missing) is "unavailable"."""
    double, _ = evergreen
    double.deny_fines = True
    with pytest.raises(StoreUnavailable, match="fines"):
        await evergreen_store.verify_pin(FINES.barcode, Secret(DEMO_PIN))
    with pytest.raises(StoreUnavailable, match="fines"):
        await evergreen_store.lookup(FINES.barcode)


async def test_sessions_left_to_time_out(evergreen: Evergreen, tmp_path: Path) -> None:
    """`end_sessions = false`: one request fewer per login; Evergreen times the session out."""
    double, _ = evergreen
    store = await open_evergreen(evergreen, tmp_path, end_sessions=False)
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
        await store.ended()
        assert double.deleted_sessions == 0
        assert double.count("open-ils.auth.session.delete") == 0
    finally:
        await store.aclose()


async def test_sessions_are_ended_one_at_a_time(evergreen: Evergreen, evergreen_store: Any) -> None:
    """Logins at once: every session is ended, and never two ends in flight together (they
    would take pooled connections, and the ILS's attention, from the next PIN checks)."""
    double, _ = evergreen
    call = evergreen_store.eg.call
    now = most = 0

    async def counting(service: str, method: str, *params: Any, what: str) -> Any:
        nonlocal now, most
        if what != "logout":
            return await call(service, method, *params, what=what)
        now += 1
        most = max(most, now)
        try:
            return await call(service, method, *params, what=what)
        finally:
            now -= 1

    evergreen_store.eg.call = counting
    results = await asyncio.gather(
        *(evergreen_store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN)) for _ in range(6))
    )
    assert all(r.pin_ok for r in results)
    await evergreen_store.ended()
    assert double.deleted_sessions == 6 and most == 1
