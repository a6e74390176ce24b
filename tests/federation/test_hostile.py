"""Hostile, truncated, oversized and malformed input against the OIDC endpoints of the real
daemon: nothing answers with a server error, nothing redirects anywhere but a registered URI,
and no token is issued. A hypothesis property drives arbitrary authorize queries and token
forms; the PKCE check is a property of its own."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.federation.oidc import _pkce_ok
from tests.federation.support import (
    CONSENT_RP,
    RP,
    SECRET,
    Flow,
    form_fields,
    sign_in,
    start_daemon,
)
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN

REGISTERED = {RP, "https://app.example.org/cb", "https://strict.example.org/cb", CONSENT_RP}


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("oidc-hostile")
    daemon: Daemon
    daemon, url = start_daemon(tmp, throttle="source_max_failures = 100000")
    try:
        yield url
    finally:
        daemon.stop()


def no_stray_redirect(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code in (301, 302, 303, 307, 308):
        location = answer.headers["location"]
        assert location.split("?", 1)[0] in REGISTERED, location


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)
KEYS = st.sampled_from(
    ["client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge",
     "code_challenge_method", "prompt", "x"]
)  # fmt: skip


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(KEYS, st.one_of(TEXT, st.sampled_from(sorted(REGISTERED)))))
def test_any_authorize_query_is_answered_safely(issuer: str, query: dict[str, str]) -> None:
    answer = httpx.get(f"{issuer}/oidc/authorize?{urlencode(query)}", timeout=30)
    no_stray_redirect(answer)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.dictionaries(
        st.sampled_from(["grant_type", "code", "redirect_uri", "client_id", "client_secret",
                         "code_verifier"]),
        TEXT,
    )
)  # fmt: skip
def test_any_token_form_issues_nothing(issuer: str, form: dict[str, str]) -> None:
    answer = httpx.post(f"{issuer}/oidc/token", data=form, timeout=30)
    assert answer.status_code in (400, 401), answer.text
    assert "access_token" not in answer.text


@pytest.fixture(scope="module")
def consenting(issuer: str) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A signed-in browser on the consent page of the `booking` client (never answered)."""
    with httpx.Client(timeout=30) as http:
        flow = Flow("booking", CONSENT_RP)
        asked = sign_in(http, issuer, flow, DEMO["active"], DEMO_PIN)
        page = http.get(str(asked.url.join(asked.headers["location"])))
        yield http, form_fields(page.text)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(st.sampled_from(["request", "answer", "csrf", "lang", "x"]), TEXT))
def test_any_consent_answer_is_refused_safely(
    issuer: str, consenting: tuple[httpx.Client, dict[str, str]], form: dict[str, str]
) -> None:
    http, fields = consenting
    seen = http.get(f"{issuer}/oidc/consent", params=form)
    assert seen.status_code in (200, 400), seen.text
    # With this browser's own CSRF token, but any request id and answer but the real id.
    if form.get("request") == fields["request"]:
        form["request"] += "x"
    answer = http.post(f"{issuer}/oidc/consent", data={**form, "csrf": fields["csrf"]})
    assert answer.status_code == 400, answer.text
    assert "location" not in answer.headers
    anonymous = httpx.post(f"{issuer}/oidc/consent", data=form, timeout=30)
    assert anonymous.status_code == 403


@given(st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT))
def test_pkce_check_never_raises(challenge: str | None, verifier: str | None) -> None:
    ok = _pkce_ok(challenge, verifier)
    if ok and challenge is not None:
        assert verifier is not None
        digest = hashlib.sha256(verifier.encode()).digest()
        assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == challenge


def test_truncated_oversized_and_malformed(issuer: str) -> None:
    with httpx.Client(timeout=30, follow_redirects=False) as http:
        flow = Flow("vendor", RP)
        huge = flow.query(state="s" * 20000)
        no_stray_redirect(http.get(f"{issuer}/oidc/authorize?{huge}"))
        no_stray_redirect(http.get(f"{issuer}/oidc/authorize?{flow.query()[:40]}"))
        no_stray_redirect(http.get(f"{issuer}/oidc/authorize?client_id=%ff%fe&redirect_uri=%00"))
        big = http.post(f"{issuer}/oidc/token", content=b"a=" + b"x" * 100_000,
                        headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert big.status_code == 413
        for header in ("Basic", "Basic ====", "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
                       "Basic " + base64.b64encode(b"vendor").decode(), "Bearer x"):  # fmt: skip
            answer = http.post(f"{issuer}/oidc/token", headers={"authorization": header},
                               data={"grant_type": "authorization_code", "code": "x"})  # fmt: skip
            assert answer.status_code == 401
        for header in ("Bearer", "Bearer " + "x" * 5000, "Basic dmVuZG9yOng=", "bearer  x"):
            answer = http.get(f"{issuer}/oidc/userinfo", headers={"authorization": header})
            assert answer.status_code == 401
        # A sign-in form without its CSRF token, with a made-up request id, or a stale one.
        page = http.get(f"{issuer}/oidc/authorize?{flow.query()}")
        fields = form_fields(page.text)
        bare = {"request": fields["request"], "barcode": DEMO["active"], "pin": DEMO_PIN}
        assert http.post(f"{issuer}/oidc/login", data=bare).status_code == 403
        made_up = {**fields, "request": "x" * 40, "barcode": DEMO["active"], "pin": DEMO_PIN}
        assert http.post(f"{issuer}/oidc/login", data=made_up).status_code == 400
        hint = http.get(f"{issuer}/oidc/logout", params={"id_token_hint": "a.b.c" * 100})
        assert hint.status_code == 200
        assert SECRET not in page.text


@pytest.fixture(scope="module")
def saml_issuer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from bridge.federation.saml_server import read_or_create_identity
    from tests.federation.mellon import Sp
    from tests.federation.support import sections
    from tests.portal.support import free_port

    tmp: Path = tmp_path_factory.mktemp("saml-hostile")
    read_or_create_identity(tmp / "sp-key.pem", tmp / "sp-cert.pem", "127.0.0.1")
    (tmp / "sp.xml").write_text(Sp().metadata("http://127.0.0.1:9", tmp / "sp-cert.pem"))
    (tmp / "vendor-secret").write_text(SECRET + "\n")
    port = free_port()
    extra = f"""
[saml]
scope = "library.example.org"
[[saml.service_providers]]
metadata_file = "{tmp / "sp.xml"}"
"""
    daemon = Daemon(tmp, sections(port) + extra, throttle="source_max_failures = 100000").start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        daemon.stop()


SAML_KEYS = st.sampled_from(
    ["SAMLRequest", "SAMLResponse", "RelayState", "SigAlg", "Signature", "x"]
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(SAML_KEYS, TEXT), st.booleans(), st.sampled_from(["sso", "slo"]))
def test_any_saml_request_is_refused_on_our_page(
    saml_issuer: str, fields: dict[str, str], post: bool, service: str
) -> None:
    if post:
        answer = httpx.post(f"{saml_issuer}/saml/{service}/post", data=fields, timeout=30)
    else:
        answer = httpx.get(f"{saml_issuer}/saml/{service}/redirect", params=fields, timeout=30)
    assert answer.status_code == 400, answer.text
    assert "location" not in answer.headers


def test_saml_hostile_inputs(saml_issuer: str) -> None:
    import zlib

    def deflated(xml: str) -> str:
        raw = zlib.compress(xml.encode())[2:-4]
        return base64.b64encode(raw).decode()

    bomb = '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
    hostile = [
        "",
        "%%%",
        base64.b64encode(b"\x00" * 10).decode(),
        deflated("<notsaml/>"),
        deflated(bomb + "<samlp:AuthnRequest>&b;</samlp:AuthnRequest>"),
        deflated('<?xml version="1.0"?><!DOCTYPE x SYSTEM "file:///etc/passwd"><x/>'),
        deflated("<" * 5000),
    ]
    for value in hostile:
        answer = httpx.get(
            f"{saml_issuer}/saml/sso/redirect", params={"SAMLRequest": value}, timeout=30
        )
        assert answer.status_code == 400 and "root:" not in answer.text
    big = httpx.get(
        f"{saml_issuer}/saml/sso/redirect", params={"SAMLRequest": "A" * 60000}, timeout=30
    )
    assert big.status_code in (400, 414, 431)
    relay = httpx.get(
        f"{saml_issuer}/saml/sso/redirect",
        params={"SAMLRequest": deflated("<x/>"), "RelayState": "r" * 5000},
        timeout=30,
    )
    assert relay.status_code == 400
    metadata = httpx.get(f"{saml_issuer}/saml/metadata", timeout=30)
    assert metadata.status_code == 200 and "PRIVATE KEY" not in metadata.text
    assert "IDPSSODescriptor" in metadata.text
