"""The OpenID Connect provider over real HTTP (httpx) against the real daemon: the whole code
flow, claims, and every refusal the issue lists (wrong redirect URI, missing PKCE, replayed code,
wrong client secret, expired ID token), checked with a JOSE library (joserfc) against the
published JWKS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidClaimError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from tests.federation.support import (
    PUBLIC_RP,
    RP,
    SECRET,
    STRICT_RP,
    Flow,
    code_of,
    error_of,
    form_fields,
    pkce,
    redeem,
    sign_in,
    start_daemon,
)
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN

ACTIVE, EXPIRED = DEMO["active"], DEMO["expired"]


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    daemon, issuer = start_daemon(tmp_path, throttle="card_lock_after = 3\ncard_delay_base = 0")
    try:
        yield daemon, issuer
    finally:
        daemon.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        yield client


def keys(issuer: str) -> KeySet:
    meta = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=30).json()
    return KeySet.import_key_set(httpx.get(meta["jwks_uri"], timeout=30).json())


def test_discovery_describes_the_provider(bridge: tuple[Daemon, str]) -> None:
    _, issuer = bridge
    meta = httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=30).json()
    assert meta["issuer"] == issuer
    assert meta["authorization_endpoint"] == f"{issuer}/oidc/authorize"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["id_token_signing_alg_values_supported"] == ["RS256"]
    jwks = httpx.get(meta["jwks_uri"], timeout=30).json()
    assert len(jwks["keys"]) == 1
    assert "d" not in jwks["keys"][0] and "p" not in jwks["keys"][0]  # public halves only


def test_code_flow_with_client_secret_basic(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    daemon, issuer = bridge
    flow = Flow("vendor", RP, scope="openid profile email library")
    code = code_of(sign_in(http, issuer, flow, ACTIVE, DEMO_PIN), RP)
    answer = redeem(issuer, code, RP, ("vendor", SECRET))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    token = jwt.decode(body["id_token"], keys(issuer), algorithms=["RS256"])
    JWTClaimsRegistry(
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": "vendor"},
        nonce={"essential": True, "value": "n-1"},
    ).validate(token.claims)
    claims = token.claims
    assert claims["name"] == "Rivera, Ana" and claims["email"] == "ana.rivera@example.org"
    assert claims["library_patron"] == "active" and claims["patron_category"] == "ADULT"
    assert ACTIVE not in body["id_token"] and claims["sub"] != ACTIVE
    info = http.get(
        f"{issuer}/oidc/userinfo", headers={"authorization": f"Bearer {body['access_token']}"}
    )
    assert info.status_code == 200 and info.json()["sub"] == claims["sub"]
    # no PIN material: no claim named like one, and no PIN among the values (the pairwise
    # `sub` is random base64 and may spell "pin" by chance)
    released = info.json()
    assert not [key for key in released if "pin" in key.lower() or "hash" in key.lower()]
    assert DEMO_PIN not in str(released)
    # The same patron, the same client, another sign-in (single sign-on): the same sub.
    again = code_of(http.get(f"{issuer}/oidc/authorize?{flow.query(state='st-2')}"), RP)
    second = redeem(issuer, again, RP, None, client_id="vendor", client_secret=SECRET)
    assert second.status_code == 200, second.text  # client_secret_post
    sub2 = jwt.decode(second.json()["id_token"], keys(issuer)).claims["sub"]
    assert sub2 == claims["sub"]
    daemon.stop()
    audited = [e for e in daemon.audit_events() if e.get("event") == "auth"]
    assert [(e["protocol"], e["client"], e["outcome"]) for e in audited] == [
        ("oidc", "vendor", "accepted")
    ]


def test_pairwise_sub_differs_per_client(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    _, issuer = bridge
    verifier, challenge = pkce()
    code = code_of(sign_in(http, issuer, Flow("vendor", RP), ACTIVE, DEMO_PIN), RP)
    vendor_sub = jwt.decode(
        redeem(issuer, code, RP, ("vendor", SECRET)).json()["id_token"], keys(issuer)
    ).claims["sub"]
    flow = Flow("app", PUBLIC_RP, challenge=challenge)
    code = code_of(http.get(f"{issuer}/oidc/authorize?{flow.query()}"), PUBLIC_RP)
    answer = redeem(issuer, code, PUBLIC_RP, None, client_id="app", code_verifier=verifier)
    assert answer.status_code == 200, answer.text
    app_sub = jwt.decode(answer.json()["id_token"], keys(issuer)).claims["sub"]
    assert app_sub != vendor_sub


def test_wrong_redirect_uri_is_refused_without_redirecting(
    bridge: tuple[Daemon, str], http: httpx.Client
) -> None:
    _, issuer = bridge
    for uri in (RP + "/", RP + "?x=1", "https://evil.example.org/callback", RP.upper()):
        answer = http.get(f"{issuer}/oidc/authorize?{Flow('vendor', uri).query()}")
        assert answer.status_code == 400 and "location" not in answer.headers
    answer = http.get(f"{issuer}/oidc/authorize?{Flow('nobody', RP).query()}")
    assert answer.status_code == 400 and "location" not in answer.headers
    # At the token endpoint too: the code is bound to the URI it was issued for.
    code = code_of(sign_in(http, issuer, Flow("vendor", RP), ACTIVE, DEMO_PIN), RP)
    assert redeem(issuer, code, RP + "/", ("vendor", SECRET)).json()["error"] == "invalid_grant"


def test_public_client_needs_pkce_s256(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    _, issuer = bridge
    flow = Flow("app", PUBLIC_RP)
    assert error_of(http.get(f"{issuer}/oidc/authorize?{flow.query()}")) == "invalid_request"
    plain = flow.query(code_challenge="x" * 43, code_challenge_method="plain")
    assert error_of(http.get(f"{issuer}/oidc/authorize?{plain}")) == "invalid_request"
    verifier, challenge = pkce()
    flow = Flow("app", PUBLIC_RP, challenge=challenge)
    code = code_of(sign_in(http, issuer, flow, ACTIVE, DEMO_PIN), PUBLIC_RP)
    wrong = redeem(issuer, code, PUBLIC_RP, None, client_id="app", code_verifier=pkce()[0])
    assert wrong.json()["error"] == "invalid_grant"
    # A failed redemption used the code up.
    right = redeem(issuer, code, PUBLIC_RP, None, client_id="app", code_verifier=verifier)
    assert right.json()["error"] == "invalid_grant"
    code = code_of(http.get(f"{issuer}/oidc/authorize?{flow.query()}"), PUBLIC_RP)
    missing = redeem(issuer, code, PUBLIC_RP, None, client_id="app")
    assert missing.json()["error"] == "invalid_grant"


def test_replayed_code_is_refused_and_revokes_the_token(
    bridge: tuple[Daemon, str], http: httpx.Client
) -> None:
    _, issuer = bridge
    code = code_of(sign_in(http, issuer, Flow("vendor", RP), ACTIVE, DEMO_PIN), RP)
    first = redeem(issuer, code, RP, ("vendor", SECRET))
    assert first.status_code == 200
    bearer = {"authorization": f"Bearer {first.json()['access_token']}"}
    assert http.get(f"{issuer}/oidc/userinfo", headers=bearer).status_code == 200
    replay = redeem(issuer, code, RP, ("vendor", SECRET))
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert http.get(f"{issuer}/oidc/userinfo", headers=bearer).status_code == 401


def test_wrong_client_secret_is_refused(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    _, issuer = bridge
    code = code_of(sign_in(http, issuer, Flow("vendor", RP), ACTIVE, DEMO_PIN), RP)
    assert redeem(issuer, code, RP, ("vendor", SECRET + "x")).status_code == 401
    assert redeem(issuer, code, RP, ("strict", SECRET)).json()["error"] == "invalid_grant"
    no_secret = redeem(issuer, code, RP, None, client_id="vendor")
    assert no_secret.status_code == 401
    garbage = httpx.post(
        f"{issuer}/oidc/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": RP},
        headers={"authorization": "Basic %%%"},
        timeout=30,
    )
    assert garbage.status_code == 401


def test_expired_id_token_fails_verification(
    bridge: tuple[Daemon, str], http: httpx.Client
) -> None:
    _, issuer = bridge
    code = code_of(sign_in(http, issuer, Flow("vendor", RP), ACTIVE, DEMO_PIN), RP)
    id_token = redeem(issuer, code, RP, ("vendor", SECRET)).json()["id_token"]
    claims = jwt.decode(id_token, keys(issuer)).claims
    assert claims["exp"] - claims["iat"] == 5 * 60  # id_token_minutes
    registry = JWTClaimsRegistry(now=int(claims["exp"]) + 1, leeway=0)
    with pytest.raises(ExpiredTokenError):
        registry.validate(claims)
    JWTClaimsRegistry(now=int(claims["iat"]), leeway=0).validate(claims)
    tampered = id_token[:-4] + ("AAAA" if not id_token.endswith("AAAA") else "BBBB")
    with pytest.raises(Exception):  # noqa: B017 - any JOSE error: the signature is wrong
        jwt.decode(tampered, keys(issuer))
    with pytest.raises(InvalidClaimError):
        JWTClaimsRegistry(aud={"essential": True, "value": "strict"}).validate(claims)


def test_wrong_pin_and_unknown_card_read_the_same(
    bridge: tuple[Daemon, str], http: httpx.Client
) -> None:
    daemon, issuer = bridge
    flow = Flow("vendor", RP)
    wrong = sign_in(http, issuer, flow, ACTIVE, WRONG_PIN)
    unknown = sign_in(http, issuer, flow, UNKNOWN, WRONG_PIN)
    assert wrong.status_code == unknown.status_code == 200
    message = "The card number or PIN is not correct"
    assert message in wrong.text and message in unknown.text
    assert WRONG_PIN not in wrong.text
    assert 'action="/oidc/login?request=' in wrong.text  # still the sign-in form
    daemon.stop()
    audited = [e for e in daemon.audit_events() if e.get("event") == "auth"]
    assert [(e["protocol"], e["outcome"]) for e in audited] == [
        ("oidc", "bad_pin"),
        ("oidc", "unknown_card"),
    ]


def test_locked_card_says_so(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    _, issuer = bridge
    flow = Flow("vendor", RP)
    for _ in range(3):
        sign_in(http, issuer, flow, ACTIVE, WRONG_PIN)
    locked = sign_in(http, issuer, flow, ACTIVE, DEMO_PIN)
    assert locked.status_code == 200 and "This card is locked" in locked.text


def test_expired_card_follows_each_clients_policy(
    bridge: tuple[Daemon, str], http: httpx.Client
) -> None:
    _, issuer = bridge
    refused = sign_in(
        http, issuer, Flow("strict", STRICT_RP, scope="openid library"), EXPIRED, DEMO_PIN
    )
    assert refused.status_code == 200 and "This card has expired" in refused.text
    flow = Flow("vendor", RP, scope="openid library")
    code = code_of(sign_in(http, issuer, flow, EXPIRED, DEMO_PIN), RP)
    claims = jwt.decode(
        redeem(issuer, code, RP, ("vendor", SECRET)).json()["id_token"], keys(issuer)
    ).claims
    assert claims["library_patron"] == "expired"
    # Signed in now (SSO), but the strict client still refuses the expired card.
    strict = Flow("strict", STRICT_RP, scope="openid library")
    again = http.get(f"{issuer}/oidc/authorize?{strict.query()}")
    assert again.status_code == 200 and "This card has expired" in again.text
    silent = http.get(f"{issuer}/oidc/authorize?{strict.query(prompt='none')}")
    assert error_of(silent) == "access_denied"


def test_logout_ends_single_sign_on(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    _, issuer = bridge
    flow = Flow("vendor", RP)
    code = code_of(sign_in(http, issuer, flow, ACTIVE, DEMO_PIN), RP)
    id_token = redeem(issuer, code, RP, ("vendor", SECRET)).json()["id_token"]
    out = http.get(
        f"{issuer}/oidc/logout",
        params={
            "id_token_hint": id_token,
            "post_logout_redirect_uri": "https://rp.example.org/bye",
            "state": "s9",
        },
    )
    assert (
        out.status_code == 303 and out.headers["location"] == "https://rp.example.org/bye?state=s9"
    )
    page = http.get(f"{issuer}/oidc/authorize?{flow.query()}")
    assert page.status_code == 200 and "request" in form_fields(page.text)
    stray = http.get(
        f"{issuer}/oidc/logout", params={"post_logout_redirect_uri": "https://evil.example.org/"}
    )
    assert stray.status_code == 200 and "location" not in stray.headers


def test_rotated_key_stays_published(bridge: tuple[Daemon, str], http: httpx.Client) -> None:
    daemon, issuer = bridge
    code = code_of(sign_in(http, issuer, Flow("vendor", RP), ACTIVE, DEMO_PIN), RP)
    old_token = redeem(issuer, code, RP, ("vendor", SECRET)).json()["id_token"]
    result = daemon.cli("oidc", "rotate-key")
    assert result.returncode == 0, result.stderr
    jwks = httpx.get(f"{issuer}/oidc/jwks", timeout=30).json()
    assert len(jwks["keys"]) == 2
    jwt.decode(old_token, keys(issuer))  # still verifiable
    code = code_of(http.get(f"{issuer}/oidc/authorize?{Flow('vendor', RP).query()}"), RP)
    new_token = redeem(issuer, code, RP, ("vendor", SECRET)).json()["id_token"]
    old_kid = jwt.decode(old_token, keys(issuer)).header["kid"]
    assert jwt.decode(new_token, keys(issuer)).header["kid"] != old_kid
    mode = (daemon.dir / "oidc-keys.json").stat().st_mode & 0o777
    assert mode == 0o600
