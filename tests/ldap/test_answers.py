"""Every Outcome has one LDAP bind answer; wrong PIN and unknown card are indistinguishable."""

from __future__ import annotations

from bridge.core.patron import Decision, Outcome
from bridge.ldap import answers as rc
from bridge.ldap.messages import PPOLICY_LOCKED


def test_every_outcome_is_mapped() -> None:
    for outcome in Outcome:
        answer = rc.bind_answer(Decision(outcome))
        expected = {
            Outcome.ACCEPTED: rc.SUCCESS,
            Outcome.STORE_UNAVAILABLE: rc.UNAVAILABLE,
            Outcome.BUSY: rc.BUSY,
        }.get(outcome, rc.INVALID_CREDENTIALS)
        assert answer.code == expected, outcome


def test_guessers_learn_nothing_from_the_answer() -> None:
    bad = rc.bind_answer(Decision(Outcome.BAD_PIN))
    assert bad == rc.bind_answer(Decision(Outcome.UNKNOWN_CARD))
    assert bad == rc.bind_answer(Decision(Outcome.BAD_INPUT))


def test_locked_card_carries_ppolicy_error() -> None:
    answer = rc.bind_answer(Decision(Outcome.CARD_LOCKED), "data 775")
    assert (answer.code, answer.diagnostic, answer.ppolicy_error) == (
        49,
        "data 775",
        PPOLICY_LOCKED,
    )


def test_change_codes() -> None:
    assert rc.change_code(None) == rc.UNWILLING_TO_PERFORM
    assert rc.change_code(Outcome.BAD_PIN) == rc.INVALID_CREDENTIALS
    assert rc.change_code(Outcome.STORE_UNAVAILABLE) == rc.UNAVAILABLE
    assert rc.change_code(Outcome.BUSY) == rc.BUSY


def test_busy_is_busy_51() -> None:
    """Shed unchecked: resultCode 51 tells a client to retry (another server, or later)."""
    answer = rc.bind_answer(Decision(Outcome.BUSY))
    assert (answer.code, answer.ppolicy_error) == (51, None)
