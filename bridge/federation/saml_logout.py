"""SAML Single Logout (SP-initiated, HTTP-Redirect and HTTP-POST; and from the bridge).

An SP's LogoutRequest must be signed (a query signature over HTTP-Redirect, an enveloped one
over HTTP-POST) by a certificate in its metadata: an unsigned one could sign any patron out.
The IdP then ends every single sign-on session that gave this SP that NameID (and the
browser's own, when its cookie came along), sends a signed LogoutRequest to each *other* SP
that was given an assertion in those sessions and has a logout endpoint (one after the other,
through the browser; their LogoutResponses come back here with our RelayState), and finally
answers the SP that asked with a signed LogoutResponse on its SingleLogoutService.
`/saml/logout` does the same round for a patron who signs out at the bridge itself.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.request import IncorrectlySigned
from saml2.s_utils import UnsupportedBinding
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bridge.federation.provider import Provider
from bridge.federation.saml import (
    Refused,
    check_signature,
    post_form,
    problem,
    refuse,
    saml_message,
    signature_of,
    visit_of,
)
from bridge.federation.saml_server import IdentityProvider, Loaded, Participant
from bridge.portal.visit import Visit

CHAIN_SECONDS = 300.0  # how long the other SPs have to answer our LogoutRequests


@dataclass(slots=True)
class Chain:
    """A logout going round the session's SPs before the one that asked is answered."""

    requester: str | None  # None: the patron signed out at the bridge itself
    request: Any  # its LogoutRequest, as pysaml2 parsed it
    binding: str
    relay_state: str
    remaining: list[Participant]


def logout_endpoint(loaded: Loaded, entity: str, prefer: str) -> tuple[str, str] | None:
    """(binding, location) of the SP's SingleLogoutService, the preferred binding first."""
    order = [prefer, *(b for b in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST) if b != prefer)]
    for binding in order:
        try:
            services = loaded.server.metadata.single_logout_service(entity, binding, "spsso")
        except UnsupportedBinding:  # pysaml2's answer for "none over this binding"
            continue
        if services:
            return binding, str(services[0]["location"])
    return None


def send(
    visit: Visit, loaded: Loaded, binding: str, location: str, xml: str, relay: str, *, field: str
) -> Response:
    """Our signed message to an SP: a redirect with a query signature, or a form to post."""
    if binding == BINDING_HTTP_REDIRECT:
        info = loaded.server.apply_binding(
            BINDING_HTTP_REDIRECT,
            xml,
            location,
            relay,
            response=field == "SAMLResponse",
            sign=True,
            sigalg=SIG_RSA_SHA256,
        )
        target = dict(info["headers"])["Location"]
        return visit.finish(RedirectResponse(target, status_code=303))
    return post_form(visit, location, xml, relay, field=field, title="oidc.signed_out_title")


async def slo(request: Request) -> Response:
    """A LogoutRequest from an SP, or an SP's LogoutResponse to ours (over either binding)."""
    idp: IdentityProvider = request.app.state.saml
    p: Provider = request.app.state.provider
    visit = visit_of(request)
    which, raw, relay, binding, query = await saml_message(request)
    if raw is None or len(relay) > 1024:
        return problem(visit, "saml.bad_logout")
    if which == "SAMLResponse":
        return await _answered(visit, idp, p, relay)
    loaded = idp.current

    def check() -> tuple[str, Any]:
        try:
            parsed = loaded.server.parse_logout_request(raw, binding, **signature_of(query))
        except IncorrectlySigned:
            raise Refused("saml.bad_logout") from None
        message = parsed.message
        entity = message.issuer.text if message.issuer is not None else None
        if entity not in loaded.sps:
            raise Refused("oidc.unknown_client")
        try:
            check_signature(idp, loaded, entity, binding, message, query, required=True)
        except Refused:
            raise Refused("saml.bad_logout") from None
        return entity, message

    try:
        entity, message = await run_in_threadpool(check)
    except Refused as exc:
        return refuse(p, visit, str(exc.args[0]), "saml_logout_refused")
    except Exception:  # noqa: BLE001 - pysaml2 raises many types for a bad message
        return refuse(p, visit, "saml.bad_logout", "saml_logout_refused")
    others = _end_sessions(visit, idp, p, entity, message)
    chain = Chain(entity, message, binding, relay, others)
    return await _next(visit, idp, p, chain)


def _end_sessions(
    visit: Visit, idp: IdentityProvider, p: Provider, entity: str, message: Any
) -> list[Participant]:
    """End the SSO sessions this logout is about; the other SPs they involved, once each."""
    name = message.name_id.text if message.name_id is not None else None
    cookies = {visit.cookie} if visit.session is not None else set()
    for cookie, (_, parts) in list(idp.sessions.items.items()):
        if any(t.entity == entity and t.name_id.text == name for t in parts):
            cookies.add(cookie)
    others: dict[str, Participant] = {}
    for cookie in cookies:
        _, parts = idp.sessions.items.pop(cookie, (0.0, []))
        others.update((t.entity, t) for t in parts if t.entity != entity)
        session = p.portal.sessions.get(cookie)
        p.portal.authenticator.audit.event(
            "saml_logout",
            barcode=session.barcode if session is not None else "",
            client=entity,
            source=visit.source,
        )
        p.portal.sessions.end(cookie)
    if visit.cookie in cookies:
        visit.sign_out()
    return list(others.values())


async def _next(visit: Visit, idp: IdentityProvider, p: Provider, chain: Chain) -> Response:
    """Ask the next SP of the session to log out, or answer the SP that asked."""
    loaded = idp.current
    while chain.remaining:
        them = chain.remaining.pop(0)
        if them.entity not in loaded.sps:  # its metadata is gone since it signed in
            continue
        target = logout_endpoint(loaded, them.entity, BINDING_HTTP_REDIRECT)
        if target is None:
            continue
        binding, location = target
        chain_id = secrets.token_urlsafe(24)
        now = p.clock()
        idp.logouts.sweep(now)
        idp.logouts.put(chain_id, now + CHAIN_SECONDS, chain)

        def ask(binding: str = binding, location: str = location, them: Participant = them) -> str:
            _, message = loaded.server.create_logout_request(
                location,
                them.entity,
                name_id=them.name_id,
                session_indexes=[them.session_index],
                sign=binding == BINDING_HTTP_POST,
                sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
            )
            return str(message)

        xml = await run_in_threadpool(ask)
        return send(visit, loaded, binding, location, xml, chain_id, field="SAMLRequest")
    target = None
    if chain.requester is not None and chain.requester in loaded.sps:
        target = logout_endpoint(loaded, chain.requester, chain.binding)
    if target is None:
        return visit.render(
            "message.html", title="oidc.signed_out_title", message="login.signed_out"
        )
    binding, location = target

    def answer() -> str:
        response = loaded.server.create_logout_response(
            chain.request,
            [binding],
            sign=binding == BINDING_HTTP_POST,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
        )
        return str(response)

    xml = await run_in_threadpool(answer)
    return send(visit, loaded, binding, location, xml, chain.relay_state, field="SAMLResponse")


async def everywhere(request: Request) -> Response:
    """The patron signs out at the bridge (`/saml/logout`): its session ends, and every SP
    that was given an assertion in it is sent a LogoutRequest, one after the other."""
    idp: IdentityProvider = request.app.state.saml
    p: Provider = request.app.state.provider
    visit = visit_of(request)
    _, parts = idp.sessions.items.pop(visit.cookie, (0.0, []))
    if visit.session is not None:
        p.portal.authenticator.audit.event(
            "saml_logout", barcode=visit.session.barcode, client="", source=visit.source
        )
    visit.sign_out()
    return await _next(visit, idp, p, Chain(None, None, BINDING_HTTP_REDIRECT, "", parts))


async def _answered(visit: Visit, idp: IdentityProvider, p: Provider, relay: str) -> Response:
    """Another SP's LogoutResponse: carry on round the session (ours is the RelayState)."""
    chain = idp.logouts.get(relay, p.clock())
    if chain is None:
        return problem(visit, "saml.bad_logout")
    idp.logouts.items.pop(relay, None)
    return await _next(visit, idp, p, chain)
