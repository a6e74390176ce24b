"""The consent page, for clients configured with `consent = true` in `[[oidc.clients]]`.

After the card and PIN are checked (or the patron is already signed in), such a client's
authorization waits (`Grants.wait_for_consent`, in the `[state]` backend, bound to the patron's
sign-on session) while the patron reads which service asks and what it will receive, by scope,
in their language (the page is a GET of its own, `/oidc/consent?request=...`). Allow sends the
code and remembers the answer for `consent_days` under an HMAC of record id, client and scope
set (`Provider.consent_key`): the next sign-in to the same client for the same scopes is not
asked again, unless the client sends `prompt=consent`. Deny returns `error=access_denied` to the
client (OpenID Connect Core 3.1.2.6) and remembers nothing. The page is two plain buttons in
one form: usable by keyboard alone, no script.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from bridge.federation.grants import Grant, Waiting
from bridge.federation.oidc import (
    client_of,
    error_params,
    provider_of,
    redirect_to,
    returning_to,
    send_code,
)
from bridge.federation.settings import OidcClient
from bridge.portal.visit import Visit

# The lines the page shows, in scope order (the keys are in the locale files).
SCOPE_LINES = (
    ("openid", "oidc.consent.openid"),
    ("profile", "oidc.consent.profile"),
    ("email", "oidc.consent.email"),
    ("library", "oidc.consent.library"),
)


def _session_digest(visit: Visit) -> str:
    return hashlib.sha256(visit.cookie.encode()).hexdigest()


def lines(client: OidcClient, scopes: frozenset[str]) -> list[str]:
    keys = [key for scope, key in SCOPE_LINES if scope in scopes]
    if client.subject == "barcode":  # then `sub` is the card number: say so
        keys[0] = "oidc.consent.openid_barcode"
    return keys


async def ask(visit: Visit, client: OidcClient, grant: Grant, consent_key: str) -> Response:
    """Park the authorization and send the browser to the consent page (a GET of its own, so
    a reload or the language links show it again rather than re-posting the PIN)."""
    p = provider_of(visit.request)
    waiting = Waiting(grant, _session_digest(visit), consent_key)
    rid = await p.grants.wait_for_consent(waiting)
    return visit.redirect("/oidc/consent?" + urlencode({"request": rid}))


def _problem(visit: Visit, message: str, status: int) -> Response:
    return visit.render("message.html", status=status, title="oidc.error_title", message=message)


async def _waiting_here(visit: Visit, rid: str) -> Waiting | None:
    """The authorization waiting under `rid`, if this browser's session is the one asked."""
    waiting = await provider_of(visit.request).grants.waiting(rid)
    if waiting is None or visit.session is None or waiting.session != _session_digest(visit):
        return None
    return waiting


async def answer(request: Request) -> Response:
    p = provider_of(request)
    visit = Visit.of(p.portal, request)
    if request.method == "GET":
        rid = request.query_params.get("request", "")
        shown = await _waiting_here(visit, rid)
        if shown is None:
            return _problem(visit, "oidc.expired_request", 400)
        client = client_of(p, shown.grant.request.client_id)
        response = visit.render(
            "consent.html",
            client_name=client.name or client.client_id,
            items=lines(client, shown.grant.request.scopes),
            request_id=rid,
        )
        response.headers["cache-control"] = "no-store"
        return returning_to(response, shown.grant.request)
    form = await visit.form()
    audit = p.portal.authenticator.audit
    if form is None:
        audit.event("csrf_refused", source=visit.source)
        return _problem(visit, "csrf.message", 403)
    rid = form.get("request", "")
    waiting = await _waiting_here(visit, rid)
    if waiting is None or visit.session is None:
        return _problem(visit, "oidc.expired_request", 400)
    await p.grants.answered(rid)
    auth = waiting.grant.request
    client = client_of(p, auth.client_id)
    allowed = form.get("answer") == "allow"
    audit.event(
        "oidc_consent",
        barcode=visit.session.barcode,
        client=client.client_id,
        outcome="allowed" if allowed else "denied",
        source=visit.source,
    )
    if not allowed:
        params = error_params("access_denied", "the patron declined", auth.state)
        return visit.finish(redirect_to(auth.redirect_uri, params))
    await p.grants.remember_consent(waiting.consent, p.settings.consent_days * 86400.0)
    return await send_code(visit, waiting.grant)
