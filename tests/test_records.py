"""CSV rows → patrons: every column, every bad row reported by line number, never the PIN."""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.pin import PinPolicy
from bridge.core.store import NewPatron
from bridge.records import BadRow, RowError, parse_date, parse_fines, read_csv, row_to_patron
from tests.pins import DEMO_PIN, NEW_PIN

HEADER = "barcode,pin,name,email,expires,category,blocked,fines\n"
POLICY = PinPolicy()


def rows(text: str) -> list[NewPatron | BadRow]:
    return list(read_csv(io.StringIO(text), POLICY))


def test_good_row_every_column() -> None:
    (item,) = rows(
        HEADER + f'21234000000001,{DEMO_PIN},"Rivera, Ana",a@example.org,2030-12-31,ADULT,,3.5\n'
    )
    assert isinstance(item, NewPatron)
    p = item.patron
    assert (p.barcode, p.name, p.email, p.category) == (
        "21234000000001",
        "Rivera, Ana",
        "a@example.org",
        "ADULT",
    )
    assert p.expires == dt.date(2030, 12, 31) and p.fines == Decimal("3.50")
    assert not p.blocked and p.blocked_reason is None and p.record_id
    assert item.pin is not None and item.pin.matches(DEMO_PIN) and item.pin_hash is None


def test_demo_file_is_all_good() -> None:
    from tests.harness import DEMO_CSV

    with DEMO_CSV.open(encoding="utf-8", newline="") as handle:
        items = list(read_csv(handle, POLICY))
    assert len(items) == 5 and all(isinstance(i, NewPatron) for i in items)


def test_bad_rows_by_line_number_never_quoting_the_pin() -> None:
    text = (
        HEADER
        + f"21234000000001,{DEMO_PIN},Good,,,,,\n"  # 2
        + "21234000000002,4545,Repeat,,,,,\n"  # 3
        + f"21234000000003,{NEW_PIN},Date,,2030-02-30,,,\n"  # 4
        + f'21234000000004,{NEW_PIN},"multi\nline name",,,,,\n'  # 5-6
        + f"21234000000005,{NEW_PIN},Fines,,,,,NaN\n"  # 7
        + f"21234000000006,{NEW_PIN},Extra,,,,,,surplus\n"  # 8
        + f",{NEW_PIN},No barcode,,,,,\n"  # 9
    )
    items = rows(text)
    bad = [i for i in items if isinstance(i, BadRow)]
    good = [i for i in items if isinstance(i, NewPatron)]
    assert [g.patron.barcode for g in good] == ["21234000000001", "21234000000004"]
    assert [b.line for b in bad] == [3, 4, 7, 8, 9]
    for b in bad:
        assert "4545" not in b.message and NEW_PIN not in b.message
    assert "repeating" in bad[0].message and "expires" in bad[1].message


def test_header_problems() -> None:
    assert rows("card,pin\n1,2\n") == [BadRow(1, "header: no barcode column")]
    (only,) = rows("barcode,pin,colour\n1,2,red\n")
    assert isinstance(only, BadRow) and "colour" in only.message
    assert rows("") == [BadRow(1, "header: no barcode column")]


def test_pin_hash_column() -> None:
    koha = bcrypt.hashpw(DEMO_PIN.encode(), bcrypt.gensalt(4)).decode()
    text = f"barcode,pin_hash\n21234000000001,{koha}\n21234000000002,plaintext\n"
    good, bad = rows(text)
    assert isinstance(good, NewPatron) and good.pin_hash == koha and good.pin is None
    assert isinstance(bad, BadRow) and "pin_hash" in bad.message and "plaintext" not in bad.message
    both = f"barcode,pin,pin_hash\n21234000000001,{DEMO_PIN},{koha}\n"
    (item,) = rows(both)
    assert isinstance(item, BadRow) and "not both" in item.message


def test_parsers() -> None:
    assert parse_date("") is None and parse_date(" 2030-01-02 ") == dt.date(2030, 1, 2)
    assert parse_fines("") == Decimal("0.00") and parse_fines("1") == Decimal("1.00")
    for bad in ("-0.01", "Infinity", "1e999999999", "ten"):
        with pytest.raises(RowError):
            parse_fines(bad)
    with pytest.raises(RowError):
        row_to_patron({"barcode": "x" * 65}, POLICY)


@given(
    st.dictionaries(
        st.sampled_from(
            sorted(["barcode", "pin", "name", "email", "expires", "category", "blocked", "fines"])
        ),
        st.text(max_size=20),
    )
)
def test_property_row_parses_or_raises_row_error(row: dict[str, str]) -> None:
    try:
        item = row_to_patron(row, POLICY)
    except RowError as exc:
        pin = row.get("pin", "")
        assert not pin or len(pin) < 3 or pin not in str(exc) or pin in ("pin", "PIN")
        return
    assert item.patron.barcode == row["barcode"].strip()
