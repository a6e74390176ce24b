"""The two other ways a desk reset ends, in Debian's chromium against the real daemon.

The patron-facing step: after the photo-ID check the page turns into the patron's screen (no
staff or card details), the patron types 1212 and reads the policy's reason in the patron
pages' wording, then a good PIN with the keyboard only, and the desk view comes back with a
confirmation; the patron's PIN then works over SIP2, LDAP and RADIUS.

The one-time PIN: shown once on the slip; SIP2, LDAP and RADIUS refuse it with their "change
your PIN at My Account" answers and the audit says why; My Account takes it only to force the
change; the patron's own PIN then works everywhere and the one-time PIN nowhere.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import ldap3
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.harness import DEMO, Daemon
from tests.pins import NEW_PIN, OTHER_PIN
from tests.portal.support import SmtpServer
from tests.radius.test_server import pyrad_auth
from tests.staff.support import shows_pin
from tests.staff.test_browser import (
    DESKTOP,
    base_of,
    desk_daemon,
    shot,
    sign_in,
    three_protocols,
)
from tests.test_daemon import Sip2

pytestmark = pytest.mark.browser

ADULT = DEMO["active"]
PORTAL = """
[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
library_name = "Riverside Public Library"
"""


@pytest.fixture
def bridge(tmp_path: Path, smtp: SmtpServer) -> Iterator[Daemon]:
    daemon = desk_daemon(tmp_path, smtp, PORTAL)
    try:
        yield daemon
    finally:
        daemon.stop()


def open_card(page: Page, base: str, barcode: str) -> None:
    page.goto(f"{base}/card/{barcode}")
    page.get_by_label("I have seen the card holder's photo ID").check()


def test_patron_types_the_new_pin_on_a_screen_of_their_own(
    bridge: Daemon, browser: Browser
) -> None:
    base = base_of(bridge)
    page = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    sign_in(page, base, "dana")
    open_card(page, base, ADULT)
    page.get_by_role("button", name="Hand over to the patron").click()
    expect(page.get_by_role("heading", name="Choose your new PIN")).to_be_visible()
    text = page.locator("body").inner_text()
    for private in ("dana", "Rivera", ADULT, "Central", "Sign out"):
        assert private not in text, private
    expect(page.get_by_label("New PIN", exact=True)).to_be_focused()
    shot(page, "11-patron-step")

    # Keyboard only: type, Tab, type, Enter.
    page.keyboard.type("1212")
    page.keyboard.press("Tab")
    page.keyboard.type("1212")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("cannot be a repeating number")
    assert "Rivera" not in page.locator("body").inner_text()
    shot(page, "12-patron-step-refused")

    page.get_by_label("New PIN", exact=True).focus()
    page.keyboard.type(NEW_PIN)
    page.keyboard.press("Tab")
    page.keyboard.type(NEW_PIN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(f"{base}/card/{ADULT}?done=pin_patron")
    expect(page.locator("#notice")).to_contain_text("The patron has set a new PIN.")
    assert not shows_pin(page.content(), NEW_PIN, ADULT)
    shot(page, "13-patron-step-done")
    assert three_protocols(bridge, ADULT, NEW_PIN) == (True, True, True)

    # Staff-typed entry stays, and Enter in its fields sets that PIN (not the hand-over).
    page.get_by_label("I have seen the card holder's photo ID").check()
    page.get_by_label("New PIN", exact=True).fill(OTHER_PIN)
    page.get_by_label("New PIN again").fill(OTHER_PIN)
    page.get_by_label("New PIN again").press("Enter")
    expect(page.locator("#notice")).to_contain_text("The new PIN is set.")
    assert three_protocols(bridge, ADULT, OTHER_PIN) == (True, True, True)
    resets = [e for e in bridge.audit_events() if e.get("event") == "staff_pin_reset"]
    assert [(e["staff"], e["check"], e["how"]) for e in resets] == [
        ("dana", "photo_id", "patron_typed"),
        ("dana", "photo_id", "staff_typed"),
    ]


def refusals(bridge: Daemon, barcode: str, pin: str) -> tuple[str, str, str]:
    """What SIP2 (AF screen message, with CQN), LDAP (the bind's diagnostic) and RADIUS (the
    Reply-Message of an Access-Reject) say to this PIN."""
    sip2 = Sip2(bridge)
    try:
        answer = sip2.check(barcode, pin)
    finally:
        sip2.close()
    assert "|CQN|" in answer
    screen = re.search(r"\|AF([^|]*)\|", answer)
    host, port = bridge.address("ldap")
    dn = f"uid={barcode},ou=patrons,dc=library,dc=example"
    conn = ldap3.Connection(ldap3.Server(host, port=port), user=dn, password=pin)
    try:
        assert not conn.bind()
        diagnostic = str(conn.result["message"])
    finally:
        conn.unbind()
    reply = pyrad_auth(bridge, barcode, pin)
    assert reply.code == 3  # Access-Reject
    return (screen.group(1) if screen else ""), diagnostic, reply["Reply-Message"][0]


def must_change_reasons(bridge: Daemon, count: int) -> list[tuple[str, str]]:
    """The audit's (protocol, reason) for one-time PINs refused, once `count` are written (the
    audit line is written after the answer is sent)."""
    found: list[tuple[str, str]] = []
    for _ in range(100):
        found = [
            (e["protocol"], e["reason"])
            for e in bridge.audit_events()
            if e.get("outcome") == "pin_must_change"
        ]
        if len(found) >= count:
            break
        time.sleep(0.1)
    return found


def test_one_time_pin_works_only_to_choose_a_new_pin(bridge: Daemon, browser: Browser) -> None:
    base = base_of(bridge)
    page = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    sign_in(page, base, "dana")
    open_card(page, base, ADULT)
    page.get_by_role("button", name="Print a one-time PIN").click()
    expect(page.get_by_role("heading", name="Riverside Public Library")).to_be_visible()
    one_time = page.locator("#one-time-pin").inner_text().strip()
    assert re.fullmatch(r"\d{4}", one_time)
    expect(page.get_by_text("it is shown only this once")).to_be_visible()
    shot(page, "14-one-time-slip")
    page.get_by_role("link", name="Back to the card").click()
    expect(page.get_by_role("heading", name="Rivera, Ana")).to_be_visible()
    assert not shows_pin(page.locator("body").inner_text(), one_time, ADULT)

    sip2, ldap, radius = refusals(bridge, ADULT, one_time)
    assert "My Account" in sip2 and "My Account" in ldap and "My Account" in radius
    assert sorted(must_change_reasons(bridge, 3)) == [
        ("ldap", "one-time PIN: change at My Account"),
        ("radius", "one-time PIN: change at My Account"),
        ("sip2", "one-time PIN: change at My Account"),
    ]
    issued = [e for e in bridge.audit_events() if e.get("event") == "pin_one_time_issued"]
    assert len(issued) == 1 and issued[0]["actor"] == "staff:dana@Central"
    page.reload()  # the history panel shows the refusals in staff wording
    expect(page.get_by_text("One-time PIN: change at My Account").first).to_be_visible()

    # My Account: the one-time PIN opens only the form that replaces it.
    patron = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    portal = base_of(bridge, "portal")
    patron.goto(f"{portal}/login")
    patron.get_by_label("Card number").fill(ADULT)
    patron.get_by_label("PIN", exact=True).fill(one_time)
    patron.get_by_role("button", name="Sign in").click()
    expect(patron.get_by_role("heading", name="Choose your new PIN")).to_be_visible()
    shot(patron, "15-portal-first-pin")
    patron.goto(f"{portal}/account")
    expect(patron).to_have_url(f"{portal}/login")  # no session from a one-time PIN
    patron.get_by_label("Card number").fill(ADULT)
    patron.get_by_label("PIN", exact=True).fill(one_time)
    patron.get_by_role("button", name="Sign in").click()
    patron.get_by_label("PIN on your slip").fill(one_time)
    patron.get_by_label("New PIN", exact=True).fill(OTHER_PIN)
    patron.get_by_label("New PIN again").fill(OTHER_PIN)
    patron.get_by_role("button", name="Change PIN").click()
    expect(patron.get_by_text("Your PIN has been changed.")).to_be_visible()
    assert three_protocols(bridge, ADULT, OTHER_PIN) == (True, True, True)
    assert three_protocols(bridge, ADULT, one_time) == (False, False, False)
    assert one_time not in bridge.logs()
