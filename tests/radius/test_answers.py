"""Every outcome maps to a RADIUS answer; none but ACCEPTED ever accepts."""

from __future__ import annotations

import pytest

from bridge.core.patron import Decision, Outcome
from bridge.radius.answers import NOT_RECOGNISED, answer, refusal
from bridge.radius.packet import ACCESS_ACCEPT, ACCESS_REJECT


@pytest.mark.parametrize("outcome", list(Outcome))
@pytest.mark.parametrize("unavailable", ["silent", "reject"])
def test_every_outcome_is_mapped(outcome: Outcome, unavailable: str) -> None:
    result = answer(Decision(outcome), unavailable)  # type: ignore[arg-type]
    if outcome is Outcome.ACCEPTED:
        assert result.code == ACCESS_ACCEPT and result.patron_attributes
    elif outcome is Outcome.STORE_UNAVAILABLE and unavailable == "silent":
        assert result.code is None
    elif outcome is Outcome.BUSY:  # shed: always silent, so the NAS retries elsewhere
        assert result.code is None and result.message == "busy"
    else:
        assert result.code == ACCESS_REJECT and not result.patron_attributes
        assert result.message


def test_unknown_card_and_bad_pin_read_the_same() -> None:
    assert answer(Decision(Outcome.UNKNOWN_CARD), "silent").message == NOT_RECOGNISED
    assert answer(Decision(Outcome.BAD_PIN), "silent").message == NOT_RECOGNISED


def test_refusal_rejects() -> None:
    assert refusal().code == ACCESS_REJECT
