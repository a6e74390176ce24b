"""Forgot your PIN? The request form and the page the emailed link opens.

The request page answers the same text, status and time whether or not the card exists or has
an email: the lookup, the token and the email happen in a background task after the answer is
ready. Requests are capped per source address (a refusal here depends only on the address, so
it reveals nothing about cards) and per card (silently: the page still says the same). The link
is `base_url` + `/reset?token=…`, never the request's Host. Pages carry `Referrer-Policy:
no-referrer` (set for every page by the security middleware) and load nothing from elsewhere.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from bridge.core.auth import valid_barcode
from bridge.core.patron import Outcome, Patron
from bridge.core.secret import Secret
from bridge.portal.i18n import Translator
from bridge.portal.mail import reset_message
from bridge.portal.pages import portal_of, refused_form
from bridge.portal.state import Portal, log
from bridge.portal.visit import Visit


def reset_link(portal: Portal, token: str) -> str:
    return portal.settings.base_url.rstrip("/") + "/reset?" + urlencode({"token": token})


async def forgot(request: Request) -> Response:
    portal = portal_of(request)
    visit = Visit.of(portal, request)
    if not portal.can_reset:
        return visit.render("forgot_desk.html", external_url=portal.settings.external_pin_url)
    if request.method == "GET":
        return visit.render("forgot.html", barcode="")
    form = await visit.form()
    if form is None:
        return refused_form(visit)
    if not portal.per_source.allow(visit.source, portal.clock()):
        portal.authenticator.audit.event("reset_refused", source=visit.source, scope="source")
        return visit.render(
            "message.html", status=429, title="forgot.title", message="forgot.too_many"
        )
    barcode = form.get("barcode", "").strip()
    if not valid_barcode(barcode):
        # Not a card: audited by size only, and never a key in the per-card table (hostile
        # values would fill it). The page is the same as for any card.
        portal.authenticator.audit.event(
            "reset_requested", barcode=barcode, source=visit.source, result="malformed"
        )
        return visit.render("forgot_sent.html")
    portal.spawn(_send_link(portal, barcode, visit.t, visit.source))
    return visit.render("forgot_sent.html")


async def _send_link(portal: Portal, barcode: str, t: Translator, source: str) -> None:
    """The part of a reset request that depends on the card, done after the page answered."""
    if not portal.per_card.allow(barcode, portal.clock()):
        portal.authenticator.audit.event(
            "reset_requested", barcode=barcode, source=source, result="rate_limited"
        )
        return

    def email_allowed(patron: Patron) -> bool:
        return portal.per_email.allow((patron.email or "").lower(), portal.clock())

    issued = await portal.reset.issue(barcode, source=source, allow=email_allowed)
    if issued is None:
        return
    message = reset_message(
        t,
        sender=portal.sender,
        to=issued.email,
        name=issued.patron.given_name or issued.patron.name,
        library=portal.settings.library_name,
        link=reset_link(portal, issued.token),
        minutes=portal.settings.reset_token_minutes,
    )
    await portal.send_mail(message, "reset_link")


async def reset(request: Request) -> Response:
    portal = portal_of(request)
    visit = Visit.of(portal, request)
    if portal.bad_links.full(visit.source, portal.clock()):
        return visit.render(
            "message.html", status=429, title="reset.title", message="forgot.too_many"
        )
    if request.method == "GET":
        token = request.query_params.get("token", "")
        if not await portal.reset.check(token):
            return _invalid(visit)
        return visit.render("reset.html", token=token, errors={})
    form = await visit.form()
    if form is None:
        return refused_form(visit)
    token = form.get("token", "")
    new, again = Secret(form.get("new_pin", "")), Secret(form.get("new_again", ""))
    if not new.matches(again):
        return visit.render(
            "reset.html", token=token, errors={"new_again": visit.t("pin.mismatch")}
        )
    result, patron = await portal.reset.redeem(token, new, again, source=visit.source)
    if result.ok:
        if patron is not None:
            portal.notify_changed(patron.barcode, visit.t, "pin_reset")
        visit.sign_out()  # a reset ends sessions; the patron signs in normally with the new PIN
        return visit.render("done.html", title="reset.title", message="reset.done", next="/login")
    if result.policy is not None:
        return visit.render(
            "reset.html", token=token, errors={"new_pin": visit.policy_text(result.policy)}
        )
    if result.outcome is Outcome.STORE_UNAVAILABLE:
        log.warning("portal_reset_unavailable")
        return visit.render(
            "message.html", status=503, title="error.title", message="error.unavailable"
        )
    return _invalid(visit)


def _invalid(visit: Visit) -> Response:
    visit.portal.bad_links.allow(visit.source, visit.portal.clock())
    return visit.render(
        "message.html",
        status=400,
        title="reset.title",
        message="reset.invalid",
        link="/forgot",
        link_label="reset.ask_again",
    )
