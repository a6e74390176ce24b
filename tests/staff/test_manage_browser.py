"""Staff accounts in Debian's chromium against the real daemon: an admin made with
`patron-bridge staff add` lists the accounts, adds one (the policy refuses a short password),
changes its role, enrols TOTP and disables it; the new account's own sign-in follows each
change; a desk account gets 403 from the server for the same pages. Screenshots, desktop and
narrow, under tests/artifacts/staff/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from playwright.sync_api import Browser, expect

from tests.harness import Daemon
from tests.portal.support import SmtpServer
from tests.staff.test_browser import (
    DESKTOP,
    PASSWORD,
    base_of,
    desk_daemon,
    shot,
    sign_in,
)

pytestmark = pytest.mark.browser

NEW_PASSWORD = "night desk pass 55"  # a staff password, not a PIN


@pytest.fixture
def bridge(tmp_path: Path, smtp: SmtpServer) -> Iterator[Daemon]:
    daemon = desk_daemon(tmp_path, smtp)
    try:
        made = daemon.cli("staff", "add", "ada", "--role", "admin", "--stdin", input=PASSWORD)
        assert made.returncode == 0, made.stderr
        yield daemon
    finally:
        daemon.stop()


def test_admin_manages_staff_accounts(bridge: Daemon, browser: Browser) -> None:
    base = base_of(bridge)
    page = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    sign_in(page, base, "ada")
    page.get_by_role("link", name="Staff accounts").click()
    expect(page.get_by_role("link", name="dana")).to_be_visible()
    expect(page.get_by_role("link", name="sam")).to_be_visible()

    page.get_by_role("textbox", name="Staff account").fill("eve")
    page.get_by_label("Role", exact=True).select_option(label="Desk")
    page.get_by_label("Password", exact=True).fill("short")
    page.get_by_label("Password again").fill("short")
    page.get_by_role("button", name="Add the account").click()
    expect(page.locator("#password-error")).to_contain_text("at least 12 characters")
    shot(page, "16-accounts")
    page.get_by_label("Password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("Password again").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Add the account").click()
    expect(page.locator("#notice")).to_contain_text("The account is added.")

    page.get_by_label("Role", exact=True).select_option(label="Supervisor")
    page.get_by_role("button", name="Save the role").click()
    expect(page.locator("#role-now")).to_have_text("Supervisor")
    page.get_by_role("button", name="Enrol a second factor").click()
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{16,}", secret)
    shot(page, "17-account-totp")

    # eve signs in with the password and a code, as a supervisor.
    eve = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    eve.goto(f"{base}/login")
    eve.get_by_label("Staff account").fill("eve")
    eve.get_by_label("Password").fill(NEW_PASSWORD)
    eve.get_by_label("One-time code").fill(pyotp.TOTP(secret).now())
    eve.get_by_role("button", name="Sign in").click()
    expect(eve.get_by_text("eve · Supervisor · Central")).to_be_visible()

    # Disabled: eve's next click is the sign-in page.
    page.get_by_role("button", name="Disable this account").click()
    expect(page.locator("#state-now")).to_have_text("Disabled")
    shot(page, "18-account-disabled")
    eve.goto(f"{base}/desk")
    expect(eve).to_have_url(f"{base}/login")

    # A desk account: 403 from the server for the list and for a change it posts itself.
    desk = browser.new_context(locale="en-US", viewport=DESKTOP).new_page()
    sign_in(desk, base, "dana")
    expect(desk.get_by_role("link", name="Staff accounts")).to_have_count(0)
    assert desk.request.get(f"{base}/staff").status == 403
    token = desk.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    refused = desk.request.post(f"{base}/staff/dana/role", form={"csrf": token, "role": "admin"})
    assert refused.status == 403

    events = [e.get("event") for e in bridge.audit_events()]
    for event in ("staff_account_added", "staff_account_role", "staff_account_totp"):
        assert event in events
    assert NEW_PASSWORD not in bridge.logs() and secret not in bridge.logs()
