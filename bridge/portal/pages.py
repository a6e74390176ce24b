"""My Account: sign in, the account page, Modify PIN, sign out.

Every PIN check is the core's `authenticate` (the same throttle and audit as SIP2, LDAP and
RADIUS); the Modify PIN form is the core's `change_pin`, which counts the current-PIN check as a
login attempt. No page ever puts a PIN back into its HTML: a refused form comes back with its
PIN fields empty.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bridge.core.auth import ChangeResult
from bridge.core.patron import Context
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from bridge.portal import answers
from bridge.portal.state import Portal
from bridge.portal.visit import Visit

PROTOCOL = "portal"


def portal_of(request: Request) -> Portal:
    portal: Portal = request.app.state.portal
    return portal


def context(visit: Visit) -> Context:
    return Context(PROTOCOL, PROTOCOL, visit.source, visit.portal.policy)


def refused_form(visit: Visit) -> Response:
    """A POST without a valid CSRF token: refused, and nothing in it is looked at."""
    visit.portal.authenticator.audit.event("csrf_refused", source=visit.source)
    return visit.render("message.html", status=403, title="csrf.title", message="csrf.message")


async def home(request: Request) -> Response:
    visit = Visit.of(portal_of(request), request)
    return visit.redirect("/account" if visit.session else "/login")


async def login(request: Request) -> Response:
    visit = Visit.of(portal_of(request), request)
    if request.method == "GET":
        if visit.session is not None:
            return visit.redirect("/account")
        notice = "login.signed_out" if request.query_params.get("out") == "1" else None
        return visit.render("login.html", barcode="", error=None, notice=notice)
    form = await visit.form()
    if form is None:
        return refused_form(visit)
    barcode = form.get("barcode", "").strip()
    decision = await visit.portal.authenticator.authenticate(
        barcode, Secret(form.get("pin", "")), context(visit)
    )
    refusal = answers.login_message(decision.outcome)
    if refusal is None and decision.must_change:
        # A one-time PIN from the desk: no session, only the form that replaces it.
        return first_pin_page(visit, barcode, errors={})
    if refusal is None:
        visit.sign_in(barcode)
        return visit.redirect("/account")
    key, status = refusal
    return visit.render("login.html", status=status, barcode=barcode, error=key, notice=None)


async def account(request: Request) -> Response:
    visit = Visit.of(portal_of(request), request)
    if visit.session is None:
        return visit.redirect("/login")
    try:
        patron = await visit.portal.authenticator.lookup(visit.session.barcode)
    except StoreUnavailable:
        patron = None
    if patron is None:
        return visit.render(
            "message.html", status=503, title="error.title", message="error.unavailable"
        )
    today = visit.portal.authenticator.today()
    return visit.render(
        "account.html",
        patron=patron,
        expired=patron.is_expired(today),
        notice=None,
        can_change=visit.portal.can_change_pin,
        external_url=visit.portal.settings.external_pin_url,
    )


async def modify_pin(request: Request) -> Response:
    portal = portal_of(request)
    visit = Visit.of(portal, request)
    if visit.session is None:
        return visit.redirect("/login")
    if not portal.can_change_pin:
        return visit.render(
            "message.html",
            title="pin.title",
            message="pin.elsewhere",
            link=portal.settings.external_pin_url,
        )
    if request.method == "GET":
        return visit.render("pin.html", errors={})
    form = await visit.form()
    if form is None:
        return refused_form(visit)
    barcode = visit.session.barcode
    old, new, again = (Secret(form.get(k, "")) for k in ("old_pin", "new_pin", "new_again"))
    if not new.matches(again):
        return visit.render("pin.html", errors={"new_again": visit.t("pin.mismatch")})
    result = await portal.authenticator.change_pin(barcode, old, new, again, context(visit))
    if result.ok:
        # The core ended every session of this patron (on_invalidate); this browser gets a new
        # one, so only the patron's other devices are signed out.
        visit.sign_in(barcode)
        portal.notify_changed(barcode, visit.t, "pin_changed")
        return visit.render("done.html", title="pin.title", message="pin.changed", next="/account")
    errors = change_refused(visit, result)
    if result.outcome is not None and portal.sessions.get(visit.cookie) is None:
        # Too many wrong current PINs locked the card, which ended the session.
        visit.sign_out()
        return visit.render("login.html", barcode="", error="login.locked", notice=None)
    return visit.render("pin.html", errors=errors)


def change_refused(visit: Visit, result: ChangeResult) -> dict[str, str]:
    """A refused PIN change, per field: the policy's reason, or what the current-PIN check
    said."""
    if result.policy is not None:
        return {"new_pin": visit.policy_text(result.policy)}
    if result.outcome is None:
        return {"form": visit.t("error.unexpected")}
    field, key = answers.old_pin_message(result.outcome)
    return {field: visit.t(key)}


def first_pin_page(visit: Visit, barcode: str, errors: dict[str, str]) -> Response:
    """The only page a one-time PIN opens: type it again, choose a new PIN twice."""
    return visit.render("first_pin.html", barcode=barcode, errors=errors)


async def first_pin(request: Request) -> Response:
    """Replace a one-time PIN from the desk. No session yet: the one-time PIN is checked again
    by the core's `change_pin` (throttled and audited like any sign-in), and only a changed PIN
    signs the patron in."""
    portal = portal_of(request)
    visit = Visit.of(portal, request)
    form = await visit.form()
    if form is None:
        return refused_form(visit)
    barcode = form.get("barcode", "").strip()[:64]
    old, new, again = (Secret(form.get(k, "")) for k in ("old_pin", "new_pin", "new_again"))
    if not new.matches(again):
        return first_pin_page(visit, barcode, {"new_again": visit.t("pin.mismatch")})
    result = await portal.authenticator.change_pin(barcode, old, new, again, context(visit))
    if result.ok:
        visit.sign_in(barcode)
        portal.notify_changed(barcode, visit.t, "pin_changed")
        return visit.render("done.html", title="pin.title", message="pin.changed", next="/account")
    return first_pin_page(visit, barcode, change_refused(visit, result))


async def logout(request: Request) -> Response:
    visit = Visit.of(portal_of(request), request)
    form = await visit.form()
    if form is None:
        return refused_form(visit)
    if visit.session is not None:
        visit.portal.authenticator.audit.event(
            "portal_logout", barcode=visit.session.barcode, source=visit.source
        )
    visit.sign_out()
    return visit.redirect("/login?out=1")
