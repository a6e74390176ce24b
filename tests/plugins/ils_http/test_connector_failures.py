"""The failure scenarios and escaping every HTTP connector must pass, run over each of them.

Each connector's row says only what is its own: which double route is its PIN check, how to
count the checks its double saw, which routes a 5xx or an unreadable answer is tried on, how a
patron with an odd barcode is added and what else must not leak. The steps and what they prove
(scenarios.py) are the same for all: a 429 holds the breaker without another request, a 5xx or
an unreadable answer is "unavailable" and the PIN check is never sent twice, a slow ILS ends at
the deadline, a closed port is "cannot connect" then "circuit", barcodes with `+`, `/`, spaces,
Unicode and query syntax travel exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from bridge.core.patron import Outcome
from bridge.core.secret import Secret
from bridge.core.store import Capability, NotSupported, StoreUnavailable
from tests.pins import ALL, DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.plugins.conftest import authenticator, ctx
from tests.plugins.ils_http.alma_double import AlmaUser
from tests.plugins.ils_http.conftest import KINDS, open_kind, settings_for
from tests.plugins.ils_http.evergreen_double import EgPatron
from tests.plugins.ils_http.folio_double import FolioUser
from tests.plugins.ils_http.koha_double import KohaPatron
from tests.plugins.ils_http.polaris_double import PolarisPatron
from tests.plugins.ils_http.scenarios import (
    breaker_holds_after_429,
    connection_refused,
    pin_check_fails,
    slow_check_ends_at_the_deadline,
)
from tests.plugins.ils_http.serve import Served, free_port
from tests.plugins.ils_http.sierra_double import SierraPatron
from tests.plugins.ils_http.symphony_double import SymphonyPatron
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, FINES, UNKNOWN

ODD_ALMA = "odd@example.edu"
EG_LOGIN, EG_SESSION = "open-ils.auth.login", "open-ils.auth.session.retrieve"
COMMON_HOSTILE = ("A+B/C D", "29 00/11+22", "Ünïcödé-卡-42")


def _no_extra(double: Any, barcode: str) -> None:
    """Nothing beyond the URL check every double gets."""


def _koha_query_exact(double: Any, barcode: str) -> None:
    """The double saw the exact value in the query string, decoded back."""
    queries = [meta["query"] for method, _, _, meta in double.requests if method == "GET"]
    assert any(("cardnumber=" + barcode) in unquote_plus(q) for q in queries)


def _polaris_pin_only_in_auth_body(double: Any, barcode: str) -> None:
    for _method, path, body, _meta in double.requests:
        if not path.endswith("/authenticator/patron"):
            assert not any(pin.encode() in body for pin in ALL)


def _alma_key_not_in_urls(double: Any, barcode: str) -> None:
    for _method, path, _body, meta in double.requests:
        assert double.key not in unquote_plus(path + "?" + meta["query"])


@dataclass(frozen=True)
class Case:
    kind: str  # the KINDS key (fixtures `<kind>` and `<kind>_store`)
    check: str  # the double's route of the PIN check
    checks: Callable[[Any], int]  # PIN checks the double saw
    errors: tuple[str, ...]  # routes whose 5xx makes a PIN check fail
    unreadable: tuple[str, ...]  # routes whose broken answer makes a PIN check fail
    add: Callable[[Any, str], str]  # add a patron with this barcode and the demo PIN → record id
    hostile: tuple[str, ...]
    error_kinds: tuple[str, ...] = ("500",)
    unreadable_kinds: tuple[str, ...] = ("malformed", "wrongtype")
    before_check: tuple[str, ...] = ()  # error routes answered before the PIN check is sent
    by_lookup: tuple[str, ...] = ()  # unreadable routes reached by a lookup, not a PIN check
    slow: dict[str, Any] = field(default_factory=dict)  # settings for the slow test
    near_miss: Callable[[str], str] = lambda barcode: barcode + "0"
    also: Callable[[Any, str], None] = _no_extra  # what else a hostile barcode must not do
    blocked_reason: str = "card reported lost"  # what the seed's blocked patron is told
    changes_pin: bool = False  # the ILS has a PIN-change call the connector uses


def _add(double: Any, patron: Any, record_id: Any) -> str:
    double.add(patron)
    return str(record_id)


def _add_folio(double: Any, barcode: str) -> str:
    uid = str(uuid.uuid4())
    return _add(double, FolioUser(uid, barcode, "Odd", "Otto", DEMO_PIN), uid)


CASES = [
    Case(
        "koha",
        "validation",
        lambda d: d.count("/auth/password/validation"),
        ("validation",),
        ("validation", "patron", "account", "patrons", "token"),
        lambda d, b: _add(d, KohaPatron(950, b, "Odd", "Otto", DEMO_PIN), 950),
        (*COMMON_HOSTILE, "a&cardnumber=29000000000011", "x%2Fy?z#w"),
        error_kinds=("500", "503"),
        changes_pin=True,
        by_lookup=("patrons",),
        also=_koha_query_exact,
    ),
    Case(
        "folio",
        "pin-verify",
        lambda d: d.count("/patron-pin/verify"),
        ("pin-verify", "users", "manual", "automated", "accounts"),
        ("users", "login-with-expiry", "automated", "manual", "accounts", "group"),
        lambda d, b: _add_folio(d, b),
        (
            *COMMON_HOSTILE,
            'quo"te\\back',
            "star*",
            "q?",
            'x" or barcode=="29000000000011',
            "a&query=barcode==*",
        ),
        before_check=("users",),
        changes_pin=True,
        near_miss=lambda barcode: barcode[:-1] + "#",  # masks and quotes are escaped
    ),
    Case(
        "sierra",
        "validate",
        lambda d: d.count("/patrons/validate"),
        ("validate", "find"),
        ("validate", "find", "token"),
        lambda d, b: _add(d, SierraPatron(3_000_001, b, "Odd, Otto", DEMO_PIN), 3_000_001),
        (*COMMON_HOSTILE, "a&varFieldTag=z", "x%2Fy?z#w"),
        blocked_reason="blocked in Sierra (code c)",
        changes_pin=True,
    ),
    Case(
        "polaris",
        "patron-auth",
        lambda d: d.count("/authenticator/patron"),
        ("patron-auth", "blocks", "basic"),
        ("patron-auth", "blocks", "basic"),
        lambda d, b: _add(d, PolarisPatron(7001, b, "Odd", "Otto", DEMO_PIN), 7001),
        (*COMMON_HOSTILE, "a&b=c", "x%2Fy?z#w", "../../api"),
        also=_polaris_pin_only_in_auth_body,
    ),
    Case(
        "alma",
        "auth",
        lambda d: d.calls("POST"),
        ("auth", "user"),
        ("auth", "user"),
        lambda d, b: _add(d, AlmaUser(ODD_ALMA, b, "Odd", "Otto", DEMO_PIN), ODD_ALMA),
        (*COMMON_HOSTILE, "a&op=auth", "x%2Fy?z#w", "../test"),
        also=_alma_key_not_in_urls,
    ),
    Case(
        "symphony",
        "authenticate",
        lambda d: d.count("/user/patron/authenticate"),
        ("authenticate", "patron", "staff-login"),
        ("authenticate", "patron", "staff-login"),
        lambda d, b: _add(d, SymphonyPatron("901", b, "Odd", "Otto", DEMO_PIN), 901),
        (*COMMON_HOSTILE, "a&includeFields=*", "x%2Fy?z#w"),
        blocked_reason="standing BARRED in Symphony",
    ),
    Case(
        "evergreen",
        EG_LOGIN,
        lambda d: d.pin_checks(),
        (EG_LOGIN, EG_SESSION, "open-ils.actor.user.fleshed.retrieve"),
        (EG_LOGIN, EG_SESSION, "open-ils.actor.user.fines.summary"),
        lambda d, b: _add(d, EgPatron(777, b, "odd", "Odd", "Otto", DEMO_PIN), 777),
        (*COMMON_HOSTILE, 'a"},{"x":"', "x%2Fy&param=z#w"),
        error_kinds=("500", "osrf500"),
        unreadable_kinds=("malformed", "wrongtype", "wrongclass"),
        slow={"staff_user": "", "password": ""},  # health by echo: no staff login to count
    ),
]  # fmt: skip
BY_KIND = {case.kind: case for case in CASES}


def _each(*fields: str) -> list[Any]:
    """pytest params: one per connector, or per connector and each value of `fields`."""
    out: list[Any] = []
    for case in CASES:
        combos: list[tuple[Any, ...]] = [()]
        for name in fields:
            combos = [(*c, v) for c in combos for v in getattr(case, name)]
        for combo in combos:
            out.append(pytest.param(case.kind, *combo, id="-".join((case.kind, *combo))))
    return out


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> tuple[Case, Any, Any]:
    """(case, double, store) for the connector named by the parameter."""
    kind = request.param
    return BY_KIND[kind], request.getfixturevalue(kind)[0], request.getfixturevalue(f"{kind}_store")


@pytest.fixture
def served(request: pytest.FixtureRequest) -> tuple[Case, tuple[Any, Served]]:
    """(case, (double, served)) for the connector named by the parameter."""
    return BY_KIND[request.param], request.getfixturevalue(request.param)


Pair = tuple[Case, Any, Any]


@pytest.mark.parametrize("pair", _each(), indirect=True)
async def test_standing_through_the_core(pair: Pair) -> None:
    """The seed patrons through the authenticator: every outcome the ILS can tell."""
    case, _, store = pair
    auth = authenticator(store)
    cases = {
        ACTIVE.barcode: Outcome.ACCEPTED,
        EXPIRED.barcode: Outcome.CARD_EXPIRED,
        BLOCKED.barcode: Outcome.CARD_BLOCKED,
        FINES.barcode: Outcome.FINES_OVER_LIMIT,
        UNKNOWN: Outcome.UNKNOWN_CARD,
    }
    for barcode, outcome in cases.items():
        decision = await auth.authenticate(barcode, Secret(DEMO_PIN), ctx())
        assert decision.outcome is outcome, barcode
    wrong = await auth.authenticate(ACTIVE.barcode, Secret(WRONG_PIN), ctx())
    assert wrong.outcome is Outcome.BAD_PIN
    assert (await store.lookup(BLOCKED.barcode)).blocked_reason == case.blocked_reason
    fines = await store.lookup(FINES.barcode)
    assert fines.fines == Decimal("25.00") and not fines.blocked  # the limit is the bridge's


@pytest.mark.parametrize("pair", _each(), indirect=True)
async def test_pin_change_is_offered_only_where_the_ils_has_one(pair: Pair) -> None:
    """The capability says the truth; without it a change is NotSupported and the PIN stays."""
    case, _, store = pair
    assert (Capability.CHANGE_PIN in store.capabilities) is case.changes_pin
    if case.changes_pin:
        return  # each connector's own tests change PINs through its double
    patron = await store.lookup(ACTIVE.barcode)
    with pytest.raises(NotSupported):
        await store.change_pin(patron, Secret(NEW_PIN))
    assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok


@pytest.mark.parametrize("pair", _each(), indirect=True)
async def test_429_holds_the_breaker(pair: Pair) -> None:
    case, double, store = pair
    await breaker_holds_after_429(double, store, case.check)
    health = await store.health()
    assert not health.ok and "circuit" in health.detail


@pytest.mark.parametrize(
    ("pair", "route", "fault"), _each("errors", "error_kinds"), indirect=["pair"]
)
async def test_server_error_is_unavailable_and_the_check_not_resent(
    pair: Pair, route: str, fault: str
) -> None:
    case, double, store = pair
    await pin_check_fails(double, store, route, fault)
    assert case.checks(double) == (0 if route in case.before_check else 1)
    assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok  # then it works


@pytest.mark.parametrize("served", _each(), indirect=True)
async def test_slow_check_ends_at_the_deadline(
    served: tuple[Case, tuple[Any, Served]], tmp_path: Path
) -> None:
    case, (double, at) = served
    store = await open_kind(case.kind, (double, at), tmp_path, request_timeout=0.5, **case.slow)
    try:
        await store.health()  # tokens, sessions and start-up reads done: only the check is slow
        await slow_check_ends_at_the_deadline(
            double, store, case.check, lambda: case.checks(double)
        )
    finally:
        await store.aclose()


@pytest.mark.parametrize("served", _each(), indirect=True)
async def test_connection_refused_then_circuit(
    served: tuple[Case, tuple[Any, Served]], tmp_path: Path
) -> None:
    case, (double, _) = served
    settings = settings_for(
        case.kind, double, f"http://127.0.0.1:{free_port()}", breaker_failures=2
    )
    await connection_refused(KINDS[case.kind].plugin, settings, tmp_path)


@pytest.mark.parametrize(
    ("pair", "route", "fault"), _each("unreadable", "unreadable_kinds"), indirect=["pair"]
)
async def test_unreadable_answers_are_unavailable(pair: Pair, route: str, fault: str) -> None:
    case, double, store = pair
    if route in case.by_lookup:
        double.fail(route, fault)
        with pytest.raises(StoreUnavailable):
            await store.lookup(ACTIVE.barcode)
        return
    await pin_check_fails(double, store, route, fault)


@pytest.mark.parametrize(("pair", "barcode"), _each("hostile"), indirect=["pair"])
async def test_barcodes_travel_exactly(pair: Pair, barcode: str) -> None:
    case, double, store = pair
    record = case.add(double, barcode)
    result = await store.verify_pin(barcode, Secret(DEMO_PIN))
    assert result.pin_ok and result.patron.record_id == record
    assert result.patron.barcode == barcode
    found = await store.lookup(barcode)
    assert found is not None and found.record_id == record and found.barcode == barcode
    assert await store.lookup(case.near_miss(barcode)) is None
    double.assert_no_pin_in_urls()
    case.also(double, barcode)
