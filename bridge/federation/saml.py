"""The SAML 2.0 identity provider (pysaml2, signing with Debian's xmlsec1).

AuthnRequests arrive over HTTP-Redirect or HTTP-POST from service providers whose metadata is
configured; anything else (unknown SP, unregistered ACS, a tampered or unparsable request) is
answered on our own page. The patron signs in on the same form as for OpenID Connect (the
same SSO session); the signed assertion goes back over HTTP-POST by a form the patron submits
(the pages run no scripts, so the "Continue" button is the auto-post). pysaml2 is synchronous
and runs xmlsec1 as a subprocess: every call into it runs in a worker thread, never on the loop.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT, NameID
from saml2.server import Server
from saml2.sigver import verify_redirect_signature
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from bridge.core.patron import ClientPolicy, Context, Patron
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from bridge.federation.grants import Expiring
from bridge.federation.provider import Provider
from bridge.federation.saml_settings import SamlSettings, ServiceProvider
from bridge.portal import answers
from bridge.portal.visit import Visit
from bridge.tls import generate_self_signed

PASSWORD_PROTECTED = "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport"  # noqa: S105
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' {extra}; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def read_or_create_identity(key_file: Path, cert_file: Path, host: str) -> None:
    """An RSA key (0600) and a ten-year self-signed certificate for signing, on first start
    (SAML metadata pins the certificate itself, so a CA adds nothing here)."""
    if key_file.exists() and cert_file.exists():
        return
    generate_self_signed(cert_file, key_file, [host], days=3650, rsa_key=True)


@dataclass(frozen=True, slots=True)
class Pending:
    sp: str
    resp_args: dict[str, Any]
    relay_state: str


@dataclass(slots=True)
class IdentityProvider:
    settings: SamlSettings
    server: Server
    base: str
    sps: dict[str, ServiceProvider]
    pending: Expiring[Pending] = field(default_factory=Expiring)

    @classmethod
    def build(cls, settings: SamlSettings, issuer: str, paths: dict[str, Path]) -> IdentityProvider:
        sps: dict[str, ServiceProvider] = {}
        conf = {
            "entityid": f"{issuer}/saml/metadata",
            "service": {
                "idp": {
                    "endpoints": {
                        "single_sign_on_service": [
                            (f"{issuer}/saml/sso/redirect", BINDING_HTTP_REDIRECT),
                            (f"{issuer}/saml/sso/post", BINDING_HTTP_POST),
                        ]
                    },
                    "name_id_format": [NAMEID_FORMAT_PERSISTENT, NAMEID_FORMAT_TRANSIENT],
                    "policy": {
                        "default": {
                            "lifetime": {"minutes": settings.assertion_minutes},
                            "name_form": "urn:oasis:names:tc:SAML:2.0:attrname-format:uri",
                        }
                    },
                    "sign_assertion": True,
                }
            },
            "key_file": str(paths["key"]),
            "cert_file": str(paths["cert"]),
            "xmlsec_binary": "/usr/bin/xmlsec1",
            "metadata": {"local": [str(p) for name, p in paths.items() if name.startswith("sp")]},
        }
        server = Server(config=IdPConfig().load(conf))
        for i, sp in enumerate(settings.service_providers):
            entity = _entity_of(server, paths[f"sp{i}"])
            sps[entity] = sp
        return cls(settings, server, issuer, sps)

    def metadata(self) -> str:
        text: bytes | str = create_metadata_string(None, self.server.config, 4, None, None, None)
        return text.decode() if isinstance(text, bytes) else text


def _entity_of(server: Server, metadata_file: Path) -> str:
    text = metadata_file.read_text(encoding="utf-8")
    for entity in server.metadata.keys():  # noqa: SIM118 - MetadataStore is not a dict
        if entity in text:
            return str(entity)
    raise ValueError(f"{metadata_file}: no entityID found")


def identity_of(
    p: Provider, idp: IdentityProvider, sp: ServiceProvider, patron: Patron, entity: str
) -> tuple[dict[str, list[str]], str]:
    """The attributes released to this SP, and the persistent (pairwise) NameID value."""
    mac = hmac.new(p.pairwise_secret, f"saml|{entity}|{patron.record_id}".encode(), hashlib.sha256)
    pairwise = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()
    today = p.portal.authenticator.today()
    affiliation = "library-walk-in" if patron.is_expired(today) else "member"
    values: dict[str, list[str]] = {
        "eduPersonScopedAffiliation": [f"{affiliation}@{idp.settings.scope}"],
        "eduPersonTargetedID": [pairwise],
        "displayName": [patron.name],
        "mail": [patron.email] if patron.email else [],
    }
    return {k: v for k, v in values.items() if k in sp.attributes and v}, pairwise


def _visit(request: Request) -> Visit:
    provider: Provider = request.app.state.provider
    return Visit.of(provider.portal, request)


def _problem(visit: Visit, message: str, status: int = 400) -> Response:
    return visit.render("message.html", status=status, title="oidc.error_title", message=message)


async def metadata(request: Request) -> Response:
    idp: IdentityProvider = request.app.state.saml
    text = await run_in_threadpool(idp.metadata)
    return Response(text, media_type="application/samlmetadata+xml")


async def sso(request: Request) -> Response:
    """An AuthnRequest over either binding: check it, then sign in (or use the SSO session)."""
    idp: IdentityProvider = request.app.state.saml
    p: Provider = request.app.state.provider
    visit = _visit(request)
    if request.method == "POST":
        form = await request.form(max_files=0, max_fields=10, max_part_size=16 * 1024)
        raw, relay, binding = form.get("SAMLRequest"), form.get("RelayState", ""), BINDING_HTTP_POST
        query: dict[str, str] = {}
    else:
        query = dict(request.query_params)
        raw, relay, binding = (
            query.get("SAMLRequest"),
            query.get("RelayState", ""),
            BINDING_HTTP_REDIRECT,
        )
    if not isinstance(raw, str) or not isinstance(relay, str) or len(relay) > 1024:
        return _problem(visit, "saml.bad_request")

    def check() -> dict[str, Any]:
        parsed = idp.server.parse_authn_request(raw, binding)
        entity = parsed.message.issuer.text if parsed.message.issuer is not None else None
        if binding == BINDING_HTTP_REDIRECT and not _signed_by(idp, entity, query):
            raise ValueError("unsigned or badly signed request")
        args: dict[str, Any] = idp.server.response_args(parsed.message, [BINDING_HTTP_POST])
        return args

    try:
        resp_args = await run_in_threadpool(check)
    except Exception:  # noqa: BLE001 - pysaml2 raises many types for a bad request
        p.portal.authenticator.audit.event(
            "saml_request_refused", severity="warning", source=visit.source
        )
        return _problem(visit, "saml.bad_request")
    entity = resp_args.get("sp_entity_id")
    if entity not in idp.sps:
        return _problem(visit, "oidc.unknown_client")
    pending = Pending(entity, resp_args, relay)
    if visit.session is not None:
        try:
            patron = await p.portal.authenticator.lookup(visit.session.barcode)
        except StoreUnavailable:
            return _problem(visit, "error.unavailable", 503)
        if patron is not None:
            decision = p.standing_for(patron, _policy(p, idp.sps[entity]))
            refusal = answers.login_message(decision.outcome)
            if refusal is None:
                return await _answer(visit, idp, p, pending, patron)
            return _sign_in(visit, idp, pending, error=refusal[0])
    return _sign_in(visit, idp, pending)


def _signed_by(idp: IdentityProvider, entity: str | None, query: dict[str, str]) -> bool:
    """The HTTP-Redirect signature (SigAlg, Signature over the query) by one of the SP's signing
    certificates from its metadata. Required when the SP's metadata says it signs
    (AuthnRequestsSigned), checked whenever a signature is present."""
    if entity is None or entity not in idp.sps:
        return False
    descriptor = idp.server.metadata[entity].get("spsso_descriptor", [{}])[0]
    wants = str(descriptor.get("authn_requests_signed", "false")).lower() == "true"
    if "Signature" not in query:
        return not wants
    certs = idp.server.metadata.certs(entity, "spsso", "signing")
    crypto = idp.server.sec.sec_backend
    return any(verify_redirect_signature(query, crypto, cert) for _, cert in certs)


def _policy(p: Provider, sp: ServiceProvider) -> ClientPolicy:
    return (sp.policy or p.default_policy).client_policy()


def _sign_in(
    visit: Visit,
    idp: IdentityProvider,
    pending: Pending,
    *,
    barcode: str = "",
    error: str | None = None,
    rid: str | None = None,
) -> Response:
    if rid is None:
        rid = secrets.token_urlsafe(24)
        p: Provider = visit.request.app.state.provider
        now = p.clock()
        idp.pending.sweep(now)
        idp.pending.put(rid, now + p.settings.sign_in_minutes * 60.0, pending)
    return visit.render(
        "login.html",
        barcode=barcode,
        error=error,
        notice=None,
        action=f"/saml/login?request={rid}",
        hidden={"request": rid},
        forgot_url=visit.request.app.state.provider.forgot_url,
        client_name=pending.sp,
    )


async def login(request: Request) -> Response:
    idp: IdentityProvider = request.app.state.saml
    p: Provider = request.app.state.provider
    visit = _visit(request)
    if request.method == "GET":  # the sign-in page again, e.g. in the other language
        rid = request.query_params.get("request", "")
        parked = idp.pending.get(rid, p.clock())
        if parked is None:
            return _problem(visit, "oidc.expired_request")
        return _sign_in(visit, idp, parked, rid=rid)
    form = await visit.form()
    if form is None:
        return _problem(visit, "csrf.message", 403)
    rid = form.get("request", "")
    pending = idp.pending.get(rid, p.clock())
    if pending is None:
        return _problem(visit, "oidc.expired_request")
    sp = idp.sps[pending.sp]
    policy = _policy(p, sp)
    barcode = form.get("barcode", "").strip()
    ctx = Context("saml", pending.sp, visit.source, policy)
    decision = await p.portal.authenticator.authenticate(barcode, Secret(form.get("pin", "")), ctx)
    refusal = answers.login_message(decision.outcome)
    if refusal is not None or decision.patron is None:
        key = refusal[0] if refusal else "login.failed"
        return _sign_in(visit, idp, pending, barcode=barcode, error=key, rid=rid)
    idp.pending.items.pop(rid, None)
    visit.sign_in(barcode)
    return await _answer(visit, idp, p, pending, decision.patron)


async def _answer(
    visit: Visit, idp: IdentityProvider, p: Provider, pending: Pending, patron: Patron
) -> Response:
    sp = idp.sps[pending.sp]
    identity, pairwise = identity_of(p, idp, sp, patron, pending.sp)
    if sp.name_id == "persistent":
        name_id = NameID(format=NAMEID_FORMAT_PERSISTENT, text=pairwise)
    else:
        name_id = NameID(format=NAMEID_FORMAT_TRANSIENT, text=secrets.token_urlsafe(24))
    args = {k: v for k, v in pending.resp_args.items() if k != "binding"}

    def build() -> str:
        response = idp.server.create_authn_response(
            identity,
            name_id=name_id,
            authn={"class_ref": PASSWORD_PROTECTED, "authn_auth": idp.base},
            sign_assertion=True,
            sign_response=False,
            encrypt_assertion=sp.encrypt,
            encrypt_cert_assertion=None,
            userid=pairwise,
            **args,
        )
        return str(response)

    xml = await run_in_threadpool(build)
    destination = pending.resp_args["destination"]
    p.portal.authenticator.audit.event("saml_assertion", barcode=patron.barcode, client=pending.sp)
    encoded = base64.b64encode(xml.encode()).decode()
    response = visit.render(
        "saml_post.html",
        title="saml.continue_title",
        destination=destination,
        saml_response=encoded,
        relay_state=pending.relay_state,
    )
    origin = destination.split("/", 3)
    response.headers["content-security-policy"] = CSP.format(extra="/".join(origin[:3]))
    return response
