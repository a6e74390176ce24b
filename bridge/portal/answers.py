"""Every core answer mapped to what the pages say, in one place.

Like the protocol front ends' answers.py: one exhaustive `match` per question, ending in
`assert_never`, so a new Outcome fails the type check until the pages decide what to say.
A wrong PIN and an unknown card read the same, so the login form reveals no card numbers.
"""

from __future__ import annotations

from typing import assert_never

from bridge.core.patron import Outcome
from bridge.core.pin import PolicyResult


def login_message(outcome: Outcome) -> tuple[str, int] | None:
    """(message key, HTTP status) for a refused login; None when the patron is let in."""
    match outcome:
        case Outcome.ACCEPTED:
            return None
        case Outcome.BAD_PIN | Outcome.UNKNOWN_CARD | Outcome.BAD_INPUT:
            return "login.failed", 200
        case Outcome.CARD_LOCKED:
            return "login.locked", 200
        case Outcome.CARD_EXPIRED:
            return "login.expired", 200
        case Outcome.CARD_BLOCKED:
            return "login.blocked", 200
        case Outcome.FINES_OVER_LIMIT:
            return "login.fines", 200
        case Outcome.PIN_MUST_CHANGE:
            # Reached only off the PIN pages (OIDC/SAML sign-in) or for an expired one.
            return "login.must_change", 200
        case Outcome.STORE_UNAVAILABLE | Outcome.BUSY:
            return "error.unavailable", 503
        case _:
            assert_never(outcome)


def old_pin_message(outcome: Outcome) -> tuple[str, str]:
    """(field, message key) when the current PIN given on the Modify PIN form is refused."""
    match outcome:
        case Outcome.BAD_PIN | Outcome.UNKNOWN_CARD | Outcome.BAD_INPUT:
            return "old_pin", "pin.old_wrong"
        case Outcome.CARD_LOCKED:
            return "old_pin", "login.locked"
        case Outcome.PIN_MUST_CHANGE:
            return "old_pin", "login.must_change"
        case Outcome.STORE_UNAVAILABLE | Outcome.BUSY:
            return "form", "error.unavailable"
        case (
            Outcome.ACCEPTED
            | Outcome.CARD_EXPIRED
            | Outcome.CARD_BLOCKED
            | Outcome.FINES_OVER_LIMIT
        ):
            # The right PIN: a standing refusal never stops a PIN change (core goes on).
            return "form", "error.unexpected"
        case _:
            assert_never(outcome)


def policy_message(policy: PolicyResult) -> str:
    """The message key for a PIN the library's rules refuse (the core's policy codes)."""
    known = {"empty", "not_digits", "length", "repeating", "common", "same_as_old"}
    return f"policy.{policy.code}" if policy.code in known else "policy.other"
