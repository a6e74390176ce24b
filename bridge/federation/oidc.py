"""The OpenID Connect endpoints: discovery, JWKS, authorize + sign-in, token, UserInfo, logout.

Thin Starlette handlers over joserfc (JWS/JWK/JWT): the protocol decisions are spelt out here
so each refusal can be read and tested. The rules that matter:
- An unknown client or a redirect URI that is not exactly one registered for it is answered on
  our own page, never by redirecting (an open redirector otherwise).
- Public clients must send a PKCE S256 challenge; `plain` is refused for everyone.
- Codes are single-use, short-lived, bound to client, redirect URI and challenge, and kept in
  the `[state]` backend, so any host may redeem a code any other issued (once).
- A client configured with `consent = true` gets the patron's answer on the consent page first
  (`bridge.federation.consent`), unless the patron allowed it the same scopes before.
- Sign-in is the core's `authenticate` with protocol `oidc` and the client's policy, so the
  throttle and audit are the other front ends'. Wrong PIN and unknown card read the same.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any
from urllib.parse import unquote_plus, urlencode, urlsplit

from joserfc import jwt
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from bridge.core.patron import Context, Patron
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from bridge.federation.claims import claims_for
from bridge.federation.grants import Grant
from bridge.federation.grants import Request as AuthRequest
from bridge.federation.keys import ALG
from bridge.federation.provider import PROTOCOL, Provider
from bridge.federation.settings import SCOPES, OidcClient
from bridge.federation.state import Taken
from bridge.federation.subjects import subject
from bridge.portal import answers
from bridge.portal.visit import Visit

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'{extra}; "
    "frame-ancestors 'none'; base-uri 'none'"
)
CLAIMS = [
    "sub", "name", "given_name", "family_name", "email", "email_verified",
    "library_patron", "patron_category", "home_library",
]  # fmt: skip


def provider_of(request: Request) -> Provider:
    provider: Provider = request.app.state.provider
    return provider


def origin(uri: str) -> str:
    p = urlsplit(uri)
    return f"{p.scheme}://{p.netloc}"


def with_query(uri: str, params: dict[str, str]) -> str:
    sep = "&" if urlsplit(uri).query else "?"
    return uri + sep + urlencode(params)


def redirect_to(uri: str, params: dict[str, str]) -> Response:
    return RedirectResponse(with_query(uri, params), status_code=303)


def oauth_error(code: str, status: int = 400, description: str = "") -> JSONResponse:
    body = {"error": code}
    if description:
        body["error_description"] = description
    headers = {"WWW-Authenticate": "Basic"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


# -- discovery and keys -----------------------------------------------------------------------
async def discovery(request: Request) -> Response:
    p = provider_of(request)
    iss = p.settings.issuer
    return JSONResponse(
        {
            "issuer": iss,
            "authorization_endpoint": f"{iss}/oidc/authorize",
            "token_endpoint": f"{iss}/oidc/token",
            "userinfo_endpoint": f"{iss}/oidc/userinfo",
            "jwks_uri": f"{iss}/oidc/jwks",
            "end_session_endpoint": f"{iss}/oidc/logout",
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code"],
            "subject_types_supported": ["pairwise", "public"],
            "id_token_signing_alg_values_supported": [ALG],
            "scopes_supported": list(SCOPES),
            "claims_supported": CLAIMS,
            "token_endpoint_auth_methods_supported": [
                "client_secret_basic",
                "client_secret_post",
                "none",
            ],
            "code_challenge_methods_supported": ["S256"],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
        }
    )


async def jwks(request: Request) -> Response:
    return JSONResponse(provider_of(request).keys.jwks())


# -- authorize and sign in ---------------------------------------------------------------------
def _visit(request: Request) -> Visit:
    return Visit.of(provider_of(request).portal, request)


def _problem(visit: Visit, message: str, status: int = 400) -> Response:
    return visit.render("message.html", status=status, title="oidc.error_title", message=message)


def returning_to(response: Response, auth: AuthRequest) -> Response:
    """The form's answer redirects to the client: the CSP's form-action must allow its origin."""
    response.headers["content-security-policy"] = CSP.format(extra=" " + origin(auth.redirect_uri))
    return response


def _sign_in_page(
    visit: Visit, rid: str, auth: AuthRequest, *, barcode: str = "", error: str | None = None
) -> Response:
    p = provider_of(visit.request)
    response = visit.render(
        "login.html",
        barcode=barcode,
        error=error,
        notice=None,
        action="/oidc/login?" + urlencode({"request": rid}),  # language links keep it too
        hidden={"request": rid},
        forgot_url=p.forgot_url,
        client_name=client_of(p, auth.client_id).name or auth.client_id,
    )
    return returning_to(response, auth)


def client_of(p: Provider, client_id: str) -> OidcClient:
    client = p.settings.client(client_id)
    assert client is not None  # a parked request names a configured client
    return client


async def authorize(request: Request) -> Response:
    p = provider_of(request)
    visit = _visit(request)
    q = request.query_params
    client = p.settings.client(q.get("client_id", ""))
    if client is None:
        return _problem(visit, "oidc.unknown_client")
    redirect_uri = q.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:  # exact string match, nothing looser
        return _problem(visit, "oidc.bad_redirect")
    state = q.get("state")
    back = {"state": state} if state is not None else {}

    def refuse(code: str, description: str) -> Response:
        return redirect_to(redirect_uri, {"error": code, "error_description": description, **back})

    if q.get("response_type") != "code":
        return refuse("unsupported_response_type", "only the code flow is offered")
    asked = frozenset(q.get("scope", "").split())
    if "openid" not in asked:
        return refuse("invalid_scope", "openid is required")
    challenge = q.get("code_challenge")
    method = q.get("code_challenge_method", "plain" if challenge else None)
    if client.public and not challenge:
        return refuse("invalid_request", "PKCE (S256) is required for this client")
    if challenge is not None and (method != "S256" or not 43 <= len(challenge) <= 128):
        return refuse("invalid_request", "code_challenge_method must be S256")
    prompt = set(q.get("prompt", "").split())
    auth = AuthRequest(
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        scopes=asked & frozenset(client.scopes),
        state=state,
        nonce=q.get("nonce"),
        code_challenge=challenge,
        consent="consent" in prompt,
    )
    if visit.session is not None and "login" not in prompt:
        return await _single_sign_on(visit, client, auth, prompt)
    if "none" in prompt:
        return refuse("login_required", "the patron is not signed in")
    return _sign_in_page(visit, await p.grants.park(auth), auth)


def error_params(code: str, description: str, state: str | None) -> dict[str, str]:
    """An error for the client's redirect URI. Without `iss`: mod_auth_openidc (2.4.12, tested)
    takes `iss` on its redirect URI without a code as a third-party-initiated login and shows
    "OIDCDefaultURL is not set" instead of the error (discovery does not promise RFC 9207)."""
    found = {"error": code, "error_description": description}
    return found if state is None else {**found, "state": state}


async def _single_sign_on(
    visit: Visit, client: OidcClient, auth: AuthRequest, prompt: set[str]
) -> Response:
    p = provider_of(visit.request)
    assert visit.session is not None
    try:
        patron = await p.portal.authenticator.lookup(visit.session.barcode)
    except StoreUnavailable:
        return _problem(visit, "error.unavailable", 503)
    if patron is None:
        visit.sign_out()
        return _sign_in_page(visit, await p.grants.park(auth), auth)
    decision = p.standing(patron, client)
    refusal = answers.login_message(decision.outcome)
    p.portal.authenticator.audit.event(
        "oidc_sso", barcode=patron.barcode, client=client.client_id, outcome=decision.outcome.value
    )
    if refusal is not None:
        if "none" in prompt:
            return redirect_to(
                auth.redirect_uri, error_params("access_denied", refusal[0], auth.state)
            )
        return _sign_in_page(visit, await p.grants.park(auth), auth, error=refusal[0])
    auth_time = int(visit.session.created)
    return await _authorized(visit, client, auth, patron, auth_time, prompt)


async def _authorized(
    visit: Visit,
    client: OidcClient,
    auth: AuthRequest,
    patron: Patron,
    auth_time: int,
    prompt: set[str],
) -> Response:
    """The patron is who they say and may use this client: ask for consent if the client wants
    it and the patron has not given it for these scopes, else send the code."""
    p = provider_of(visit.request)
    today = p.portal.authenticator.today()
    sub = subject(p.pairwise_secret, client, patron)
    grant = Grant(auth, sub, claims_for(patron, auth.scopes, today), auth_time, 0.0)
    if client.consent:
        key = p.consent_key(patron, client, auth.scopes)
        if auth.consent or not await p.grants.consented(key):
            if "none" in prompt:
                params = error_params("consent_required", "consent is needed", auth.state)
                return visit.finish(redirect_to(auth.redirect_uri, params))
            from bridge.federation.consent import ask  # it builds on this module

            return await ask(visit, client, grant, key)
    return await send_code(visit, grant)


async def send_code(visit: Visit, grant: Grant) -> Response:
    p = provider_of(visit.request)
    auth = grant.request
    code = await p.grants.issue_code(auth, grant.subject, grant.claims, grant.auth_time)
    params = {"code": code, **({"state": auth.state} if auth.state is not None else {})}
    params["iss"] = p.settings.issuer  # RFC 9207: lets the client spot a mix-up
    return visit.finish(redirect_to(auth.redirect_uri, params))


async def login(request: Request) -> Response:
    p = provider_of(request)
    visit = _visit(request)
    if request.method == "GET":  # the sign-in page again, e.g. in the other language
        parked = await p.grants.parked(request.query_params.get("request", ""))
        if parked is None:
            return _problem(visit, "oidc.expired_request")
        return _sign_in_page(visit, request.query_params["request"], parked)
    form = await visit.form()
    if form is None:
        p.portal.authenticator.audit.event("csrf_refused", source=visit.source)
        return _problem(visit, "csrf.message", 403)
    rid = form.get("request", "")
    auth = await p.grants.parked(rid)
    if auth is None:
        return _problem(visit, "oidc.expired_request")
    client = client_of(p, auth.client_id)
    barcode = form.get("barcode", "").strip()
    ctx = Context(PROTOCOL, client.client_id, visit.source, p.policy(client))
    decision = await p.portal.authenticator.authenticate(barcode, Secret(form.get("pin", "")), ctx)
    refusal = answers.login_message(decision.outcome)
    if refusal is not None or decision.patron is None:
        key, status = refusal or ("login.failed", 200)
        response = _sign_in_page(visit, rid, auth, barcode=barcode, error=key)
        response.status_code = status
        return response
    await p.grants.finish(rid)
    visit.sign_in(barcode)
    return await _authorized(visit, client, auth, decision.patron, int(p.clock()), set())


# -- token -------------------------------------------------------------------------------------
def _client_auth(p: Provider, request: Request, form: dict[str, str]) -> OidcClient | None:
    """client_secret_basic, client_secret_post, or none for a public client."""
    header = request.headers.get("authorization", "")
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if header.lower().startswith("basic "):
        try:
            raw = base64.b64decode(header[6:], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = raw.partition(":")
        if not sep or secret is not None:
            return None
        client_id, secret = unquote_plus(user), unquote_plus(password)
    if not client_id:
        return None
    client = p.settings.client(client_id)
    if client is None:
        return None
    if client.secret is None:
        return client if secret is None else None
    if secret is None or not hmac.compare_digest(secret.encode(), client.secret.encode()):
        return None
    return client


def _pkce_ok(challenge: str | None, verifier: str | None) -> bool:
    if challenge is None:
        return verifier is None
    if verifier is None or not 43 <= len(verifier) <= 128:
        return False
    computed = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return hmac.compare_digest(computed, challenge.encode())


async def token(request: Request) -> Response:
    p = provider_of(request)
    data = await request.form(max_files=0, max_fields=20, max_part_size=4096)
    form = {k: v for k, v in data.items() if isinstance(v, str)}
    client = _client_auth(p, request, form)
    if client is None:
        p.portal.authenticator.audit.event(
            "oidc_client_refused", severity="warning", source=_source(request)
        )
        return oauth_error("invalid_client", 401)
    if form.get("grant_type") != "authorization_code":
        return oauth_error("unsupported_grant_type")
    taken = await p.grants.redeem(form.get("code", ""))
    if taken is Taken.REPLAYED:
        p.portal.authenticator.audit.event(
            "oidc_code_replayed",
            severity="warning",
            client=client.client_id,
            source=_source(request),
        )
    if not isinstance(taken, tuple):
        return oauth_error("invalid_grant", description="unknown, used or expired code")
    grant, access = taken
    problem = _mismatch(grant, client, form)
    if problem is not None:
        await p.grants.revoke(access)  # the code is spent; the token it made is never given
        return oauth_error("invalid_grant", description=problem)
    now = int(p.clock())
    claims: dict[str, Any] = {
        "iss": p.settings.issuer,
        "sub": grant.subject,
        "aud": client.client_id,
        "azp": client.client_id,
        "iat": now,
        "exp": now + p.settings.id_token_minutes * 60,
        "auth_time": grant.auth_time,
        **grant.claims,
    }
    if grant.request.nonce is not None:
        claims["nonce"] = grant.request.nonce
    key = p.keys.signing
    id_token = jwt.encode({"alg": ALG, "kid": key.kid, "typ": "JWT"}, claims, key)
    return JSONResponse(
        {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": p.settings.access_token_minutes * 60,
            "id_token": id_token,
            "scope": " ".join(sorted(grant.request.scopes)),
        },
        headers={"pragma": "no-cache"},
    )


def _mismatch(grant: Grant, client: OidcClient, form: dict[str, str]) -> str | None:
    if grant.request.client_id != client.client_id:
        return "unknown, used or expired code"
    if form.get("redirect_uri") != grant.request.redirect_uri:
        return "redirect_uri does not match"
    if not _pkce_ok(grant.request.code_challenge, form.get("code_verifier")):
        return "PKCE verification failed"
    return None


def _source(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


# -- userinfo ----------------------------------------------------------------------------------
async def userinfo(request: Request) -> Response:
    p = provider_of(request)
    header = request.headers.get("authorization", "")
    value = header[7:].strip() if header.lower().startswith("bearer ") else ""
    entry = await p.grants.token(value) if value else None
    if entry is None:
        return JSONResponse(
            {"error": "invalid_token"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return JSONResponse({"sub": entry.subject, **entry.claims})


# -- logout ------------------------------------------------------------------------------------
def _hinted_client(p: Provider, hint: str | None) -> str | None:
    """The audience of an ID token we signed (expired is fine for a logout hint)."""
    if not hint:
        return None
    try:
        token = jwt.decode(hint, p.keys.key_set(), algorithms=[ALG])
    except (JoseError, ValueError):
        return None
    aud = token.claims.get("aud")
    return aud if isinstance(aud, str) else None


async def logout(request: Request) -> Response:
    p = provider_of(request)
    visit = _visit(request)
    q = request.query_params
    client_id = _hinted_client(p, q.get("id_token_hint")) or q.get("client_id")
    client = p.settings.client(client_id) if client_id else None
    if visit.session is not None:
        p.portal.authenticator.audit.event(
            "oidc_logout",
            barcode=visit.session.barcode,
            client=client_id or "",
            source=visit.source,
        )
    visit.sign_out()
    target = q.get("post_logout_redirect_uri")
    if target and client is not None and target in client.post_logout_redirect_uris:
        state = q.get("state")
        return visit.finish(redirect_to(target, {"state": state} if state else {}))
    return visit.render("message.html", title="oidc.signed_out_title", message="login.signed_out")
