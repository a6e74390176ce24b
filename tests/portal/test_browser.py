"""End to end in a real browser: Playwright drives Debian's chromium against the real daemon,
whose reset emails go to a real SMTP server (aiosmtpd, STARTTLS and AUTH required) started here.

One patron's whole story: sign in, fail the PIN policy, change the PIN, sign out, ask for a
reset link, read the email, follow the link, set a new PIN, see the link refused the second
time, sign in with the new PIN, on the pages and over LDAP (a simple bind, with ldap3) against
the same daemon: a PIN changed on the pages is at once the only PIN any protocol accepts.
A POST without its CSRF token is refused. Every page is kept as a screenshot under
tests/artifacts/portal/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ARTIFACTS, require_tool
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN
from tests.portal.support import LINK, SMTP_PASSWORD, SMTP_USER, SmtpServer, body_of, free_port

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "portal"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ACTIVE = DEMO["active"]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[SmtpServer]:
    with SmtpServer(tls_dir=tmp_path) as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Daemon, str]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    (tmp_path / "smtp-password").write_text(SMTP_PASSWORD + "\n")
    sections = f"""
[portal]
listen = "127.0.0.1:{port}"
base_url = "{base}"
library_name = "Riverside Public Library"

[ldap]
listen = ["127.0.0.1:0"]

[smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "starttls"
username = "{SMTP_USER}"
password_file = "smtp-password"
ca_file = "{smtp.cert}"
sender = "pins@library.example.org"
"""
    daemon = Daemon(tmp_path, sections=sections).start()
    try:
        yield daemon, base
    finally:
        daemon.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    chromium = require_tool("/usr/bin/chromium")
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


def ldap_bind(daemon: Daemon, barcode: str, pin: str) -> bool:
    host, port = daemon.address("ldap")
    dn = f"uid={barcode},ou=patrons,dc=library,dc=example"
    connection = ldap3.Connection(ldap3.Server(host, port=port), user=dn, password=pin)
    try:
        return bool(connection.bind())
    finally:
        connection.unbind()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def every_input_labelled(page: Page) -> bool:
    script = """() => [...document.querySelectorAll('input:not([type=hidden])')]
        .every(i => i.labels && i.labels.length > 0)"""
    return bool(page.evaluate(script))


def test_patron_changes_and_resets_pin_in_a_browser(
    daemon: tuple[Daemon, str], smtp: SmtpServer, browser: Browser
) -> None:
    bridge, base = daemon
    assert ldap_bind(bridge, ACTIVE, DEMO_PIN)  # now in the verified cache too
    context = browser.new_context(locale="en-US")
    page = context.new_page()

    # Sign in.
    page.goto(f"{base}/login")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    assert every_input_labelled(page)
    shot(page, "01-login")
    page.get_by_label("Library card number").fill(ACTIVE)
    page.get_by_label("PIN", exact=True).fill(DEMO_PIN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/account")
    expect(page.get_by_text("Rivera, Ana")).to_be_visible()
    expect(page.get_by_text("2030-12-31")).to_be_visible()
    shot(page, "02-account")

    # Modify PIN: refused by the policy, reason next to the field, PIN fields emptied.
    page.get_by_role("link", name="Modify PIN").click()
    assert every_input_labelled(page)
    shot(page, "03-modify-pin")
    page.get_by_label("Current PIN").fill(DEMO_PIN)
    page.get_by_label("New PIN", exact=True).fill("1212")
    page.get_by_label("New PIN again").fill("1212")
    page.get_by_role("button", name="Change PIN").click()
    error = page.locator("#new_pin-error")
    expect(error).to_contain_text("repeating number")
    expect(page.get_by_label("New PIN", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Current PIN")).to_have_value("")
    shot(page, "04-modify-pin-refused")

    # Modify PIN: accepted.
    page.get_by_label("Current PIN").fill(DEMO_PIN)
    page.get_by_label("New PIN", exact=True).fill(NEW_PIN)
    page.get_by_label("New PIN again").fill(NEW_PIN)
    page.get_by_role("button", name="Change PIN").click()
    expect(page.get_by_role("status")).to_contain_text("Your PIN has been changed")
    shot(page, "05-pin-changed")
    assert ldap_bind(bridge, ACTIVE, NEW_PIN)
    assert not ldap_bind(bridge, ACTIVE, DEMO_PIN)  # the cached old PIN was invalidated
    page.get_by_role("link", name="Continue").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{base}/login?out=1")
    expect(page.get_by_role("status")).to_contain_text("signed out")

    # A POST without its CSRF token is refused (same cookies as the page).
    refused = page.request.post(f"{base}/login", form={"barcode": ACTIVE, "pin": NEW_PIN})
    assert refused.status == 403

    # Forgot your PIN? The email arrives at the real SMTP server over STARTTLS with a login.
    page.get_by_role("link", name="Forgot your PIN?").click()
    shot(page, "06-forgot")
    page.get_by_label("Library card number").fill(ACTIVE)
    page.get_by_role("button", name="Send me a link").click()
    expect(page.get_by_role("status")).to_contain_text("If this card number has an email")
    shot(page, "07-forgot-sent")
    messages = smtp.inbox.wait(2)  # the "PIN changed" notice, then the reset link
    assert smtp.inbox.logins, "the bridge logged in to the mail server"
    links = [m for m in messages if LINK.search(body_of(m))]
    assert len(links) == 1 and links[0]["To"] == "ana.rivera@example.org"
    found = LINK.search(body_of(links[0]))
    assert found is not None
    link = found.group(1)
    assert link.startswith(f"{base}/reset?token=")

    # Follow the link, set a new PIN.
    page.goto(link)
    shot(page, "08-reset")
    page.get_by_label("New PIN", exact=True).fill(OTHER_PIN)
    page.get_by_label("New PIN again").fill(OTHER_PIN)
    page.get_by_role("button", name="Set new PIN").click()
    expect(page.get_by_role("status")).to_contain_text("new PIN is set")
    shot(page, "09-reset-done")

    # The link works once.
    page.goto(link)
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    shot(page, "10-reset-link-used")

    # Sign in with the new PIN; the old ones no longer work.
    page.goto(f"{base}/login")
    page.get_by_label("Library card number").fill(ACTIVE)
    page.get_by_label("PIN", exact=True).fill(NEW_PIN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not correct")
    page.get_by_label("PIN", exact=True).fill(OTHER_PIN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/account")
    context.close()
    assert ldap_bind(bridge, ACTIVE, OTHER_PIN)
    assert not ldap_bind(bridge, ACTIVE, NEW_PIN)

    events = [e["event"] for e in bridge.audit_events()]
    for name in ("auth", "pin_changed", "reset_requested", "pin_reset", "csrf_refused"):
        assert name in events, name
    token = link.rsplit("=", 1)[1]
    logs = bridge.logs()
    assert token not in logs
    assert "smtp-test-password" not in logs


def test_spanish_pages_and_a_phone_screen(daemon: tuple[Daemon, str], browser: Browser) -> None:
    _, base = daemon
    phone = browser.new_context(
        locale="es-ES", viewport={"width": 360, "height": 740}, device_scale_factor=2
    )
    page = phone.new_page()
    page.goto(f"{base}/login")
    expect(page.locator("html")).to_have_attribute("lang", "es")
    expect(page.get_by_role("heading", level=1)).to_have_text("Iniciar sesión en Mi cuenta")
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, "no sideways scrolling on a phone"
    shot(page, "11-login-es-phone")
    page.get_by_role("link", name="¿Olvidó su PIN?").click()
    shot(page, "12-forgot-es-phone")
    # Keyboard only: the first Tab reaches the skip link.
    page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.className")
    assert focused == "skip"
    page.goto(f"{base}/login?lang=en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    phone.close()
