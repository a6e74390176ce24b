"""The two other ways a desk reset ends, after the same ID check as the staff-typed reset:

- a one-time random PIN (`bridge.core.one_time`): shown once on a printable slip, never again,
  stored hashed; the patron must change it at the next My Account sign-in, and until then
  SIP2, LDAP, RADIUS and OIDC/SAML refuse it;
- the patron-facing step: the page turns into a screen for the patron (no staff or card
  details, large fields, keyboard only), the patron types the new PIN twice and reads the
  policy's reasons in the patron pages' wording, then the desk view comes back with a
  confirmation.

The hand-over travels in the patron's form as a sealed token (AES-GCM under a key derived from
the desk's CSRF key, bound to the staff session's cookie, good for `HANDOVER_SECONDS`): any
worker or host that shares the session store can open it, the patron's page shows and posts no
readable card number, and a token from another session or past its time opens nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from starlette.requests import Request
from starlette.responses import Response

from bridge.core import one_time
from bridge.core.secret import Secret
from bridge.staff.pages import (
    CardAction,
    audit_reset,
    card_action,
    card_page,
    card_path,
    change_errors,
    check_errors,
    gate,
    patron_of,
)
from bridge.staff.roles import Action
from bridge.staff.visit import StaffVisit

HANDOVER_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Handover:
    """A reset handed to the patron: which card, the check staff confirmed, until when."""

    barcode: str
    check: str
    until: float


async def checked(request: Request) -> tuple[CardAction, str] | Response:
    """A reset POST that passed the gate, on a card, with the check the rule asks for; else
    the page that refuses it."""
    target = await card_action(request, Action.RESET_PIN)
    if not isinstance(target, CardAction):
        return target
    check = target.form.get("check", "")
    errors = check_errors(target.visit, target.patron, check)
    if errors:
        return await card_page(target.visit, target.patron, errors=errors, check=check)
    return target, check


async def issue_one_time(request: Request) -> Response:
    found = await checked(request)
    if not isinstance(found, tuple):
        return found
    (visit, _form, staff, patron), check = found
    auth = visit.desk.authenticator
    actor = f"staff:{staff.name}@{staff.branch}"
    result, pin = await auth.issue_one_time_pin(patron.barcode, actor=actor)
    if not result.ok:
        return await card_page(visit, patron, errors=change_errors(visit, result), check=check)
    audit_reset(visit, staff, patron, check, "one_time")
    visit.desk.notify_changed(patron, visit.t)
    until = one_time.expires_at(dt.datetime.now(dt.UTC), auth.pin_policy).astimezone()
    links = visit.desk.links
    # The only response that ever carries this PIN: a POST answer, never cached (the security
    # headers say no-store), never in a URL or a log.
    return visit.render(
        "slip.html",
        patron=patron,
        pin=pin,
        until=until.strftime("%Y-%m-%d %H:%M"),
        portal_url=links.base_url if links is not None else None,
        path=card_path(patron.barcode),
    )


async def hand_over(request: Request) -> Response:
    """Staff confirmed the check: the patron's screen comes up."""
    found = await checked(request)
    if not isinstance(found, tuple):
        return found
    (visit, _form, _staff, patron), check = found
    until = visit.desk.clock() + HANDOVER_SECONDS
    return _patron_screen(visit, seal(visit, Handover(patron.barcode, check, until)), errors={})


def _fernet(visit: StaffVisit) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(visit.desk.sessions.derived_key("staff-handover")))


def _session_tag(visit: StaffVisit) -> str:
    return hashlib.sha256(b"handover|" + visit.cookie.encode()).hexdigest()


def seal(visit: StaffVisit, handover: Handover) -> str:
    """The hand-over as an opaque token (Fernet: AES and HMAC) bound to this staff session."""
    body = [_session_tag(visit), handover.barcode, handover.check, handover.until]
    return _fernet(visit).encrypt(json.dumps(body).encode()).decode("ascii")


def unseal(visit: StaffVisit, token: str) -> Handover | None:
    """The hand-over in `token`, or None: tampered, another session's, malformed, or late."""
    try:
        tag, barcode, check, until = json.loads(_fernet(visit).decrypt(token.encode("ascii")))
    except (ValueError, TypeError, InvalidToken):
        return None
    if not isinstance(tag, str) or not hmac.compare_digest(tag, _session_tag(visit)):
        return None
    if not isinstance(barcode, str) or check not in ("photo_id", "card"):
        return None
    if not isinstance(until, float | int) or until < visit.desk.clock():
        return None
    return Handover(barcode, check, float(until))


def _patron_screen(
    visit: StaffVisit, token: str, errors: dict[str, str], status: int = 200
) -> Response:
    return visit.render("patron_pin.html", status=status, errors=errors, handover=token)


async def patron_pin(request: Request) -> Response:
    """The patron's screen posts here: the new PIN twice."""
    visit, form, refusal = await gate(request, Action.RESET_PIN)
    if refusal is not None or form is None or visit.staff is None:
        return refusal  # type: ignore[return-value]
    staff = visit.staff
    token = form.get("handover", "")
    handover = unseal(visit, token)
    if handover is None:
        return visit.render(
            "message.html",
            status=409,
            title="staff.handover_gone_title",
            message="staff.handover_gone",
        )
    if form.get("cancel"):
        return visit.redirect(card_path(handover.barcode))
    new, again = Secret(form.get("new_pin", "")), Secret(form.get("new_again", ""))
    auth = visit.desk.authenticator
    verdict = auth.pin_policy.check(new)
    if not verdict.ok:
        return _patron_screen(visit, token, {"new_pin": visit.policy_text(verdict)})
    if not new.matches(again):
        return _patron_screen(visit, token, {"new_again": visit.t("pin.mismatch")})
    patron, missing = await patron_of(visit, handover.barcode)
    if patron is None:
        return missing  # type: ignore[return-value]
    actor = f"staff:{staff.name}"
    result = await auth.set_pin(patron.barcode, new, actor=actor)
    if not result.ok:
        return _patron_screen(visit, token, change_errors(visit, result))
    audit_reset(visit, staff, patron, handover.check, "patron_typed")
    visit.desk.notify_changed(patron, visit.t)
    return visit.redirect(card_path(patron.barcode, "pin_patron"))
