"""A real relying party: Debian's Apache with mod_auth_openidc protects a page through the
bridge's OpenID Connect provider, and Playwright drives Debian's chromium through the sign-in.

Apache runs as in tests/ldap/test_apache.py: in the foreground, non-root, on a loopback port,
with its own minimal config in a temporary directory. The protected page is a server-side
include that prints the claims mod_auth_openidc put in the request environment. The right PIN
reaches it with the expected claims; a wrong PIN stays on the bridge's sign-in page with the same
message as an unknown card. Every step is kept as a screenshot under tests/artifacts/federation/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.apache import MODULES, httpd_head, running_apache
from tests.conftest import ARTIFACTS, in_ci, require_tool
from tests.federation.support import start_daemon
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.portal.support import free_port
from tests.portal.test_browser import CHROMIUM_ARGS

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "federation"
APACHE_SECRET = "apache-oidc-6c1e93"
PAGE = """<html><body>
<p id="user"><!--#echo var="REMOTE_USER" --></p>
<p id="name"><!--#echo var="OIDC_CLAIM_name" --></p>
<p id="email"><!--#echo var="OIDC_CLAIM_email" --></p>
<p id="standing"><!--#echo var="OIDC_CLAIM_library_patron" --></p>
<p id="category"><!--#echo var="OIDC_CLAIM_patron_category" --></p>
</body></html>
"""


def apache_config(root: Path, port: int, issuer: str) -> str:
    modules = [
        ("include_module", "mod_include.so"),
        ("auth_openidc_module", "mod_auth_openidc.so"),
    ]
    return f"""{httpd_head(root, port, modules, "warn auth_openidc:info")}
OIDCProviderMetadataURL {issuer}/.well-known/openid-configuration
OIDCClientID apache
OIDCClientSecret {APACHE_SECRET}
OIDCRedirectURI http://127.0.0.1:{port}/protected/redirect_uri
OIDCCryptoPassphrase apache-test-passphrase-0b7d
OIDCScope "openid profile email library"
OIDCPKCEMethod S256
OIDCProviderTokenEndpointAuth client_secret_basic
OIDCSessionInactivityTimeout 600
DocumentRoot "{root}/htdocs"
<Directory "{root}/htdocs">
    Require all granted
</Directory>
<Location "/protected">
    AuthType openid-connect
    Require valid-user
    Options +Includes
    SetOutputFilter INCLUDES
</Location>
"""


def clients(apache_port: int, consent: bool) -> str:
    return f"""
[[oidc.clients]]
client_id = "apache"
secret = "{APACHE_SECRET}"
name = "Riverside Databases"
redirect_uris = ["http://127.0.0.1:{apache_port}/protected/redirect_uri"]
scopes = ["openid", "profile", "email", "library"]
consent = {str(consent).lower()}
"""


@pytest.fixture
def bridge(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Daemon, str, int]]:
    """The bridge with Apache's client; `consent` when parametrized indirectly with True."""
    apache_port = free_port()
    consent = bool(getattr(request, "param", False))
    daemon, issuer = start_daemon(tmp_path, extra_clients=clients(apache_port, consent))
    try:
        yield daemon, issuer, apache_port
    finally:
        daemon.stop()


def require_module(name: str, package: str) -> None:
    if not (MODULES / name).exists():
        message = f"{name} is not installed ({package})"
        if in_ci():
            pytest.fail(message + "; .ci/run must install it")
        pytest.skip(message)


@pytest.fixture
def apache(bridge: tuple[Daemon, str, int]) -> Iterator[str]:
    daemon, issuer, port = bridge
    require_module("mod_auth_openidc.so", "libapache2-mod-auth-openidc")

    def write(root: Path) -> None:
        (root / "htdocs" / "protected").mkdir(parents=True)
        (root / "htdocs" / "protected" / "index.html").write_text(PAGE)
        (root / "httpd.conf").write_text(apache_config(root, port, issuer))

    with running_apache(daemon, port, write, prefix="bridge-apache-fed-") as url:
        yield url


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = require_tool("/usr/bin/chromium")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def fill(page: Page, barcode: str, pin: str) -> None:
    page.get_by_label("Library card number").fill(barcode)
    page.get_by_label("PIN", exact=True).fill(pin)
    page.get_by_role("button", name="Sign in").click()


def test_apache_mod_auth_openidc_signs_a_patron_in(
    bridge: tuple[Daemon, str, int], apache: str, browser: Browser
) -> None:
    daemon, issuer, _ = bridge
    page = browser.new_context(locale="en-US").new_page()
    page.goto(f"{apache}/protected/index.html")
    expect(page).to_have_url(f"{issuer}/oidc/authorize?" + page.url.split("?", 1)[1])
    expect(page.get_by_role("heading", name="Sign in with your library card")).to_be_visible()
    expect(page.get_by_text("to continue to Riverside Databases")).to_be_visible()
    expect(page.get_by_role("link", name="Forgot your PIN?")).to_be_visible()
    shot(page, "01-sign-in")

    fill(page, DEMO["active"], WRONG_PIN)
    expect(page).to_have_url(re.compile(re.escape(f"{issuer}/oidc/login?request=")))
    wrong = page.get_by_role("alert").inner_text()
    assert "The card number or PIN is not correct" in wrong
    shot(page, "02-wrong-pin")
    # The language links keep the pending sign-in.
    page.get_by_role("link", name="Español").click()
    heading = "Inicie sesión con su tarjeta de la biblioteca"
    expect(page.get_by_role("heading", name=heading)).to_be_visible()
    shot(page, "02b-sign-in-es")
    page.get_by_role("link", name="English").click()
    expect(page.get_by_role("heading", name="Sign in with your library card")).to_be_visible()
    fill(page, UNKNOWN, WRONG_PIN)
    assert page.get_by_role("alert").inner_text() == wrong  # an unknown card reads the same

    fill(page, DEMO["active"], DEMO_PIN)
    expect(page).to_have_url(f"{apache}/protected/index.html")
    expect(page.locator("#name")).to_have_text("Rivera, Ana")
    expect(page.locator("#email")).to_have_text("ana.rivera@example.org")
    expect(page.locator("#standing")).to_have_text("active")
    expect(page.locator("#category")).to_have_text("ADULT")
    remote_user = page.locator("#user").inner_text()
    assert remote_user and DEMO["active"] not in remote_user
    shot(page, "03-protected-page")

    # Spanish from the browser's language: the same sign-in page.
    es = browser.new_context(locale="es-ES").new_page()
    es.goto(f"{apache}/protected/index.html")
    expect(es.get_by_role("heading", name=heading)).to_be_visible()
    shot(es, "04-sign-in-es")

    daemon.stop()
    audited = [e for e in daemon.audit_events() if e.get("event") == "auth"]
    assert [(e["protocol"], e["client"], e["outcome"]) for e in audited] == [
        ("oidc", "apache", "bad_pin"),
        ("oidc", "apache", "unknown_card"),
        ("oidc", "apache", "accepted"),
    ]


@pytest.mark.parametrize("bridge", [True], indirect=True)
def test_consent_screen_through_mod_auth_openidc(
    bridge: tuple[Daemon, str, int], apache: str, browser: Browser
) -> None:
    daemon, issuer, _ = bridge
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(f"{apache}/protected/index.html")
    fill(page, DEMO["active"], DEMO_PIN)
    expect(page).to_have_url(re.compile(re.escape(f"{issuer}/oidc/consent?request=")))
    title = "Share your details with Riverside Databases?"
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    asked = page.get_by_role("list").get_by_role("listitem")
    expect(asked).to_have_text(
        [
            "a number that identifies you to this service (not your card number)",
            "your name",
            "your email address",
            "your card's standing (active or expired), borrower category and home library",
        ]
    )
    shot(page, "05-consent")

    # Keyboard only: Tab moves from Allow to Deny, Enter presses Deny.
    allow = page.get_by_role("button", name="Allow")
    deny = page.get_by_role("button", name="Deny")
    allow.focus()
    page.keyboard.press("Tab")
    expect(deny).to_be_focused()
    page.keyboard.press("Enter")
    # mod_auth_openidc receives error=access_denied from the bridge and shows its error page.
    expect(page.get_by_text("access_denied")).to_be_visible()
    assert page.url.startswith(apache)
    shot(page, "06-consent-denied")

    # Not remembered: the next visit (signed in at the bridge already) asks again; in Spanish.
    page.goto(f"{apache}/protected/index.html")
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    page.get_by_role("link", name="Español").click()
    es_title = "¿Compartir sus datos con Riverside Databases?"
    expect(page.get_by_role("heading", name=es_title)).to_be_visible()
    expect(page.get_by_text("Su PIN nunca se comparte.")).to_be_visible()
    shot(page, "07-consent-es")
    page.get_by_role("button", name="Permitir").focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{apache}/protected/index.html")
    expect(page.locator("#name")).to_have_text("Rivera, Ana")
    expect(page.locator("#standing")).to_have_text("active")
    shot(page, "08-after-consent")

    # Remembered: with Apache's session gone (the bridge's SSO cookie kept), the patron goes
    # through the bridge and straight back to the page, asked nothing.
    names = [c["name"] for c in context.cookies()]
    assert "bridge-sso" in names
    for name in names:
        if name.startswith("mod_auth_openidc"):
            context.clear_cookies(name=name)
    page.goto(f"{apache}/protected/index.html")
    expect(page).to_have_url(f"{apache}/protected/index.html")
    expect(page.locator("#name")).to_have_text("Rivera, Ana")
    daemon.stop()
    answers = [e for e in daemon.audit_events() if e.get("event") == "oidc_consent"]
    assert [e["outcome"] for e in answers] == ["denied", "allowed"]


def test_pin_pages_and_provider_signed_in_at_once_in_chromium(
    bridge: tuple[Daemon, str, int], apache: str, browser: Browser
) -> None:
    """One browser, one host name (127.0.0.1: cookies ignore ports): My Account on the PIN
    pages and a sign-on through Apache stay signed in side by side."""
    daemon, _, _ = bridge
    found = re.search(r'\[portal\]\nlisten = "([^"]+)"', daemon.config.read_text())
    assert found
    pages = f"http://{found.group(1)}"
    context = browser.new_context(locale="en-US")
    page = context.new_page()
    page.goto(f"{pages}/login")
    fill(page, DEMO["active"], DEMO_PIN)
    expect(page).to_have_url(f"{pages}/account")
    page.goto(f"{apache}/protected/index.html")
    fill(page, DEMO["active"], DEMO_PIN)
    expect(page.locator("#name")).to_have_text("Rivera, Ana")
    page.goto(f"{pages}/account")
    expect(page).to_have_url(f"{pages}/account")  # not sent back to /login
    shot(page, "09-pin-pages-still-signed-in")
    names = {c["name"] for c in context.cookies()}
    assert {"session", "bridge-sso"} <= names
