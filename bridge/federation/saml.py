"""The SAML 2.0 identity provider (pysaml2, signing with Debian's xmlsec1).

AuthnRequests arrive over HTTP-Redirect or HTTP-POST from service providers whose metadata is
configured; anything else (unknown SP, unregistered ACS, a tampered or unparsable request) is
answered on our own page. A request must be signed, over either binding, when the SP's metadata
says AuthnRequestsSigned or the configuration wants it; a signature present is always checked.
The patron signs in on the same form as for OpenID Connect (the same SSO session); the signed
(and, when the SP asks, encrypted) assertion goes back over HTTP-POST by a form the patron
submits (the pages run no scripts, so the "Continue" button is the auto-post). pysaml2 is
synchronous and runs xmlsec1 as a subprocess: every call into it runs in a worker thread,
never on the loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.request import IncorrectlySigned
from saml2.sigver import verify_redirect_signature
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from bridge.core.patron import ClientPolicy, Context, Patron
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from bridge.federation import saml_pending
from bridge.federation.provider import Provider
from bridge.federation.saml_server import (
    IdentityProvider,
    Loaded,
    Participant,
    Pending,
    encryption_certs,
)
from bridge.federation.saml_settings import ServiceProvider
from bridge.portal import answers
from bridge.portal.visit import Visit

PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"  # noqa: S105
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {extra}; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def identity_of(
    p: Provider, scope: str, sp: ServiceProvider, patron: Patron, entity: str
) -> tuple[dict[str, list[str]], str]:
    """The attributes released to this SP, and the persistent (pairwise) NameID value."""
    mac = hmac.new(p.pairwise_secret, f"saml|{entity}|{patron.record_id}".encode(), hashlib.sha256)
    pairwise = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
    today = p.portal.authenticator.today()
    affiliation = "library-walk-in" if patron.is_expired(today) else "member"
    values: dict[str, list[str]] = {
        "eduPersonScopedAffiliation": [f"{affiliation}@{scope}"],
        "eduPersonTargetedID": [pairwise],
        "pairwise-id": [f"{mac.hexdigest()}@{scope}"],  # the profile allows [0-9a-zA-Z=-] only
        "displayName": [patron.name],
        "mail": [patron.email] if patron.email else [],
    }
    return {k: v for k, v in values.items() if k in sp.attributes and v}, pairwise


def visit_of(request: Request) -> Visit:
    provider: Provider = request.app.state.provider
    return Visit.of(provider.portal, request)


def problem(visit: Visit, message: str, status: int = 400) -> Response:
    return visit.render("message.html", status=status, title="oidc.error_title", message=message)


def post_form(
    visit: Visit, destination: str, message: str, relay_state: str, *, field: str, title: str
) -> Response:
    """A SAML message posted to an SP by a form the patron submits (CSP allows that target)."""
    response = visit.render(
        "saml_post.html",
        title=title,
        destination=destination,
        field=field,
        saml_message=base64.b64encode(message.encode()).decode(),
        relay_state=relay_state,
    )
    origin = destination.split("/", 3)
    response.headers["content-security-policy"] = CSP.format(extra="/".join(origin[:3]))
    return response


async def metadata(request: Request) -> Response:
    idp: IdentityProvider = request.app.state.saml
    return Response(idp.current.metadata, media_type="application/samlmetadata+xml")


async def saml_message(request: Request) -> tuple[str, str | None, str, str, dict[str, str]]:
    """(which: SAMLRequest or SAMLResponse, its value, RelayState, binding, the raw query)."""
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=10, max_part_size=64 * 1024)
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        binding, query = BINDING_HTTP_POST, {}
    else:
        fields = query = dict(request.query_params)
        binding = BINDING_HTTP_REDIRECT
    which = "SAMLRequest" if "SAMLRequest" in fields else "SAMLResponse"
    return which, fields.get(which), fields.get("RelayState", ""), binding, query


class Refused(Exception):
    """A SAML message we will not act on; args[0] is the message key for the patron."""


def signature_of(query: dict[str, str]) -> dict[str, str | None]:
    """The query signature for pysaml2's own check (it makes one when we want signed requests)."""
    return {
        "relay_state": query.get("RelayState"),
        "sigalg": query.get("SigAlg"),
        "signature": query.get("Signature"),
    }


def wants_signed(idp: IdentityProvider, loaded: Loaded, entity: str) -> bool:
    """Signed requests required: by the IdP's configuration, or the SP's metadata."""
    if idp.settings.want_signed_requests:
        return True
    descriptor = loaded.server.metadata[entity].get("spsso_descriptor", [{}])[0]
    return str(descriptor.get("authn_requests_signed", "false")).lower() == "true"


def check_signature(
    idp: IdentityProvider,
    loaded: Loaded,
    entity: str,
    binding: str,
    message: Any,
    query: dict[str, str],
    *,
    required: bool,
) -> None:
    """Over HTTP-Redirect the signature is in the query (SigAlg, Signature), checked here
    against the SP's signing certificates from its metadata; over HTTP-POST it is enveloped in
    the XML, and pysaml2 has already verified one that is present when it parsed the message."""
    if binding == BINDING_HTTP_REDIRECT:
        if "Signature" not in query:
            signed = False
        else:
            certs = loaded.server.metadata.certs(entity, "spsso", "signing")
            crypto = loaded.server.sec.sec_backend
            if not any(verify_redirect_signature(query, crypto, cert) for _, cert in certs):
                raise Refused("saml.unsigned_request")
            signed = True
    else:
        signed = getattr(message, "signature", None) is not None
    if required and not signed:
        raise Refused("saml.unsigned_request")


def refuse(p: Provider, visit: Visit, key: str, event: str = "saml_request_refused") -> Response:
    p.portal.authenticator.audit.event(event, severity="warning", source=visit.source)
    return problem(visit, key)


async def sso(request: Request) -> Response:
    """An AuthnRequest over either binding: check it, then sign in (or use the SSO session)."""
    idp: IdentityProvider = request.app.state.saml
    p: Provider = request.app.state.provider
    visit = visit_of(request)
    which, raw, relay, binding, query = await saml_message(request)
    if which != "SAMLRequest" or raw is None or len(relay) > 1024:
        return problem(visit, "saml.bad_request")
    loaded = idp.current

    def check() -> Pending:
        try:
            parsed = loaded.server.parse_authn_request(raw, binding, **signature_of(query))
        except IncorrectlySigned:
            raise Refused("saml.unsigned_request") from None
        issuer = parsed.message.issuer
        entity = issuer.text if issuer is not None else None
        if entity not in loaded.sps:
            raise Refused("oidc.unknown_client")
        required = wants_signed(idp, loaded, entity)
        check_signature(idp, loaded, entity, binding, parsed.message, query, required=required)
        args: dict[str, Any] = loaded.server.response_args(parsed.message, [BINDING_HTTP_POST])
        return Pending(entity, args, relay)

    try:
        pending = await run_in_threadpool(check)
    except Refused as exc:
        return refuse(p, visit, str(exc.args[0]))
    except Exception:  # noqa: BLE001 - pysaml2 raises many types for a bad request
        return refuse(p, visit, "saml.bad_request")
    if visit.session is not None:
        try:
            patron = await p.portal.authenticator.lookup(visit.session.barcode)
        except StoreUnavailable:
            return problem(visit, "error.unavailable", 503)
        if patron is not None:
            decision = p.standing_for(patron, _policy(p, loaded.sps[pending.sp]))
            refusal = answers.login_message(decision.outcome)
            if refusal is None:
                return await _answer(visit, idp, p, pending, patron)
            return await _sign_in(visit, p, pending, error=refusal[0])
    return await _sign_in(visit, p, pending)


def _policy(p: Provider, sp: ServiceProvider) -> ClientPolicy:
    return (sp.policy or p.default_policy).client_policy()


async def _sign_in(
    visit: Visit,
    p: Provider,
    pending: Pending,
    *,
    barcode: str = "",
    error: str | None = None,
    rid: str | None = None,
) -> Response:
    if rid is None:
        rid = await saml_pending.park(p.state, pending, p.settings.sign_in_minutes * 60.0)
    return visit.render(
        "login.html",
        barcode=barcode,
        error=error,
        notice=None,
        action=f"/saml/login?request={rid}",
        hidden={"request": rid},
        forgot_url=p.forgot_url,
        client_name=pending.sp,
    )


async def login(request: Request) -> Response:
    idp: IdentityProvider = request.app.state.saml
    p: Provider = request.app.state.provider
    visit = visit_of(request)
    if request.method == "GET":  # the sign-in page again, e.g. in the other language
        rid = request.query_params.get("request", "")
        parked = await saml_pending.parked(p.state, rid)
        if parked is None:
            return problem(visit, "oidc.expired_request")
        return await _sign_in(visit, p, parked, rid=rid)
    form = await visit.form()
    if form is None:
        return problem(visit, "csrf.message", 403)
    rid = form.get("request", "")
    pending = await saml_pending.parked(p.state, rid)
    if pending is None:
        return problem(visit, "oidc.expired_request")
    sp = idp.current.sps.get(pending.sp)
    if sp is None:  # its metadata went away (expired, or removed by a reload)
        return problem(visit, "oidc.unknown_client")
    policy = _policy(p, sp)
    barcode = form.get("barcode", "").strip()
    ctx = Context("saml", pending.sp, visit.source, policy)
    decision = await p.portal.authenticator.authenticate(barcode, Secret(form.get("pin", "")), ctx)
    refusal = answers.login_message(decision.outcome)
    if refusal is not None or decision.patron is None:
        key = refusal[0] if refusal else "login.failed"
        return await _sign_in(visit, p, pending, barcode=barcode, error=key, rid=rid)
    if await saml_pending.take(p.state, rid) is None:  # another post answered it first
        return problem(visit, "oidc.expired_request")
    visit.sign_in(barcode)
    return await _answer(visit, idp, p, pending, decision.patron)


async def _answer(
    visit: Visit, idp: IdentityProvider, p: Provider, pending: Pending, patron: Patron
) -> Response:
    loaded = idp.current
    entity = pending.sp
    sp = loaded.sps.get(entity)
    if sp is None:
        return problem(visit, "oidc.unknown_client")
    identity, pairwise = identity_of(p, idp.settings.scope, sp, patron, entity)
    name_id = loaded.name_id(entity, pairwise, secrets.token_urlsafe(24))
    args = {k: v for k, v in pending.resp_args.items() if k != "binding"}
    encrypt = loaded.encrypts(entity)
    if sp.encrypt_assertions and not encryption_certs(loaded.server, entity):
        return refuse(p, visit, "saml.cannot_encrypt")

    def build() -> tuple[str, str]:
        response = loaded.server.create_authn_response(
            identity,
            name_id=name_id,
            authn={"class_ref": PASSWORD_PROTECTED, "authn_auth": idp.base},
            sign_assertion=True,
            sign_response=False,
            encrypt_assertion=encrypt,
            encrypt_cert_assertion=None,
            sign_alg=SIG_RSA_SHA256,  # pysaml2's default is still RSA-SHA1
            digest_alg=DIGEST_SHA256,
            userid=pairwise,
            **args,
        )
        return str(response), loaded.server.session_db.session_index()

    xml, session_index = await run_in_threadpool(build)
    now = p.clock()
    took_part = idp.sessions.get(visit.cookie, now) or []
    took_part = [t for t in took_part if t.entity != entity]
    took_part.append(Participant(entity, name_id, session_index))
    idp.sessions.sweep(now)
    idp.sessions.put(visit.cookie, now + p.settings.sso_minutes * 60.0, took_part)
    p.portal.authenticator.audit.event("saml_assertion", barcode=patron.barcode, client=entity)
    return post_form(
        visit,
        pending.resp_args["destination"],
        xml,
        pending.relay_state,
        field="SAMLResponse",
        title="saml.continue_title",
    )
