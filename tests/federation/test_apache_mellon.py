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

from bridge.federation.saml import read_or_create_identity
from tests.apache import MODULES, running_apache
from tests.federation.support import sections
from tests.federation.test_apache_openidc import browser, fill, require_module, shot
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.portal.support import free_port

__all__ = ["browser"]
pytestmark = pytest.mark.browser

PAGE = """<html><body>
<p id="affiliation"><!--#echo var="AFFILIATION" --></p>
<p id="name"><!--#echo var="DISPLAYNAME" --></p>
<p id="nameid"><!--#echo var="MELLON_NAME_ID" --></p>
</body></html>
"""


def sp_metadata(base: str, cert_file: Path) -> str:
    der = "".join(line for line in cert_file.read_text().splitlines() if "-----" not in line)
    key_info = f"""<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data>
<ds:X509Certificate>{der}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"""
    return f"""<?xml version="1.0"?>
<EntityDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata"
  entityID="{base}/protected/mellon/metadata">
 <SPSSODescriptor AuthnRequestsSigned="true" WantAssertionsSigned="true"
   protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
  <KeyDescriptor use="signing">{key_info}</KeyDescriptor>
  <KeyDescriptor use="encryption">{key_info}</KeyDescriptor>
  <SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
    Location="{base}/protected/mellon/logout"/>
  <NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</NameIDFormat>
  <AssertionConsumerService index="0" isDefault="true"
    Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    Location="{base}/protected/mellon/postResponse"/>
 </SPSSODescriptor>
</EntityDescriptor>
"""


def apache_config(root: Path, port: int) -> str:
    modules = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authn_core_module", "mod_authn_core.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("authz_user_module", "mod_authz_user.so"),
        ("include_module", "mod_include.so"),
        ("setenvif_module", "mod_setenvif.so"),
        ("auth_mellon_module", "mod_auth_mellon.so"),
    ]
    loads = "\n".join(f"LoadModule {name} {MODULES / so}" for name, so in modules)
    return f"""
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/httpd.pid"
ErrorLog "{root}/error.log"
LogLevel warn auth_mellon:info
Mutex file:{root} default
DefaultRuntimeDir "{root}"
{loads}
# Plain-HTTP loopback only: mellon's cookie test is always SameSite=None, which chromium drops
# without Secure; the README's MELLON_DISABLE_SAMESITE leaves SameSite off (over HTTPS use
# MellonSecureCookie On instead).
SetEnvIf Request_URI . MELLON_DISABLE_SAMESITE=1
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    Require all granted
</Directory>
<Location "/protected">
    AuthType Mellon
    MellonEnable auth
    Require valid-user
    MellonEndpointPath /protected/mellon
    MellonSPPrivateKeyFile {root}/sp-key.pem
    MellonSPCertFile {root}/sp-cert.pem
    MellonSPMetadataFile {root}/sp.xml
    MellonIdPMetadataFile {root}/idp.xml
    MellonCookieSameSite lax
    MellonSetEnvNoPrefix AFFILIATION urn:oid:1.3.6.1.4.1.5923.1.1.1.9
    MellonSetEnvNoPrefix DISPLAYNAME urn:oid:2.16.840.1.113730.3.1.241
    Options +Includes
    SetOutputFilter INCLUDES
</Location>
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Daemon, str, int, Path]]:
    require_module("mod_auth_mellon.so", "libapache2-mod-auth-mellon")
    port, bridge_port = free_port(), free_port()
    sp_dir = tmp_path / "sp"
    read_or_create_identity(sp_dir / "sp-key.pem", sp_dir / "sp-cert.pem", "127.0.0.1")
    (sp_dir / "sp.xml").write_text(sp_metadata(f"http://127.0.0.1:{port}", sp_dir / "sp-cert.pem"))
    extra = f"""
[saml]
scope = "library.example.org"
key_file = "saml-key.pem"
cert_file = "saml-cert.pem"

[[saml.service_providers]]
metadata_file = "{sp_dir / "sp.xml"}"
attributes = ["eduPersonScopedAffiliation", "displayName"]
"""
    (tmp_path / "vendor-secret").write_text("unused\n")
    daemon = Daemon(tmp_path, sections(bridge_port) + extra).start()
    try:
        yield daemon, f"http://127.0.0.1:{bridge_port}", port, sp_dir
    finally:
        daemon.stop()


def test_apache_mod_auth_mellon_signs_a_patron_in(
    setup: tuple[Daemon, str, int, Path], browser: Browser
) -> None:
    daemon, issuer, port, sp_dir = setup
    idp_metadata = httpx.get(f"{issuer}/saml/metadata", timeout=30).text

    def write(root: Path) -> None:
        (root / "htdocs" / "protected").mkdir(parents=True)
        (root / "htdocs" / "protected" / "index.html").write_text(PAGE)
        for name in ("sp-key.pem", "sp-cert.pem", "sp.xml"):
            (root / name).write_bytes((sp_dir / name).read_bytes())
        (root / "idp.xml").write_text(idp_metadata)
        (root / "httpd.conf").write_text(apache_config(root, port))

    with running_apache(daemon, port, write, prefix="bridge-apache-fed-") as apache:
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
        shot(page, "13-saml-protected-page")


def test_tampered_request_and_replayed_assertion_are_refused(
    setup: tuple[Daemon, str, int, Path], browser: Browser
) -> None:
    daemon, issuer, port, sp_dir = setup
    idp_metadata = httpx.get(f"{issuer}/saml/metadata", timeout=30).text

    def write(root: Path) -> None:
        (root / "htdocs" / "protected").mkdir(parents=True)
        (root / "htdocs" / "protected" / "index.html").write_text(PAGE)
        for name in ("sp-key.pem", "sp-cert.pem", "sp.xml"):
            (root / name).write_bytes((sp_dir / name).read_bytes())
        (root / "idp.xml").write_text(idp_metadata)
        (root / "httpd.conf").write_text(apache_config(root, port))

    with running_apache(daemon, port, write, prefix="bridge-apache-fed-") as apache:
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
            assert refused.status_code == 400 and "not signed as the library requires" in refused.text
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
