"""What the bridge answers over SIP2, in one place: Outcome/Patron → 24/64, and 98/36.

The whole behaviour of a patron check reads in `check_answer`'s one `match`, which ends in
`assert_never` so a new `Outcome` cannot ship unmapped. The rules, from how real clients read
the reply (see docs/sip2.md):

- CQ is always present and is `Y` only for a verified PIN (Libki and others treat any reply
  without the substring `CQY` as a bad PIN; a blank CQ once let made-up barcodes log in).
- Unknown card: status `YYYY` + 10 blanks, AE empty, BLN, CQN.
- Wrong PIN: BLY CQN; or, per account, byte-for-byte the unknown-card answer.
- Right PIN but the account's policy refuses the patron (blocked, expired, fines): CQY with the
  status flags and a screen message (self-checks act on the flags); per account, CQN instead
  for clients that read only CQ.
- Locked card and store down: CQN with a screen message saying why; BLN because nothing was
  verified (a lock is kept for unknown cards too, so BLY would reveal nothing true).
- Screen messages never contain `CQY` or `BLN`, whatever a store's block reason says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import assert_never

from bridge.core.patron import ClientPolicy, Decision, Outcome, Patron
from bridge.sip2.codec import clean, sip_day
from bridge.sip2.messages import AcsStatus, EndSessionResponse, PatronRequest, PatronResponse

UNKNOWN_STATUS = "YYYY" + " " * 10
NO_CIRCULATION_COUNTS = ("0000",) * 6

CARD_UNKNOWN = "Card not recognised."
CARD_OR_PIN_UNKNOWN = "Card or PIN not recognised."
WRONG_PIN = "Wrong PIN."
NO_PIN = "PIN required."
LOCKED = "This card is temporarily locked after too many wrong PINs. Try again later or ask staff."
UNAVAILABLE = "The library system is not available right now. Please try again later."
BLOCKED = "This card is blocked"
EXPIRED = "This card has expired"
FINES = "Fines are over the limit"
MUST_CHANGE = "Please change your PIN at My Account first."


@dataclass(frozen=True, slots=True)
class AnswerOptions:
    """The per-account knobs `check_answer` reads (from `Sip2Account`)."""

    institution: str = ""
    currency: str = "USD"
    wrong_pin_as_unknown: bool = False
    policy_refusal_cqn: bool = False
    hold_limit: int | None = None
    overdue_limit: int | None = None
    charged_limit: int | None = None


def screen(text: str) -> str:
    """Screen-message text that no client's substring search can misread."""
    while "CQY" in text or "BLN" in text:
        text = text.replace("CQY", "CQ Y").replace("BLN", "BL N")
    return text


def patron_status(patron: Patron, policy: ClientPolicy, today: dt.date) -> str:
    """The 14 Y/blank flags derived from the record: `Y` = privilege denied."""
    flags = [" "] * 14
    if patron.blocked or patron.is_expired(today):
        flags[0] = flags[1] = flags[2] = flags[3] = "Y"
    if patron.blocked and patron.blocked_reason and "lost" in patron.blocked_reason.lower():
        flags[4] = "Y"
    if policy.fines_limit is not None and patron.fines > policy.fines_limit:
        flags[0] = flags[10] = "Y"
    return "".join(flags)


def _institution(request: PatronRequest, options: AnswerOptions) -> str:
    return options.institution or request.institution


def _limit(value: int | None) -> str:
    return "" if value is None else f"{value:04d}"


def unknown(request: PatronRequest, date: str, options: AnswerOptions, text: str) -> PatronResponse:
    """The answer for a card we do not (or will not admit to) know."""
    return PatronResponse(
        code=_response_code(request),
        patron_status=UNKNOWN_STATUS,
        date=date,
        institution=_institution(request, options),
        barcode=request.barcode,
        name="",
        valid_patron=False,
        valid_pin=False,
        screen_messages=(screen(text),),
    )


def known(
    request: PatronRequest,
    patron: Patron,
    *,
    pin_ok: bool,
    text: str,
    date: str,
    today: dt.date,
    policy: ClientPolicy,
    options: AnswerOptions,
) -> PatronResponse:
    """The answer for a card that exists: its record, BLY, and CQ as given."""
    return PatronResponse(
        code=_response_code(request),
        patron_status=patron_status(patron, policy, today),
        date=date,
        institution=_institution(request, options),
        barcode=request.barcode,
        name=patron.name,
        valid_patron=True,
        valid_pin=pin_ok,
        currency=options.currency,
        fees=f"{patron.fines:.2f}",
        fee_limit="" if policy.fines_limit is None else f"{policy.fines_limit:.2f}",
        hold_limit=_limit(options.hold_limit),
        overdue_limit=_limit(options.overdue_limit),
        charged_limit=_limit(options.charged_limit),
        email=patron.email or "",
        expires=sip_day(patron.expires) if patron.expires else "",
        category=patron.category,
        screen_messages=(screen(text),) if text else (),
        counts=NO_CIRCULATION_COUNTS,
    )


def _response_code(request: PatronRequest) -> str:
    return "64" if request.code == "63" else "24"


def check_answer(
    request: PatronRequest,
    decision: Decision,
    *,
    date: str,
    today: dt.date,
    policy: ClientPolicy,
    options: AnswerOptions,
) -> PatronResponse:
    """23/63 with a PIN → 24/64, by outcome."""
    patron = decision.patron
    hidden_text = CARD_OR_PIN_UNKNOWN if options.wrong_pin_as_unknown else CARD_UNKNOWN

    def refused(text: str, pin_ok: bool | None = None) -> PatronResponse:
        """The patron's record with CQN/CQY (`policy_refusal_cqn` unless `pin_ok` says)."""
        assert patron is not None
        return known(
            request,
            patron,
            pin_ok=not options.policy_refusal_cqn if pin_ok is None else pin_ok,
            text=text,
            date=date,
            today=today,
            policy=policy,
            options=options,
        )

    match decision.outcome:
        case Outcome.ACCEPTED:
            assert patron is not None
            return known(
                request,
                patron,
                pin_ok=True,
                text="",
                date=date,
                today=today,
                policy=policy,
                options=options,
            )
        case Outcome.CARD_BLOCKED:
            reason = patron.blocked_reason if patron is not None else None
            return refused(f"{BLOCKED}: {reason}." if reason else f"{BLOCKED}.")
        case Outcome.CARD_EXPIRED:
            return refused(f"{EXPIRED}.")
        case Outcome.FINES_OVER_LIMIT:
            return refused(f"{FINES}.")
        case Outcome.BAD_PIN:
            if options.wrong_pin_as_unknown or patron is None:
                return unknown(request, date, options, hidden_text)
            return refused(WRONG_PIN, pin_ok=False)
        case Outcome.UNKNOWN_CARD | Outcome.BAD_INPUT:
            return unknown(request, date, options, hidden_text)
        case Outcome.CARD_LOCKED:
            return unknown(request, date, options, LOCKED)
        case Outcome.PIN_MUST_CHANGE:
            # A one-time PIN from the desk: never CQY here, whatever policy_refusal_cqn says.
            if patron is None:
                return unknown(request, date, options, MUST_CHANGE)
            return refused(MUST_CHANGE, pin_ok=False)
        case Outcome.STORE_UNAVAILABLE | Outcome.BUSY:
            return unknown(request, date, options, UNAVAILABLE)
        case _:
            assert_never(decision.outcome)


def lookup_answer(
    request: PatronRequest,
    patron: Patron | None,
    *,
    date: str,
    today: dt.date,
    policy: ClientPolicy,
    options: AnswerOptions,
) -> PatronResponse:
    """23/63 without a PIN (AD absent or empty): the record if the card exists, always CQN."""
    if patron is None or options.wrong_pin_as_unknown:
        text = CARD_OR_PIN_UNKNOWN if options.wrong_pin_as_unknown else CARD_UNKNOWN
        return unknown(request, date, options, text)
    return known(
        request,
        patron,
        pin_ok=False,
        text=NO_PIN,
        date=date,
        today=today,
        policy=policy,
        options=options,
    )


def unavailable(request: PatronRequest, date: str, options: AnswerOptions) -> PatronResponse:
    return unknown(request, date, options, UNAVAILABLE)


def acs_status(
    *,
    online: bool,
    date: str,
    institution: str,
    supported: str,
    circulation: frozenset[str],
    library_name: str = "",
    location: str = "",
) -> AcsStatus:
    """98: online status from the store's health; BX and the ok flags from what this
    deployment really answers (circulation only when an upstream handles it)."""
    return AcsStatus(
        online=online,
        date=date,
        institution=institution,
        supported=supported,
        checkin_ok="09" in circulation,
        checkout_ok="11" in circulation,
        renewal_policy="29" in circulation,
        status_update_ok=False,
        offline_ok=False,
        timeout_period="030",
        retries_allowed="003",
        library_name=library_name,
        terminal_location=location,
        screen_message="" if online else UNAVAILABLE,
    )


def end_session(barcode: str, institution: str, date: str) -> EndSessionResponse:
    """36: always yes; the bridge keeps no patron session, so there is nothing to fail."""
    return EndSessionResponse(True, date, institution, barcode)


def end_session_text(barcode: str, institution: str, date: str) -> str:
    """`end_session`'s message as `encode` writes it, before the trailer: 36, `Y`, the date,
    AO, AA. A session that ends with a 35 answers one per session, so it is text at once
    (tests/sip2/test_answers.py holds it to `encode(end_session(...).to_message())`)."""
    if len(date) != 18:
        date = date[:18].ljust(18)
    joined = date + institution + barcode
    if "|" in joined or not joined.isprintable():  # what `clean` would change: it must
        return f"36Y{clean(date)}AO{clean(institution)}|AA{clean(barcode)}|"
    return f"36Y{date}AO{institution}|AA{barcode}|"  # one check, not three `clean` calls
