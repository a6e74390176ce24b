"""Signed AuthnRequests over HTTP-POST: mod_auth_mellon, given IdP metadata that offers only the
POST binding for sign-on, posts its request with an enveloped XML signature. Its metadata here
says AuthnRequestsSigned="false"; the bridge's `[saml] want_signed_requests = true` puts
WantAuthnRequestsSigned="true" in the IdP metadata (so mellon signs) and requires it. The
signed request signs a patron in; the same request with one attribute changed under the
signature, or with the signature removed, is refused on the bridge's error page. (The
HTTP-Redirect query signature is tested in test_apache_mellon.)"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.federation.mellon import (
    POST,
    Sp,
    continue_to_the_page,
    federation,
    mellon,
    only_binding,
    post_from,
)
from tests.federation.test_apache_openidc import browser, fill, shot
from tests.harness import DEMO
from tests.pins import DEMO_PIN

__all__ = ["browser"]
pytestmark = pytest.mark.browser

REFUSED = "not signed as the library requires"


def posted_request(http: httpx.Client, apache: str) -> tuple[str, dict[str, str]]:
    """mellon's auto-posting form: its action and fields."""
    login = http.get(f"{apache}/protected/index.html").headers["location"]
    page = http.get(login)
    assert page.status_code == 200, page.text
    action = html.unescape(re.search(r'action="([^"]+)"', page.text).group(1))  # type: ignore[union-attr]
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', page.text))
    return action, {k: html.unescape(v) for k, v in fields.items()}


def test_mellon_posts_a_signed_request_and_tampering_is_refused(
    tmp_path: Path, browser: Browser
) -> None:
    sp = Sp(signed_requests=False)
    with (
        federation(tmp_path, [sp], saml="want_signed_requests = true") as fed,
        mellon(fed, lambda text: only_binding(text, "SingleSignOnService", POST)) as apache,
    ):
        with httpx.Client(timeout=30, follow_redirects=False) as http:
            assert 'WantAuthnRequestsSigned="true"' in http.get(f"{fed.issuer}/saml/metadata").text
            action, fields = posted_request(http, apache)
            assert action == f"{fed.issuer}/saml/sso/post"
            xml = base64.b64decode(fields["SAMLRequest"]).decode()
            assert "Signature" in xml and "AuthnRequest" in xml
            good = http.post(action, data=fields)
            assert good.status_code == 200 and 'action="/saml/login?request=' in good.text
            instant = re.search(r'IssueInstant="([^"]+)"', xml).group(1)  # type: ignore[union-attr]
            changed = xml.replace(instant, "2001-01-01T00:00:00Z", 1)
            tampered = {**fields, "SAMLRequest": base64.b64encode(changed.encode()).decode()}
            refused = http.post(action, data=tampered)
            assert refused.status_code == 400 and REFUSED in refused.text
            stripped = re.sub(r"<Signature .*</Signature>", "", xml, flags=re.S)
            assert "Signature" not in stripped
            unsigned = {**fields, "SAMLRequest": base64.b64encode(stripped.encode()).decode()}
            refused = http.post(action, data=unsigned)
            assert refused.status_code == 400 and REFUSED in refused.text

        page = browser.new_context(locale="en-US").new_page()
        post_from(page, action, unsigned)  # what the patron sees for an unsigned request
        expect(page.get_by_text(REFUSED)).to_be_visible()
        shot(page, "15-saml-unsigned-request-refused")
        page.goto(f"{apache}/protected/index.html")  # mellon's page posts itself (script)
        expect(page).to_have_url(f"{fed.issuer}/saml/sso/post")
        fill(page, DEMO["active"], DEMO_PIN)
        continue_to_the_page(page)
        expect(page).to_have_url(f"{apache}/protected/index.html")
        shot(page, "15-saml-signed-post-request-accepted")
    fed.daemon.stop()
    events = [e.get("event") for e in fed.daemon.audit_events()]
    assert events.count("saml_request_refused") == 3
