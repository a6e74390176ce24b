"""Every authenticator `Outcome` as an LDAP bind answer, in one place.

A bind either succeeds (0) or fails with invalidCredentials (49): a vendor must not learn from
the code whether a card exists, and the core already spends a dummy KDF on unknown cards so the
timing says nothing either. The diagnostic message may say more only once the PIN was right
(expired, blocked): that tells the patron, not a guesser. A locked card also gets the
password-policy control (accountLocked) when the client asked for it, as SSSD does. A store
that cannot answer is `unavailable` (52), so clients retry instead of telling a patron their
PIN is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, assert_never

from bridge.core.patron import Decision, Outcome
from bridge.ldap.messages import PPOLICY_CHANGE_AFTER_RESET, PPOLICY_LOCKED

SUCCESS: Final = 0
OPERATIONS_ERROR: Final = 1
PROTOCOL_ERROR: Final = 2
TIME_LIMIT_EXCEEDED: Final = 3
SIZE_LIMIT_EXCEEDED: Final = 4
COMPARE_FALSE: Final = 5
COMPARE_TRUE: Final = 6
AUTH_METHOD_NOT_SUPPORTED: Final = 7
UNAVAILABLE_CRITICAL_EXTENSION: Final = 12
CONFIDENTIALITY_REQUIRED: Final = 13
NO_SUCH_ATTRIBUTE: Final = 16
CONSTRAINT_VIOLATION: Final = 19
NO_SUCH_OBJECT: Final = 32
INVALID_DN_SYNTAX: Final = 34
INAPPROPRIATE_AUTHENTICATION: Final = 48
INVALID_CREDENTIALS: Final = 49
INSUFFICIENT_ACCESS: Final = 50
BUSY: Final = 51
UNAVAILABLE: Final = 52
UNWILLING_TO_PERFORM: Final = 53
OTHER: Final = 80


@dataclass(frozen=True, slots=True)
class BindAnswer:
    code: int
    diagnostic: str = ""
    ppolicy_error: int | None = None  # sent only when the request carried the ppolicy control


# One per outcome, picked per bind rather than built (the locked one carries a configured text).
BOUND = BindAnswer(SUCCESS)
REFUSED = BindAnswer(INVALID_CREDENTIALS)
EXPIRED = BindAnswer(INVALID_CREDENTIALS, "card expired")
BLOCKED = BindAnswer(INVALID_CREDENTIALS, "card blocked")
FINES = BindAnswer(INVALID_CREDENTIALS, "fines over the limit")
UNAVAILABLE_ANSWER = BindAnswer(UNAVAILABLE, "patron records are unavailable; try again")
BUSY_ANSWER = BindAnswer(BUSY, "too many PIN checks in progress; try again")
MUST_CHANGE = BindAnswer(
    INVALID_CREDENTIALS, "PIN must be changed at My Account", PPOLICY_CHANGE_AFTER_RESET
)


def bind_answer(decision: Decision, locked_message: str = "account locked") -> BindAnswer:
    outcome = decision.outcome
    match outcome:
        case Outcome.ACCEPTED:
            return BOUND
        case Outcome.BAD_PIN | Outcome.UNKNOWN_CARD | Outcome.BAD_INPUT:
            return REFUSED
        case Outcome.CARD_LOCKED:
            return BindAnswer(INVALID_CREDENTIALS, locked_message, PPOLICY_LOCKED)
        case Outcome.CARD_EXPIRED:
            return EXPIRED
        case Outcome.CARD_BLOCKED:
            return BLOCKED
        case Outcome.FINES_OVER_LIMIT:
            return FINES
        case Outcome.PIN_MUST_CHANGE:
            return MUST_CHANGE
        case Outcome.STORE_UNAVAILABLE:
            return UNAVAILABLE_ANSWER
        case Outcome.BUSY:
            return BUSY_ANSWER
        case _:
            assert_never(outcome)


def change_code(outcome: Outcome | None) -> int:
    """Password Modify refused by the core: the old-PIN check's outcome as a result code."""
    if outcome is None:
        return UNWILLING_TO_PERFORM
    answer = bind_answer(Decision(outcome))
    return UNWILLING_TO_PERFORM if answer.code == SUCCESS else answer.code
