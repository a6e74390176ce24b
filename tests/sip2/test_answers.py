"""Every Outcome's SIP2 answer, and the rules that hold for all of them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import ClientPolicy, Decision, Outcome, Patron
from bridge.core.secret import Secret
from bridge.sip2 import answers
from bridge.sip2.codec import clean, decode, encode, encode_rendered
from bridge.sip2.messages import PatronRequest, PatronResponse
from tests.pins import DEMO_PIN

TODAY = dt.date(2026, 1, 1)
DATE = "20260101    101010"
PATRON = Patron(
    "21234000000001",
    "r1",
    name="Rivera, Ana",
    email="ana@example.org",
    category="ADULT",
    expires=dt.date(2030, 12, 31),
)
POLICY = ClientPolicy()


def request(code: str = "63") -> PatronRequest:
    return PatronRequest(code, PATRON.barcode, Secret(DEMO_PIN), "MAIN")


def answer(decision: Decision, **options: object) -> PatronResponse:
    opts = answers.AnswerOptions(**options)  # type: ignore[arg-type]
    return answers.check_answer(
        request(), decision, date=DATE, today=TODAY, policy=POLICY, options=opts
    )


def decision_for(outcome: Outcome) -> Decision:
    patron = None if outcome in (Outcome.UNKNOWN_CARD, Outcome.BAD_INPUT) else PATRON
    if outcome in (Outcome.CARD_LOCKED, Outcome.STORE_UNAVAILABLE, Outcome.BUSY):
        patron = None
    pin_ok = outcome in (
        Outcome.ACCEPTED,
        Outcome.CARD_BLOCKED,
        Outcome.CARD_EXPIRED,
        Outcome.FINES_OVER_LIMIT,
    )
    return Decision(outcome, patron, "why", pin_ok=pin_ok)


@pytest.mark.parametrize("outcome", list(Outcome))
@pytest.mark.parametrize("hide", [False, True])
def test_every_outcome_has_cq_and_clean_screen(outcome: Outcome, hide: bool) -> None:
    response = answer(decision_for(outcome), wrong_pin_as_unknown=hide)
    assert response.valid_pin is not None and response.valid_patron is not None
    wire = encode(response.to_message())
    assert b"|CQ" in wire
    for text in response.screen_messages:
        assert "CQY" not in text and "BLN" not in text
    assert response.valid_pin is (
        outcome
        in (Outcome.ACCEPTED, Outcome.CARD_BLOCKED, Outcome.CARD_EXPIRED, Outcome.FINES_OVER_LIMIT)
    )


def test_unknown_card_shape() -> None:
    r = answer(decision_for(Outcome.UNKNOWN_CARD))
    assert r.patron_status == "YYYY" + " " * 10 and r.name == ""
    assert r.valid_patron is False and r.valid_pin is False


def test_wrong_pin_reveals_or_hides() -> None:
    shown = answer(decision_for(Outcome.BAD_PIN))
    assert shown.valid_patron is True and shown.valid_pin is False and shown.name
    hidden = answer(decision_for(Outcome.BAD_PIN), wrong_pin_as_unknown=True)
    unknown = answer(decision_for(Outcome.UNKNOWN_CARD), wrong_pin_as_unknown=True)
    assert hidden == unknown


def test_policy_refusal_cqn() -> None:
    r = answer(decision_for(Outcome.CARD_EXPIRED), policy_refusal_cqn=True)
    assert r.valid_pin is False and r.valid_patron is True


def test_status_flags() -> None:
    lost = Patron("1", "r", blocked=True, blocked_reason="Card LOST at desk")
    assert answers.patron_status(lost, POLICY, TODAY) == "YYYYY" + " " * 9
    fines = Patron("1", "r", fines=Decimal("10.01"))
    assert answers.patron_status(fines, POLICY, TODAY) == "Y         Y   "
    assert answers.patron_status(fines, ClientPolicy(fines_limit=None), TODAY) == " " * 14
    expired = Patron("1", "r", expires=dt.date(2025, 12, 31))
    assert answers.patron_status(expired, POLICY, TODAY) == "YYYY" + " " * 10


def test_hostile_block_reason_cannot_fake_cqy() -> None:
    evil = Patron("1", "r", blocked=True, blocked_reason="x|CQY|BLN|CQCQYY")
    r = answer(Decision(Outcome.CARD_BLOCKED, evil, "", pin_ok=True))
    wire = encode(r.to_message())
    assert wire.count(b"CQY") == 1 and b"BLN" not in wire  # only the real CQ field
    assert decode(wire[:-1]).get("CQ") == "Y"


def test_lookup_without_pin() -> None:
    opts = answers.AnswerOptions()
    r = answers.lookup_answer(
        request("23"), PATRON, date=DATE, today=TODAY, policy=POLICY, options=opts
    )
    assert r.code == "24" and r.valid_patron is True and r.valid_pin is False


def test_64_fields_and_limits() -> None:
    r = answer(decision_for(Outcome.ACCEPTED), hold_limit=5, charged_limit=20)
    m = decode(encode(r.to_message())[:-1])
    assert m.code == "64" and m.get("BZ") == "0005" and m.get("CB") == "0020"
    assert m.get("CA") == "" and not m.has("CA")
    assert m.get("PA") == "20301231" and m.get("BV") == "0.00" and m.get("CC") == "10.00"
    assert m.fixed["hold_items_count"] == "0000"


@given(st.text(max_size=40))
def test_property_screen_never_contains_markers(text: str) -> None:
    cleaned = answers.screen(text)
    assert "CQY" not in cleaned and "BLN" not in cleaned


def test_busy_reads_as_store_unavailable() -> None:
    """Shed unchecked: the store-unavailable answer (CQN, the unavailable screen message)."""
    busy = answer(decision_for(Outcome.BUSY))
    assert busy == answer(decision_for(Outcome.STORE_UNAVAILABLE))
    assert busy.valid_pin is False


@given(
    st.text(max_size=12),
    st.text(max_size=12),
    st.sampled_from(["20240101    101010", "", "2024", "20240101    1010101234", "2024|0101"]),
)
def test_end_session_text_is_what_encode_writes(barcode: str, institution: str, date: str) -> None:
    """The prepared 36 text: the same bytes as `encode` of `end_session`'s message."""
    message = answers.end_session(barcode, institution, date).to_message()
    text = answers.end_session_text(barcode, institution, date)
    for charset in ("cp850", "utf-8", "ascii"):
        assert encode_rendered(text, sequence=4, checksum=True, charset=charset) == encode(
            message, sequence=4, checksum=True, charset=charset
        )


@given(
    st.text(max_size=12),
    st.text(max_size=12),
    st.one_of(st.text(max_size=20), st.just("20240101    101010")),
)
def test_end_session_text_one_check_equals_three_cleans(
    barcode: str, institution: str, date: str
) -> None:
    """The 36's single printable check gives what cleaning each value did."""
    padded = date if len(date) == 18 else date[:18].ljust(18)
    old = f"36Y{clean(padded)}AO{clean(institution)}|AA{clean(barcode)}|"
    assert answers.end_session_text(barcode, institution, date) == old
