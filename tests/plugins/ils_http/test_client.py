"""The shared HTTP pieces: Retry-After parsing, the breaker's hold, the schema checker, and the
Koha answer types against hostile bodies (every parser: truncated, oversized, malformed,
hostile, and a property test)."""

from __future__ import annotations

import contextlib
import email.utils

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.breaker import Breaker, State
from plugins.ils_http.client import RETRY_AFTER_MAX, retry_after
from plugins.koha_rest import KohaPatron, KohaRestSettings, Validated
from tests.plugins.ils_http.koha_double import PATRON, SCHEMAS, seed_patrons
from tests.plugins.ils_http.schema import check


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after("2", 0.0) == 2.0
    assert retry_after(" 30 ", 0.0) == 30.0
    assert retry_after("99999999", 0.0) == RETRY_AFTER_MAX
    when = email.utils.formatdate(1_000_060, usegmt=True)
    assert retry_after(when, 1_000_000.0) == pytest.approx(60.0)
    assert retry_after(email.utils.formatdate(10, usegmt=True), 1_000_000.0) == 0.0
    for bad in (None, "", "-1", "soon", "1.5", "9" * 40, "Mon, 99 Foo 2026 25:61:61 GMT"):
        assert retry_after(bad, 0.0) is None


@given(st.text(max_size=80))
def test_retry_after_never_raises(value: str) -> None:
    got = retry_after(value, 1_000_000.0)
    assert got is None or 0.0 <= got <= RETRY_AFTER_MAX


def test_breaker_hold_opens_for_the_asked_pause() -> None:
    b = Breaker(failures=5, reset=1.0, reset_max=60.0)
    b.hold(100.0, 10.0)
    assert b.state is State.OPEN and not b.allow(105.0)
    assert b.allow(110.0)  # the probe
    b.success(110.0)
    assert b.closed
    b.hold(200.0, 3600.0)  # capped at reset_max
    assert b.retry_after(200.0) == 60.0
    b.hold(200.0, 5.0)  # a shorter hold never shortens an open pause
    assert b.retry_after(200.0) == 60.0
    c = Breaker(failures=1)
    c.hold(0.0, 0.0)  # no pause asked: an ordinary failure
    assert c.state is State.OPEN


def test_schema_checker_reports_each_problem() -> None:
    good = seed_patrons()[0].api()
    assert check(good, PATRON) == []
    bad = {**good, "patron_id": "7", "restricted": None, "extra": 1}
    del bad["surname"]
    problems = check(bad, PATRON)
    assert len(problems) == 4
    assert check({"expiry_date": "2026-13-45"}, {"properties": PATRON["properties"]})
    assert check(True, {"type": "integer"})  # a bool is not a number in JSON Schema
    assert check([1, "x"], {"type": "array", "items": {"type": "integer"}})
    assert set(SCHEMAS) == {"token", "validation", "patrons", "patron", "account", "password"}


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"patron_id": 1',
        b"[]",
        b"null",
        b'{"patron_id": "1", "category_id": "A", "library_id": "M"}',
        b'{"patron_id": 1, "category_id": 5, "library_id": "M"}',
        b'{"patron_id": 1, "category_id": "A", "library_id": "M", "expiry_date": "soon"}',
        b'{"patron_id": 1e400}',
        b"\xff\xfe{}",
        b'{"patron_id": 1, "category_id": "' + b"A" * 1_000_000 + b'"',
    ],
)
def test_hostile_patron_bodies_raise_decode_errors(body: bytes) -> None:
    with pytest.raises((msgspec.DecodeError, msgspec.ValidationError)):
        msgspec.json.decode(body, type=KohaPatron)


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_a_decode_error(body: bytes) -> None:
    for type_ in (KohaPatron, Validated):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            msgspec.json.decode(body, type=type_)


@pytest.mark.parametrize(
    ("more", "message"),
    [
        ({"base_url": "http://ils.example.org"}, "https"),
        ({"base_url": "ftp://127.0.0.1"}, "http"),
        ({"base_url": "https://u:p@ils.example.org"}, "credentials"),
        ({"base_url": "https://ils.example.org/?x=1"}, "query"),
        ({"client_id": ""}, "client_id"),
        ({"auth": "basic"}, "user and password"),
        ({"breaker_reset": 10.0, "breaker_reset_max": 1.0}, "breaker_reset_max"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"identifier": "email"}, "identifier"),
        ({"blocked_when": ["debt"]}, "blocked_when"),
        ({"pool_size": 0}, "pool_size"),
        ({"unknown_key": 1}, "unknown_key"),
    ],
)
def test_settings_are_validated(more: dict[str, object], message: str) -> None:
    settings = {"base_url": "https://koha.example.org", "client_id": "c", "secret": "s", **more}
    with pytest.raises(msgspec.ValidationError, match=message):
        msgspec.convert(settings, KohaRestSettings)
    ok = {"base_url": "https://koha.example.org", "client_id": "c", "secret": "s"}
    assert msgspec.convert(ok, KohaRestSettings).identifier == "cardnumber"


@given(st.text(max_size=40))
def test_cql_strings_always_round_trip(value: str) -> None:
    from plugins.folio import cql_string
    from tests.plugins.ils_http.folio_double import cql_filter

    terms = cql_filter(f"barcode=={cql_string(value)}")
    assert terms is not None and len(terms) == 1
    assert terms[0][1].fullmatch(value)


@given(st.binary(max_size=200))
def test_folio_and_sierra_bodies_parse_or_raise(body: bytes) -> None:
    from plugins.folio import AutomatedBlocks, LoginWithExpiry, ManualBlocks, Users
    from plugins.sierra import SierraError, SierraPatron

    for type_ in (Users, AutomatedBlocks, ManualBlocks, LoginWithExpiry, SierraPatron, SierraError):
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            msgspec.json.decode(body, type=type_)


@pytest.mark.parametrize(
    "value", ["2027-01-31T23:59:59.000+00:00", "2027-01-31T23:59:59Z", "2027-01-31"]
)
def test_folio_times(value: str) -> None:
    from plugins.folio import parse_time

    when = parse_time(value)
    assert when is not None and when.date().isoformat() == "2027-01-31" and when.tzinfo


@pytest.mark.parametrize("value", ["soon", "2027-13-01", "31/01/2027", "2027-01-31T25:00"])
def test_folio_bad_times_are_unavailable(value: str) -> None:
    from bridge.core.store import StoreUnavailable
    from plugins.folio import parse_time

    with pytest.raises(StoreUnavailable):
        parse_time(value)
