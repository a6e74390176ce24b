"""The one-time PIN and the patron's screen, in process over a real core and SQLite store: the
ID check first, the slip shown once, CSRF and sign-in on every POST, the handover bound to the
staff session and its time limit, the audit line saying how the PIN was chosen."""

from __future__ import annotations

import re

import pytest

from bridge.staff.reset_modes import HANDOVER_SECONDS
from tests.harness import DEMO
from tests.pins import NEW_PIN
from tests.staff.support import StaffEnv, shows_pin
from tests.staff.test_pages import authenticate

ADULT, MINOR = DEMO["active"], DEMO["minor"]
SLIP_PIN = re.compile(r'id="one-time-pin">(\d+)<')


def resets(env: StaffEnv) -> list[tuple[str, str, str]]:
    return [
        (e["staff"], e["check"], e["how"])
        for e in env.audit.events
        if e["event"] == "staff_pin_reset"
    ]


@pytest.mark.parametrize("path", ["onetime", "handover"])
def test_the_check_comes_first(env: StaffEnv, path: str) -> None:
    env.login("dana")
    assert "Confirm the check you made" in env.post(f"/card/{ADULT}/{path}").text
    assert "a photo ID is needed" in env.post(f"/card/{ADULT}/{path}", check="card").text
    assert resets(env) == []
    assert "pin_one_time_issued" not in env.audit.names()


@pytest.mark.parametrize("path", [f"/card/{ADULT}/onetime", f"/card/{ADULT}/handover", "/handover"])
def test_csrf_and_sign_in_are_required(env: StaffEnv, path: str) -> None:
    csrf = env.csrf("/login")
    assert env.client.post(path, data={"csrf": csrf, "check": "photo_id"}).status_code == 403
    env.login("dana")
    assert env.client.post(path, data={"check": "photo_id"}).status_code == 403


def test_one_time_pin_is_shown_once_and_refused_off_the_pin_pages(env: StaffEnv) -> None:
    env.login("dana", branch="1")
    page = env.post(f"/card/{ADULT}/onetime", check="photo_id")
    found = SLIP_PIN.search(page.text)
    assert found is not None and "no-store" in page.headers["cache-control"]
    pin = found.group(1)
    card = env.client.get(f"/card/{ADULT}").text
    assert 'id="one-time-pin"' not in card and not shows_pin(card, pin, ADULT)
    assert authenticate(env, ADULT, pin, "sip2") == "pin_must_change"
    assert authenticate(env, ADULT, pin, "portal") == "accepted"
    assert resets(env) == [("dana", "photo_id", "one_time")]
    issued = next(e for e in env.audit.events if e["event"] == "pin_one_time_issued")
    assert issued["actor"] == "staff:dana@Eastside" and issued["hours"] == 72
    assert all(pin not in str(e) for e in env.audit.events)
    env.drain()
    (notice,) = env.mailer.messages
    assert pin not in notice.as_string()


def test_a_minors_one_time_pin_needs_only_the_card(env: StaffEnv) -> None:
    env.login("dana")
    page = env.post(f"/card/{MINOR}/onetime", check="card")
    assert SLIP_PIN.search(page.text) is not None


HANDOVER = re.compile(r'name="handover" value="([^"]+)"')


def hand_over(env: StaffEnv, barcode: str = ADULT) -> tuple[str, str]:
    """(the patron's screen, its sealed hand-over token)."""
    page = env.post(f"/card/{barcode}/handover", check="photo_id")
    found = HANDOVER.search(page.text)
    assert found is not None, page.text
    return page.text, found.group(1)


def test_the_patrons_screen_shows_nothing_of_staff_or_card(env: StaffEnv) -> None:
    env.login("dana")
    page, token = hand_over(env)
    assert "Choose your new PIN" in page
    for private in ("dana", "Rivera", ADULT, "Central", "Sign out", "/card/"):
        assert private not in page
    refused = env.post("/handover", handover=token, new_pin="1212", new_again="1212")
    assert "cannot be a repeating number" in refused.text and "Rivera" not in refused.text
    assert ADULT not in refused.text
    mismatch = env.post("/handover", handover=token, new_pin=NEW_PIN, new_again="4827")
    assert "do not match" in mismatch.text
    done = env.post("/handover", handover=token, new_pin=NEW_PIN, new_again=NEW_PIN)
    assert done.url.path == f"/card/{ADULT}" and "The patron has set a new PIN." in done.text
    assert authenticate(env, ADULT, NEW_PIN) == "accepted"
    assert resets(env) == [("dana", "photo_id", "patron_typed")]


def test_no_hand_over_without_its_token(env: StaffEnv) -> None:
    env.login("dana")
    _page, token = hand_over(env)
    middle = len(token) // 2
    flipped = token[:middle] + ("B" if token[middle] != "B" else "C") + token[middle + 1 :]
    for forged in ("", "x", flipped, token[:-8]):
        page = env.post("/handover", handover=forged, new_pin=NEW_PIN, new_again=NEW_PIN)
        assert page.status_code == 409
    assert authenticate(env, ADULT, NEW_PIN) == "bad_pin"


def test_the_handover_times_out_and_can_be_cancelled(env: StaffEnv) -> None:
    env.login("dana")
    _page, token = hand_over(env)
    back = env.post("/handover", handover=token, cancel="1")
    assert back.url.path == f"/card/{ADULT}"
    _page, token = hand_over(env)
    env.clock.now += HANDOVER_SECONDS + 1
    page = env.post("/handover", handover=token, new_pin=NEW_PIN, new_again=NEW_PIN)
    assert page.status_code == 409
    assert authenticate(env, ADULT, NEW_PIN) == "bad_pin"


def test_the_handover_belongs_to_its_staff_session(env: StaffEnv) -> None:
    """Another desk's session cannot use the token, even with the page in hand."""
    env.login("dana")
    _page, token = hand_over(env)
    env.client.cookies.clear()
    env.login("sam")
    page = env.post("/handover", handover=token, new_pin=NEW_PIN, new_again=NEW_PIN)
    assert page.status_code == 409
    assert authenticate(env, ADULT, NEW_PIN) == "bad_pin"
