"""64 → Verification, pure."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.store import Verification
from bridge.sip2.codec import ProtocolError, decode
from plugins.sip2 import mapping

CARD = "21234000000001"


def v(status: str = " " * 14, **fields: str) -> Verification:
    return mapping.verification(CARD, status, list(fields.items()))


def test_right_pin_full_record() -> None:
    got = v(
        BL="Y",
        CQ="Y",
        AE="Reader, Ann",
        BE="ann@example.org",
        PC="ADULT",
        PA="20301231",
        BV="1.50",
        XI="42",
    )
    assert got.pin_ok
    p = got.patron
    assert p is not None
    assert (p.barcode, p.record_id, p.name, p.email, p.category) == (
        CARD,
        "42",
        "Reader, Ann",
        "ann@example.org",
        "ADULT",
    )
    assert p.expires == dt.date(2030, 12, 31)
    assert p.fines == Decimal("1.50")
    assert not p.blocked and p.blocked_reason is None


@pytest.mark.parametrize("cq", [None, "", " ", "y", "N", "YY", "Y "])
def test_only_exactly_y_is_a_right_pin(cq: str | None) -> None:
    fields = {"BL": "Y"} if cq is None else {"BL": "Y", "CQ": cq}
    got = v(**fields)
    assert got.patron is not None and not got.pin_ok


def test_bl_n_is_unknown_whatever_cq_says() -> None:
    assert v(BL="N", CQ="Y") == Verification(None, False)
    assert v(BL="N") == Verification(None, False)


def test_missing_bl_is_known_only_with_cq_y() -> None:
    assert v(CQ="Y").pin_ok
    assert v(CQ="N").patron is None
    assert v().patron is None


def test_status_flags_block() -> None:
    status = "Y   Y     YY  "
    got = v(status, BL="Y", CQ="Y")
    assert got.patron is not None and got.patron.blocked
    assert got.patron.blocked_reason == (
        "charge privileges denied; card reported lost; excessive fines; excessive fees"
    )
    # Renewal or hold denials alone do not block logins.
    assert not v(" YYY" + " " * 10, BL="Y", CQ="Y").patron.blocked  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("1.50", "1.50"),
        ("$1.50", "1.50"),
        (" 1,50 ", "1.50"),
        ("1,234.00", "1234.00"),
        ("-2.00", "-2.00"),
        ("", "0.00"),
        ("abc", "0.00"),
        ("1.2.3", "0.00"),
    ],
)
def test_fees(text: str, want: str) -> None:
    assert mapping.parse_fees(text) == Decimal(want)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("20301231", dt.date(2030, 12, 31)),
        ("20301231    120000", dt.date(2030, 12, 31)),
        ("20301332", None),
        ("", None),
        ("2030-12-31", None),
    ],
)
def test_expiry(text: str, want: dt.date | None) -> None:
    assert mapping.parse_expiry(text) == want


field = st.tuples(
    st.sampled_from(["BL", "CQ", "AE", "BE", "PC", "PA", "BV", "XI", "AF", "ZZ"]),
    st.text(max_size=20),
)


@given(st.text(max_size=20), st.lists(field, max_size=12))
def test_any_reply_maps_or_nothing(status: str, fields: list[tuple[str, str]]) -> None:
    """Whatever the ILS sends, mapping returns a Verification; pin_ok implies CQ == 'Y'."""
    got = mapping.verification(CARD, status, fields)
    first = mapping.first_fields(fields)
    assert got.pin_ok == (got.patron is not None and first.get("CQ") == "Y")
    if first.get("BL") == "N":
        assert got.patron is None
    if got.patron is not None:
        assert got.patron.fines.is_finite()


@given(st.binary(max_size=200))
def test_decoded_bytes_map_or_raise_protocol_error(data: bytes) -> None:
    """The whole client-side parse path: bytes → codec → mapping, nothing else escapes."""
    frame = b"64" + data
    try:
        message = decode(frame)
    except ProtocolError:
        return
    mapping.verification(CARD, message.fixed["patron_status"], message.fields)
