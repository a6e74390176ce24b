"""Each SP's patron policy, through real SPs (two mod_auth_mellon locations): an expired card is
refused on the sign-in page for an SP whose policy refuses it and accepted, as
`library-walk-in@<scope>`, for one whose policy allows it; already signed in, the strict SP
still refuses it. A card locked by wrong PINs says so, as on the PIN pages."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.federation.mellon import Sp, federation, mellon
from tests.federation.test_apache_openidc import browser, fill, shot
from tests.harness import DEMO
from tests.pins import DEMO_PIN, WRONG_PIN

__all__ = ["browser"]
pytestmark = pytest.mark.browser

STRICT = Sp(path="/a")  # the default [policy]: expired cards refused
LENIENT = Sp(path="/b", config="[saml.service_providers.policy]\nallow_expired = true")


def test_expired_and_locked_cards(tmp_path: Path, browser: Browser) -> None:
    throttle = "card_lock_after = 3\ncard_delay_base = 0"
    with federation(tmp_path, [STRICT, LENIENT], throttle=throttle) as fed, mellon(fed) as apache:
        page = browser.new_context(locale="en-US").new_page()
        page.goto(f"{apache}/a/index.html")
        fill(page, DEMO["expired"], DEMO_PIN)
        expect(page.get_by_role("alert")).to_contain_text("This card has expired")
        shot(page, "21-saml-expired-refused")

        page.goto(f"{apache}/b/index.html")
        fill(page, DEMO["expired"], DEMO_PIN)
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#affiliation")).to_have_text("library-walk-in@library.example.org")
        page.goto(f"{apache}/a/index.html")  # signed in at the bridge now: still refused
        expect(page.get_by_role("alert")).to_contain_text("This card has expired")

        page = browser.new_context(locale="en-US").new_page()
        page.goto(f"{apache}/a/index.html")
        for _ in range(3):
            fill(page, DEMO["active"], WRONG_PIN)
            expect(page.get_by_role("alert")).to_contain_text("not correct")
        fill(page, DEMO["active"], DEMO_PIN)
        expect(page.get_by_role("alert")).to_contain_text("This card is locked")
        shot(page, "22-saml-locked")
    fed.daemon.stop()
    outcomes = [
        (e.get("protocol"), e.get("client"), e.get("outcome"))
        for e in fed.daemon.audit_events()
        if e.get("event") == "auth"
    ]
    assert ("saml", fed.entity(0), "card_expired") in outcomes
    assert ("saml", fed.entity(1), "accepted") in outcomes
