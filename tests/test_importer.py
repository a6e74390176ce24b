"""The import's row reader: fields only when named, empty cells kept (or cleared on request),
the policy's refusal in the admin's words, duplicates found with every line, and anything a
hostile or broken file holds either parses or is reported, never raised."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.cli_admin import Progress
from bridge.core.pin import PinPolicy
from bridge.importer import (
    ImportError_,
    ImportOptions,
    Problem,
    Row,
    admin_reason,
    duplicates,
    parse_row,
    read_rows,
)
from bridge.records import RowError
from tests.pins import DEMO_PIN

POLICY = PinPolicy()
CARD = "21234000000001"


def rows(text: str, **options: bool) -> list[Row | Problem]:
    _, repeated = duplicates(io.StringIO(text))
    return list(read_rows(io.StringIO(text), POLICY, ImportOptions(**options), repeated))  # type: ignore[arg-type]


def test_only_named_non_empty_fields() -> None:
    (row,) = rows(f"barcode,email,name,fines\n{CARD},a@example.org,,\n")
    assert isinstance(row, Row)
    assert row.fields == {"email": "a@example.org"} and row.pin is None and row.pin_hash is None


def test_blank_clears() -> None:
    (row,) = rows(f"barcode,email,name,fines,blocked,record_id\n{CARD},,,,,\n", blank_clears=True)
    assert isinstance(row, Row)
    assert row.fields == {"email": None, "name": "", "fines": Decimal("0.00"), "blocked": None}


def test_policy_refusals_in_admin_words() -> None:
    assert admin_reason(POLICY, POLICY.check("1212")) == "pin: repeating digits (policy)"
    assert admin_reason(POLICY, POLICY.check("12a4")) == "pin: not only digits 0-9 (policy)"
    assert admin_reason(POLICY, POLICY.check("123")) == "pin: not 4 digits (policy)"
    ranged = PinPolicy(4, 6)
    assert admin_reason(ranged, ranged.check("123")) == "pin: not 4 to 6 digits (policy)"
    blocked = PinPolicy(blocklist=frozenset({"1234"}))
    assert "blocklist" in admin_reason(blocked, blocked.check("1234"))
    (row,) = rows(f"barcode,pin\n{CARD},1212\n")
    assert isinstance(row, Row) and row.bad_pin == "pin: repeating digits (policy)"
    (problem,) = rows(f"barcode,pin\n{CARD},1212\n", skip_bad_pins=True)
    assert isinstance(problem, Problem) and problem.line == "2"


def test_duplicates_reported_once_with_every_line() -> None:
    text = f"barcode,name\n{CARD},a\n21234000000002,b\n{CARD},c\n{CARD},d\n"
    total, repeated = duplicates(io.StringIO(text))
    assert total == 4 and repeated == {CARD: [2, 4, 5]}
    items = rows(text)
    problems = [i for i in items if isinstance(i, Problem)]
    assert [(p.line, p.rows) for p in problems] == [("2, 4, 5", 3)]
    assert [i.barcode for i in items if isinstance(i, Row)] == ["21234000000002"]


def test_header_problems() -> None:
    with pytest.raises(ImportError_, match="no barcode column"):
        rows("card,pin\n1,2\n")
    with pytest.raises(ImportError_, match="unknown columns"):
        rows("barcode,shoe_size\n1,2\n")


@pytest.mark.parametrize(
    "line",
    [
        f"{CARD}",  # truncated: fewer fields is fine (the rest are absent)
        f"{CARD},{DEMO_PIN},x,y,z",  # more fields than the header
        "x" * 10_000 + f",{DEMO_PIN}",  # oversized barcode
        f'"{CARD},{DEMO_PIN}',  # an unclosed quote swallows the rest
        f"{CARD}\x00,{DEMO_PIN}",  # a NUL
        f"{CARD},{DEMO_PIN}\u202e",  # hostile unicode in the PIN
    ],
)
def test_hostile_rows_never_quote_the_pin(line: str) -> None:
    for item in rows(f"barcode,pin\n{line}\n"):
        if isinstance(item, Problem):
            assert DEMO_PIN not in item.message


@settings(max_examples=200)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "barcode",
                "pin",
                "pin_hash",
                "name",
                "email",
                "expires",
                "fines",
                "blocked",
                "record_id",
                "category",
            ]
        ),
        st.text(max_size=40),
    ),
    st.booleans(),
    st.booleans(),
)
def test_any_row_parses_or_raises_row_error(row: dict[str, str], clears: bool, skip: bool) -> None:
    options = ImportOptions(blank_clears=clears, skip_bad_pins=skip)
    try:
        parsed = parse_row(row, 2, POLICY, options)
    except RowError as exc:
        assert row.get("pin", "") == "" or row["pin"] not in str(exc) or len(row["pin"]) < 3
        return
    assert parsed.barcode == row["barcode"].strip()


@given(st.text(max_size=400))
def test_any_text_reads_or_reports(text: str) -> None:
    try:
        items = rows("barcode,name\n" + text)
    except ImportError_:
        return
    assert all(isinstance(i, Row | Problem) for i in items)


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_off_a_terminal_is_plain_lines() -> None:
    out = Stream(False)
    progress = Progress(out, 10, every=0.0)
    progress.update(5)
    progress.line("f.csv: line 3: bad")
    progress.finish()
    assert out.getvalue() == (
        out.getvalue().split("\n")[0] + "\nf.csv: line 3: bad\n"
    ) and out.getvalue().startswith("progress: 5/10 rows (50%)")
    assert "\r" not in out.getvalue()


def test_progress_on_a_terminal_keeps_the_bar_last() -> None:
    out = Stream(True)
    progress = Progress(out, 10)
    progress.update(10)
    progress.line("f.csv: line 3: bad")
    progress.finish()
    text = out.getvalue()
    assert "\r\x1b[Kf.csv: line 3: bad\n[" in text and text.endswith(
        "rows, " + text.rsplit("rows, ", 1)[1]
    )
