"""Every core outcome has a page answer; a wrong PIN and an unknown card read the same."""

from __future__ import annotations

from bridge.core.patron import Outcome
from bridge.core.pin import PinPolicy
from bridge.portal import answers
from bridge.portal.i18n import load_catalogs


def test_every_outcome_is_mapped_to_an_existing_message() -> None:
    english = load_catalogs()["en"]
    for outcome in Outcome:
        login = answers.login_message(outcome)
        assert (login is None) == (outcome is Outcome.ACCEPTED)
        if login is not None:
            assert login[0] in english
        assert answers.old_pin_message(outcome)[1] in english
    assert answers.login_message(Outcome.BAD_PIN) == answers.login_message(Outcome.UNKNOWN_CARD)


def test_busy_is_503() -> None:
    assert answers.login_message(Outcome.BUSY) == ("error.unavailable", 503)
    assert answers.old_pin_message(Outcome.BUSY) == ("form", "error.unavailable")


def test_every_policy_code_has_a_message() -> None:
    english = load_catalogs()["en"]
    policy = PinPolicy(blocklist=frozenset({"2580"}))
    for candidate, old in (
        ("", None),
        ("12a4", None),
        ("123", None),
        ("2222", None),
        ("2580", None),
        ("4826", "4826"),
    ):
        verdict = policy.check(candidate, old=old)
        assert not verdict.ok
        key = answers.policy_message(verdict)
        assert key in english and key != "policy.other", verdict.code
