"""Every authenticator outcome as a RADIUS answer, in one place.

Pure. One `match` over `Outcome` ending in `assert_never`, so a new outcome fails type checking
until it is mapped here. Reply-Message texts are shown by some captive portals: they say what
the patron can do, and never tell a guesser whether the card number exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, assert_never

from bridge.core.patron import ACCEPTED, Decision, Outcome
from bridge.radius.packet import ACCESS_ACCEPT, ACCESS_REJECT


@dataclass(frozen=True, slots=True)
class Answer:
    """`code` None means stay silent (the NAS retries, then fails over to another server)."""

    code: int | None
    message: str
    patron_attributes: bool = False  # the client's per-category reply attributes (accept only)


NOT_RECOGNISED = "Card number or PIN not recognised."

# The answers are constants: one is picked per request, none is built.
WELCOME = Answer(ACCESS_ACCEPT, "Welcome.", patron_attributes=True)
NOT_RECOGNISED_ANSWER = Answer(ACCESS_REJECT, NOT_RECOGNISED)
LOCKED = Answer(ACCESS_REJECT, "Too many attempts. Try again later or ask staff.")
EXPIRED = Answer(ACCESS_REJECT, "Your library card has expired. Please ask staff.")
BLOCKED = Answer(ACCESS_REJECT, "Your library card is blocked. Please ask staff.")
FINES = Answer(ACCESS_REJECT, "Please see library staff about fines on your card.")
MUST_CHANGE = Answer(ACCESS_REJECT, "Please change your PIN at My Account first.")
SILENT = Answer(None, "")
SHED = Answer(None, "busy")  # too many checks pending: no answer, the NAS retries elsewhere
UNAVAILABLE = Answer(ACCESS_REJECT, "Service unavailable. Please try again shortly.")
REFUSED = Answer(ACCESS_REJECT, "This network accepts a library card number and PIN only.")


def answer(decision: Decision, store_unavailable: Literal["silent", "reject"]) -> Answer:
    if decision.outcome is ACCEPTED:  # the common case, before the match reads `Outcome.X`
        return WELCOME
    match decision.outcome:
        case Outcome.ACCEPTED:
            return WELCOME
        case Outcome.BAD_PIN | Outcome.UNKNOWN_CARD | Outcome.BAD_INPUT:
            return NOT_RECOGNISED_ANSWER
        case Outcome.CARD_LOCKED:
            return LOCKED
        case Outcome.CARD_EXPIRED:
            return EXPIRED
        case Outcome.CARD_BLOCKED:
            return BLOCKED
        case Outcome.FINES_OVER_LIMIT:
            return FINES
        case Outcome.PIN_MUST_CHANGE:
            return MUST_CHANGE
        case Outcome.STORE_UNAVAILABLE:
            return SILENT if store_unavailable == "silent" else UNAVAILABLE
        case Outcome.BUSY:
            return SHED
        case _:
            assert_never(decision.outcome)


def refusal() -> Answer:
    """A request the server will not check at all (CHAP, MS-CHAP, EAP, no password)."""
    return REFUSED
