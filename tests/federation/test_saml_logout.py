"""SAML Single Logout with real SPs: two mod_auth_mellon locations (/a and /b, two entityIDs)
in one Apache, one single sign-on session at the bridge. Logging out at /a (mellon's
/a/mellon/logout) sends a signed LogoutRequest to the bridge, which ends its session, sends its
own LogoutRequest to /b (the other SP of the session), takes /b's LogoutResponse, and answers
/a with a signed LogoutResponse; mellon then returns to the ReturnTo page. Afterwards both SPs
and the bridge want the PIN again. Over HTTP-POST (which mellon 0.18 does not send: "Current
identity provider does not support single logout") the SP is pysaml2's client. A LogoutRequest
without a valid signature is refused and ends nothing."""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import create_metadata_string

from bridge.federation.saml_server import read_or_create_identity
from tests.federation.mellon import (
    POST,
    REDIRECT,
    Federation,
    Sp,
    continue_to_the_page,
    federation,
    mellon,
    post_from,
    sign_in_to_the_form,
    sp_entries,
)
from tests.federation.test_apache_openidc import browser, shot
from tests.harness import DEMO

__all__ = ["browser"]
pytestmark = pytest.mark.browser

TWO = [Sp(path="/a"), Sp(path="/b")]


def signed_in_at_both(page: Page, apache: str, issuer: str) -> None:
    sign_in_to_the_form(page, f"{apache}/a/index.html")
    continue_to_the_page(page)
    page.goto(f"{apache}/b/index.html")  # single sign-on: no PIN asked
    expect(page).to_have_url(re.compile(re.escape(f"{issuer}/saml/sso/")))
    continue_to_the_page(page)
    expect(page).to_have_url(f"{apache}/b/index.html")


def asks_for_the_pin(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.get_by_label("Library card number")).to_be_visible()


def test_logout_at_one_sp_ends_the_session_everywhere(tmp_path: Path, browser: Browser) -> None:
    # want_signed_requests: pysaml2 checks the Redirect signatures too (as well as ours).
    with (
        federation(tmp_path, TWO, saml="want_signed_requests = true") as fed,
        mellon(fed) as apache,
    ):
        page = browser.new_context(locale="en-US").new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(f"{r.method} {r.url.split('?')[0]}"))
        signed_in_at_both(page, apache, fed.issuer)
        page.goto(f"{apache}/a/mellon/logout?ReturnTo={apache}/bye.html")
        expect(page).to_have_url(f"{apache}/bye.html")
        assert f"GET {fed.issuer}/saml/slo/redirect" in seen
        assert f"GET {apache}/b/mellon/logout" in seen  # /b was told by the bridge
        asks_for_the_pin(page, f"{apache}/b/index.html")
        asks_for_the_pin(page, f"{apache}/a/index.html")
        shot(page, "16-saml-after-logout")
    fed.daemon.stop()
    logouts = [e for e in fed.daemon.audit_events() if e.get("event") == "saml_logout"]
    assert [e.get("client") for e in logouts] == [fed.entity(0)]
    assert str(logouts[0].get("barcode")).endswith(DEMO["active"][-4:])  # masked in audit


def test_logout_at_the_bridge_tells_every_sp(tmp_path: Path, browser: Browser) -> None:
    with federation(tmp_path, TWO) as fed, mellon(fed) as apache:
        page = browser.new_context(locale="en-US").new_page()
        seen: list[str] = []
        page.on("request", lambda r: seen.append(f"{r.method} {r.url.split('?')[0]}"))
        signed_in_at_both(page, apache, fed.issuer)
        page.goto(f"{fed.issuer}/saml/logout")
        expect(page.get_by_text("You have signed out.")).to_be_visible()
        assert f"GET {apache}/a/mellon/logout" in seen and f"GET {apache}/b/mellon/logout" in seen
        shot(page, "20-saml-logout-at-the-bridge")
        asks_for_the_pin(page, f"{apache}/a/index.html")
        asks_for_the_pin(page, f"{apache}/b/index.html")


def pysaml2_sp(base: str, sp_dir: Path, idp_metadata: Path | None) -> Saml2Client:
    """A second kind of real SP: pysaml2's own client (mellon 0.18 sends LogoutRequests over
    HTTP-Redirect only), with the POST binding for its ACS and its logout endpoint."""
    conf: dict[str, object] = {
        "entityid": f"{base}/pysaml2/metadata",
        "key_file": str(sp_dir / "sp-key.pem"),
        "cert_file": str(sp_dir / "sp-cert.pem"),
        "encryption_keypairs": [
            {"key_file": str(sp_dir / "sp-key.pem"), "cert_file": str(sp_dir / "sp-cert.pem")}
        ],
        "xmlsec_binary": "/usr/bin/xmlsec1",
        "service": {
            "sp": {
                "endpoints": {
                    "assertion_consumer_service": [(f"{base}/pysaml2/acs", POST)],
                    "single_logout_service": [(f"{base}/pysaml2/slo", POST)],
                },
                "authn_requests_signed": True,
                "logout_requests_signed": True,
                "want_assertions_signed": True,
                "want_response_signed": False,  # the bridge signs the assertion
                "name_id_format": ["urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"],
            }
        },
    }
    if idp_metadata is not None:
        conf["metadata"] = {"local": [str(idp_metadata)]}
    return Saml2Client(config=SPConfig().load(conf))


@dataclass
class Pysaml2Session:
    fed: Federation
    apache: str
    page: Page
    client: Saml2Client
    name_id: Any
    session_index: str


PYSAML2_BASE = "http://127.0.0.1:9"


@contextlib.contextmanager
def signed_in_at_mellon_and_pysaml2(tmp_path: Path, browser: Browser) -> Iterator[Pysaml2Session]:
    """One SSO session with two SPs: mellon's /b (PIN) and pysaml2's client (no PIN)."""
    base = PYSAML2_BASE
    sp_dir = tmp_path / "pysaml2"
    sp_dir.mkdir()
    read_or_create_identity(sp_dir / "sp-key.pem", sp_dir / "sp-cert.pem", "127.0.0.1")
    metadata = create_metadata_string(None, pysaml2_sp(base, sp_dir, None).config, 4)
    (sp_dir / "sp.xml").write_bytes(metadata)

    def entries(mellon_dir: Path) -> str:
        return sp_entries(mellon_dir, TWO[1:]) + (
            f'[[saml.service_providers]]\nmetadata_file = "{sp_dir / "sp.xml"}"\n'
        )

    with federation(tmp_path, TWO[1:], entries=entries) as fed, mellon(fed) as apache:
        (sp_dir / "idp.xml").write_text(httpx.get(f"{fed.issuer}/saml/metadata").text)
        client = pysaml2_sp(base, sp_dir, sp_dir / "idp.xml")
        page = browser.new_context(locale="en-US").new_page()
        sign_in_to_the_form(page, f"{apache}/b/index.html")
        continue_to_the_page(page)

        request_id, info = client.prepare_for_authenticate(
            entityid=f"{fed.issuer}/saml/metadata", relay_state="r1", binding=REDIRECT
        )
        page.goto(dict(info["headers"])["Location"])  # SSO: straight to the Continue page
        answer = page.locator('input[name="SAMLResponse"]').get_attribute("value") or ""
        signed_in = client.parse_authn_request_response(answer, POST, {request_id: "/"})
        assert signed_in.ava["eduPersonScopedAffiliation"] == ["member@library.example.org"]
        name_id = signed_in.assertion.subject.name_id
        session_index = signed_in.assertion.authn_statement[0].session_index
        yield Pysaml2Session(fed, apache, page, client, name_id, session_index)


def test_logout_over_http_post(tmp_path: Path, browser: Browser) -> None:
    """pysaml2's SP signs in (SSO after mellon's /b), then posts a signed LogoutRequest from a
    page without the bridge's cookie: the bridge finds the session by the NameID it gave that
    SP, ends it, tells /b, and posts its signed LogoutResponse back, which pysaml2 accepts."""
    with signed_in_at_mellon_and_pysaml2(tmp_path, browser) as session:
        fed, apache, page, client = session.fed, session.apache, session.page, session.client
        base, name_id, session_index = PYSAML2_BASE, session.name_id, session.session_index
        _, logout = client.create_logout_request(
            f"{fed.issuer}/saml/slo/post",
            f"{fed.issuer}/saml/metadata",
            name_id=name_id,
            session_indexes=[session_index],
            sign=True,
        )
        saml_request = base64.b64encode(str(logout).encode()).decode()
        posted: list[str] = []
        page.route(
            f"{base}/pysaml2/slo",
            lambda route: (posted.append(route.request.post_data or ""), route.fulfill(body="ok")),
        )
        post_from(page, f"{fed.issuer}/saml/slo/post", {"SAMLRequest": saml_request})
        # The bridge told /b (redirects), then shows its form back to pysaml2's endpoint.
        expect(page.get_by_role("button", name="Continue")).to_be_visible()
        shot(page, "17-saml-logout-post")
        page.get_by_role("button", name="Continue").click()
        assert len(posted) == 1
        fields = dict(parse_qsl(posted[0]))
        done = client.parse_logout_request_response(fields["SAMLResponse"], POST)
        assert done.status_ok()
        answer_xml = base64.b64decode(fields["SAMLResponse"]).decode()
        assert "xmldsig-more#rsa-sha256" in answer_xml and "sha1" not in answer_xml
        asks_for_the_pin(page, f"{apache}/b/index.html")


def test_unsigned_logout_request_is_refused(tmp_path: Path, browser: Browser) -> None:
    with federation(tmp_path, TWO) as fed, mellon(fed) as apache:
        page = browser.new_context(locale="en-US").new_page()
        signed_in_at_both(page, apache, fed.issuer)
        # mellon's signed LogoutRequest, asked for with the browser's mellon cookie but held
        # back from the bridge (Playwright cannot intercept a redirect's target).
        jar = {c["name"]: c["value"] for c in page.context.cookies(apache)}
        started = httpx.get(
            f"{apache}/a/mellon/logout", params={"ReturnTo": f"{apache}/bye.html"}, cookies=jar
        )
        captured = [started.headers["location"]]
        assert captured[0].startswith(f"{fed.issuer}/saml/slo/redirect?")
        query = dict(httpx.URL(captured[0]).params)
        assert "Signature" in query and "SAMLRequest" in query
        for bad in (
            {"SAMLRequest": query["SAMLRequest"]},  # the signature left off
            {**query, "RelayState": "elsewhere"},  # a parameter changed under it
        ):
            answer = page.request.get(f"{fed.issuer}/saml/slo/redirect", params=bad)
            assert answer.status == 400 and "could not be checked" in answer.text()
        # Still signed in at the bridge: a fresh sign-in from /b asks no PIN.
        page.goto(
            f"{apache}/b/mellon/login?ReturnTo={apache}/b/index.html&IdP={fed.issuer}/saml/metadata"
        )
        continue_to_the_page(page)
    fed.daemon.stop()
    events = [e.get("event") for e in fed.daemon.audit_events()]
    assert "saml_logout" not in events and events.count("saml_logout_refused") == 2


def test_the_bridge_logs_out_a_post_only_sp(tmp_path: Path, browser: Browser) -> None:
    """The other direction: mellon's /b logs out; the bridge's LogoutRequest to pysaml2's SP
    (whose logout endpoint is HTTP-POST only) is a signed form the patron posts; pysaml2
    checks it and answers with its LogoutResponse to /saml/slo/post; the bridge then answers
    /b, and mellon returns to the ReturnTo page."""
    with signed_in_at_mellon_and_pysaml2(tmp_path, browser) as session:
        fed, apache, page, client = session.fed, session.apache, session.page, session.client
        posted: list[str] = []
        page.route(
            f"{PYSAML2_BASE}/pysaml2/slo",
            lambda route: (posted.append(route.request.post_data or ""), route.fulfill(body="ok")),
        )
        page.goto(f"{apache}/b/mellon/logout?ReturnTo={apache}/bye.html")
        expect(page).to_have_url(re.compile(re.escape(f"{fed.issuer}/saml/slo/redirect")))
        page.get_by_role("button", name="Continue").click()
        assert len(posted) == 1
        fields = dict(parse_qsl(posted[0]))
        request = client.parse_logout_request(fields["SAMLRequest"], POST)
        assert request.message.name_id.text == session.name_id.text
        assert "xmldsig-more#rsa-sha256" in base64.b64decode(fields["SAMLRequest"]).decode()
        answer = client.create_logout_response(request.message, [POST], sign=True)
        reply = {"SAMLResponse": base64.b64encode(str(answer).encode()).decode()}
        post_from(
            page, f"{fed.issuer}/saml/slo/post", {**reply, "RelayState": fields["RelayState"]}
        )
        expect(page).to_have_url(f"{apache}/bye.html")
        asks_for_the_pin(page, f"{apache}/b/index.html")
