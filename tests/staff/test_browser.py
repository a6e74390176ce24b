"""The staff desk end to end: Playwright drives Debian's chromium against the real daemon
(SQLite store, SIP2, LDAP and RADIUS listeners, the desk on its own listener, a real SMTP
server with STARTTLS and AUTH for the patron's notice).

A desk account made with `patron-bridge staff add` scans an adult's card, sees the decisions
just made over SIP2, LDAP and RADIUS in the history panel, is refused 1212 with its reason,
resets the PIN after confirming the photo ID, and the patron then signs in over all three
protocols with the new PIN. A minor's card needs only the card check. The same desk account
cannot block (403 from the server for a POST it makes itself); a supervisor can. Every page is
kept as a screenshot, desktop and narrow, under tests/artifacts/staff/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.conftest import ARTIFACTS
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.portal.support import SMTP_PASSWORD, SMTP_USER, SmtpServer, body_of
from tests.portal.test_browser import ldap_bind
from tests.radius.test_server import SECRET, pyrad_auth
from tests.test_daemon import Sip2

pytestmark = pytest.mark.browser

SHOTS = ARTIFACTS / "staff"
DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 390, "height": 844}
PASSWORD = "river desk pass 42"  # a staff password, not a PIN
ADULT, MINOR = DEMO["active"], DEMO["minor"]


def desk_daemon(tmp_path: Path, smtp: SmtpServer, extra: str = "") -> Daemon:
    """The daemon with the desk, SIP2, LDAP, RADIUS and SMTP (and `extra` sections), and a
    desk account `dana` and a supervisor `sam`."""
    (tmp_path / "smtp-password").write_text(SMTP_PASSWORD + "\n")
    sections = f"""
[staff]
listen = "127.0.0.1:0"
library_name = "Riverside Public Library"
branches = ["Central", "Eastside"]
minor_categories = ["JUVENILE"]

[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"

[ldap]
listen = ["127.0.0.1:0"]

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{SECRET}"

[smtp]
host = "127.0.0.1"
port = {smtp.port}
security = "starttls"
username = "{SMTP_USER}"
password_file = "smtp-password"
ca_file = "{smtp.cert}"
sender = "pins@library.example.org"
{extra}"""
    daemon = Daemon(tmp_path, sections=sections).start()
    try:
        for name, role in (("dana", "desk"), ("sam", "supervisor")):
            made = daemon.cli("staff", "add", name, "--role", role, "--stdin", input=PASSWORD)
            assert made.returncode == 0, made.stderr
    except BaseException:
        daemon.stop()
        raise
    return daemon


def base_of(daemon: Daemon, listener: str = "staff") -> str:
    host, port = daemon.address(listener)
    return f"http://{host}:{port}"


@pytest.fixture
def daemon(tmp_path: Path, smtp: SmtpServer) -> Iterator[tuple[Daemon, str]]:
    bridge = desk_daemon(tmp_path, smtp)
    try:
        yield bridge, base_of(bridge)
    finally:
        bridge.stop()


def shot(page: Page, name: str) -> None:
    """The page at a desk PC's width and at a phone's."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True, timeout=120_000)
    page.set_viewport_size(NARROW)
    page.screenshot(path=str(SHOTS / f"{name}-narrow.png"), full_page=True, timeout=120_000)
    page.set_viewport_size(DESKTOP)


def sign_in(page: Page, base: str, name: str, branch: str = "Central") -> None:
    page.goto(f"{base}/login")
    page.get_by_label("Staff account").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Branch").select_option(label=branch)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/desk")


def three_protocols(bridge: Daemon, barcode: str, pin: str) -> tuple[bool, bool, bool]:
    sip2 = Sip2(bridge)
    try:
        sip2_ok = "|CQY|" in sip2.check(barcode, pin)
    finally:
        sip2.close()
    radius_ok = pyrad_auth(bridge, barcode, pin).code == 2  # Access-Accept
    return sip2_ok, ldap_bind(bridge, barcode, pin), radius_ok


def test_desk_resets_pins_and_roles_hold(
    daemon: tuple[Daemon, str], smtp: SmtpServer, browser: Browser
) -> None:
    bridge, base = daemon
    assert three_protocols(bridge, ADULT, DEMO_PIN) == (True, True, True)
    assert three_protocols(bridge, ADULT, WRONG_PIN) == (False, False, False)

    context = browser.new_context(locale="en-US", viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{base}/login")
    shot(page, "01-login")
    sign_in(page, base, "dana", "Eastside")
    expect(page.get_by_text("dana · Desk · Eastside")).to_be_visible()
    shot(page, "02-desk")

    # A scanner types the barcode and Enter into the focused field.
    expect(page.get_by_label("Card number, name or email")).to_be_focused()
    page.keyboard.type(ADULT)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/card/{ADULT}")
    expect(page.get_by_role("heading", name="Rivera, Ana")).to_be_visible()
    expect(page.get_by_text("a•••@example.org")).to_be_visible()
    history = page.locator("table.history")
    for protocol in ("sip2", "ldap", "radius"):
        expect(history.get_by_role("cell", name=protocol, exact=True).first).to_be_visible()
    expect(history.get_by_text("Wrong PIN").first).to_be_visible()
    expect(page.get_by_role("button", name="Block this card")).to_have_count(0)
    shot(page, "03-card-adult")

    # The policy refuses 1212, with its reason, and the fields come back empty.
    page.get_by_label("I have seen the card holder's photo ID").check()
    page.get_by_label("New PIN", exact=True).fill("1212")
    page.get_by_label("New PIN again").fill("1212")
    page.get_by_role("button", name="Set the new PIN").click()
    expect(page.locator("#new_pin-error")).to_contain_text("repeating number")
    expect(page.get_by_label("New PIN", exact=True)).to_have_value("")
    shot(page, "04-policy-refused")

    # An adult's card offers no "card presented" check; the server refuses one anyway.
    expect(page.get_by_label("Child's card: the library card was presented")).to_have_count(0)
    page.get_by_label("I have seen the card holder's photo ID").check()
    page.get_by_label("New PIN", exact=True).fill(NEW_PIN)
    page.get_by_label("New PIN again").fill(NEW_PIN)
    page.get_by_role("button", name="Set the new PIN").click()
    expect(page.locator("#notice")).to_contain_text("The new PIN is set.")
    assert NEW_PIN not in page.content()
    shot(page, "05-pin-set")
    assert three_protocols(bridge, ADULT, NEW_PIN) == (True, True, True)
    assert three_protocols(bridge, ADULT, DEMO_PIN) == (False, False, False)
    (notice,) = smtp.inbox.wait(1)
    assert notice["To"] == "ana.rivera@example.org"
    assert "was just changed" in body_of(notice)
    audit = [e for e in bridge.audit_events() if e.get("event") == "staff_pin_reset"]
    assert [(e["staff"], e["branch"], e["check"]) for e in audit] == [
        ("dana", "Eastside", "photo_id")
    ]

    # A desk account cannot block: the server says 403 to a POST made with its own token.
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    refused = page.request.post(
        f"{base}/card/{ADULT}/block", form={"csrf": token, "reason": "test"}
    )
    assert refused.status == 403
    page.goto(f"{base}/card/{ADULT}")
    expect(page.get_by_text("Active", exact=True)).to_be_visible()

    # A minor, found by name: the card presented is check enough.
    page.get_by_label("Card number, name or email").fill("Nguyen")
    page.keyboard.press("Enter")
    # the results page, not the desk page still navigating away (a screenshot taken mid-
    # navigation can wait on the old page forever)
    expect(page.get_by_role("link", name="Nguyen, Bao")).to_be_visible()
    shot(page, "06-search-results")
    page.get_by_role("link", name="Nguyen, Bao").click()
    expect(page.get_by_text("Minor", exact=True)).to_be_visible()
    shot(page, "07-card-minor")
    page.get_by_label("Child's card: the library card was presented").check()
    page.get_by_label("New PIN", exact=True).fill(NEW_PIN)
    page.get_by_label("New PIN again").fill(NEW_PIN)
    page.get_by_role("button", name="Set the new PIN").click()
    expect(page.locator("#notice")).to_contain_text("The new PIN is set.")
    assert three_protocols(bridge, MINOR, NEW_PIN) == (True, True, True)

    # In Spanish.
    page.goto(f"{base}/card/{ADULT}?lang=es")
    expect(page.get_by_role("heading", name="Restablecer el PIN")).to_be_visible()
    shot(page, "08-card-es")

    # Sign-out really ends the session: the old cookie no longer opens the desk.
    page.goto(f"{base}/desk?lang=en")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login\?out=1$"))
    page.goto(f"{base}/desk")
    expect(page).to_have_url(f"{base}/login")
    context.close()

    # A supervisor sees and may use the block form.
    supervisor = browser.new_context(locale="en-US", viewport=DESKTOP)
    page = supervisor.new_page()
    sign_in(page, base, "sam")
    page.goto(f"{base}/card/{ADULT}")
    shot(page, "09-card-supervisor")
    page.get_by_label("Reason for the block").fill("Card reported stolen")
    page.get_by_role("button", name="Block this card").click()
    expect(page.get_by_text("Blocked: Card reported stolen")).to_be_visible()
    # LDAP and RADIUS refuse a blocked card; SIP2 answers CQY with the block in its status.
    assert three_protocols(bridge, ADULT, NEW_PIN)[1:] == (False, False)
    page.get_by_role("button", name="Unblock this card").click()
    expect(page.locator("#notice")).to_contain_text("unblocked")
    assert three_protocols(bridge, ADULT, NEW_PIN) == (True, True, True)

    # A new card with the first PIN the patron chose.
    page.goto(f"{base}/desk")
    page.get_by_role("link", name="New card with its first PIN").click()
    expect(page.get_by_label("Card number")).to_be_visible()
    shot(page, "10-new-card")
    page.get_by_label("Card number").fill("21234000000099")
    page.get_by_label("Name (Surname, Given)").fill("Haddad, Lina")
    page.get_by_label("Patron category").fill("ADULT")
    page.get_by_label("New PIN", exact=True).fill(NEW_PIN)
    page.get_by_label("New PIN again").fill(NEW_PIN)
    page.get_by_role("button", name="Make the card").click()
    expect(page.locator("#notice")).to_contain_text("The card is made")
    assert three_protocols(bridge, "21234000000099", NEW_PIN) == (True, True, True)
    supervisor.close()


def test_totp_sign_in(daemon: tuple[Daemon, str], browser: Browser) -> None:
    import pyotp

    bridge, base = daemon
    made = bridge.cli("staff", "add", "tess", "--role", "desk", "--totp", "--stdin", input=PASSWORD)
    assert made.returncode == 0, made.stderr
    found = re.search(r"TOTP secret: ([A-Z2-7]+)", made.stdout)
    assert found is not None
    assert "otpauth://totp/" in made.stdout
    page = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    page.goto(f"{base}/login")
    page.get_by_label("Staff account").fill("tess")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not correct")
    page.get_by_label("Staff account").fill("tess")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("One-time code").fill(pyotp.TOTP(found.group(1)).now())
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{base}/desk")
    events = [e for e in bridge.audit_events() if e.get("event") == "staff_login"]
    assert events[-1]["staff"] == "tess" and events[-1]["second_factor"] is True
    assert found.group(1) not in bridge.logs()
