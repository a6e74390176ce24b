"""A real SAML service provider: Debian's Apache with mod_auth_mellon protects a page through
the bridge's SAML 2.0 identity provider (pysaml2 + xmlsec1), and Playwright drives Debian's
chromium through the sign-in. The right PIN reaches the page with the released attributes in
the environment; a wrong PIN stays on the sign-in page. Screenshots go to
tests/artifacts/federation/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.federation.mellon import Federation, Sp, federation, mellon
from tests.federation.test_apache_openidc import browser, fill, shot
from tests.harness import DEMO
from tests.pins import DEMO_PIN, WRONG_PIN

__all__ = ["browser"]
pytestmark = pytest.mark.browser


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Federation]:
    with federation(tmp_path, [Sp()]) as fed:
        yield fed


def test_apache_mod_auth_mellon_signs_a_patron_in(setup: Federation, browser: Browser) -> None:
    issuer = setup.issuer
    with mellon(setup) as apache:
        page = browser.new_context(locale="en-US").new_page()
        page.goto(f"{apache}/protected/index.html")
        expect(page).to_have_url(re.compile(re.escape(f"{issuer}/saml/sso/redirect?")))
        shot(page, "11-saml-sign-in")
        fill(page, DEMO["active"], WRONG_PIN)
        expect(page.get_by_role("alert")).to_contain_text("The card number or PIN is not correct")
        shot(page, "12-saml-wrong-pin")
        expect(page.get_by_role("link", name="Forgot your PIN?")).to_be_visible()
        page.get_by_role("link", name="Español").click()  # keeps the pending request
        expect(page.get_by_role("button", name="Iniciar sesión")).to_be_visible()
        page.get_by_role("link", name="English").click()
        fill(page, DEMO["active"], DEMO_PIN)
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_url(f"{apache}/protected/index.html")
        expect(page.locator("#affiliation")).to_have_text("member@library.example.org")
        expect(page.locator("#name")).to_have_text("Rivera, Ana")
        assert DEMO["active"] not in page.locator("#nameid").inner_text()
        # eduPersonTargetedID: NameID-valued, the same pairwise value, qualified by both sides
        # (mellon hands the element over as XML).
        targeted = page.locator("#targeted").inner_text()
        assert f">{page.locator('#nameid').inner_text()}</saml:NameID>" in targeted
        assert f'NameQualifier="{issuer}/saml/metadata"' in targeted
        assert f'SPNameQualifier="{apache}/protected/mellon/metadata"' in targeted
        expect(page.locator("#pairwise")).to_have_text(
            re.compile(r"^[0-9a-f]{64}@library\.example\.org$")
        )
        shot(page, "13-saml-protected-page")


def test_tampered_request_and_replayed_assertion_are_refused(
    setup: Federation, browser: Browser
) -> None:
    daemon, issuer = setup.daemon, setup.issuer
    with mellon(setup) as apache:
        with httpx.Client(timeout=30, follow_redirects=False) as http:
            login = http.get(f"{apache}/protected/index.html").headers["location"]
            to_idp = http.get(login).headers["location"]
            assert to_idp.startswith(f"{issuer}/saml/sso/redirect?")
            query = dict(httpx.URL(to_idp).params)
            assert "Signature" in query  # mellon signs its AuthnRequests
            good = http.get(to_idp)
            assert good.status_code == 200 and 'action="/saml/login?request=' in good.text
            # Another request under the same signature: refused.
            other = http.get(f"{apache}/protected/other.html").headers["location"]
            other_query = dict(httpx.URL(http.get(other).headers["location"]).params)
            tampered = {**query, "SAMLRequest": other_query["SAMLRequest"]}
            refused = http.get(f"{issuer}/saml/sso/redirect", params=tampered)
            assert (
                refused.status_code == 400 and "not signed as the library requires" in refused.text
            )
            unsigned = {"SAMLRequest": query["SAMLRequest"]}
            assert http.get(f"{issuer}/saml/sso/redirect", params=unsigned).status_code == 400
            garbage = {**query, "SAMLRequest": "AAAA" + query["SAMLRequest"][4:]}
            assert http.get(f"{issuer}/saml/sso/redirect", params=garbage).status_code == 400

        context = browser.new_context(locale="en-US")
        page = context.new_page()
        page.goto(f"{apache}/protected/index.html")
        fill(page, DEMO["active"], DEMO_PIN)
        form = page.locator('input[name="SAMLResponse"]')
        assertion = form.get_attribute("value") or ""
        acs = page.locator("form").get_attribute("action") or ""
        assert assertion and acs == f"{apache}/protected/mellon/postResponse"
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#affiliation")).to_have_text("member@library.example.org")
        # The same assertion posted again, from this browser or another client: refused.
        again = context.request.post(acs, form={"SAMLResponse": assertion}, max_redirects=0)
        assert again.status >= 400
        fresh = httpx.post(acs, data={"SAMLResponse": assertion}, timeout=30)
        assert fresh.status_code >= 400
    # Refused by mod_auth_mellon's own replay check, not only for a missing cookie.
    assert "has already been used" in (daemon.dir / "apache-error.log").read_text()
    daemon.stop()
    events = [e.get("event") for e in daemon.audit_events()]
    assert "saml_request_refused" in events and "saml_assertion" in events
