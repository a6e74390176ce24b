"""The desk over a real core and SQLite store: sign-in, roles enforced by the server, the
reset rule (photo ID for adults, the card for minors), the PIN policy, CSRF, sign-out, idle
time-out, search limits, the standing panel and the decision history."""

from __future__ import annotations

import re

import pytest

from bridge.core.patron import Context
from bridge.core.secret import Secret
from tests.harness import DEMO, UNKNOWN
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN
from tests.staff.support import PASSWORD, StaffEnv

ADULT, MINOR, BLOCKED = DEMO["active"], DEMO["minor"], DEMO["blocked"]
CSRF_VALUE = re.compile(r'name="csrf" value="[0-9a-f]+"')


def authenticate(env: StaffEnv, barcode: str, pin: str, protocol: str = "sip2") -> str:
    portal = env.client.portal
    assert portal is not None
    ctx = Context(protocol, f"{protocol}-client", "127.0.0.9")
    decision = portal.call(env.core.authenticator.authenticate, barcode, Secret(pin), ctx)
    return decision.outcome.value


def test_sign_in_and_out(env: StaffEnv) -> None:
    assert env.client.get("/desk", follow_redirects=False).headers["location"] == "/login"
    page = env.login("dana")
    assert page.url.path == "/desk"
    assert "dana · Desk · Central" in page.text
    assert "staff_login" in env.audit.names()
    login = next(e for e in env.audit.events if e["event"] == "staff_login")
    assert login["branch"] == "Central" and login["role"] == "desk"
    csrf = env.csrf("/desk")
    out = env.client.post("/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.headers["location"] == "/login?out=1"
    assert env.client.get("/desk", follow_redirects=False).status_code == 303
    assert len(env.desk.sessions) == 0


def test_wrong_password_is_audited_and_throttled(env: StaffEnv) -> None:
    for _ in range(env.desk.throttle.rules.card_free_failures + 1):
        page = env.login("dana", "wrong password!!")
        assert "not correct" in page.text
    assert "staff_login_failed" in env.audit.names()
    page = env.login("dana")  # the right password, inside the delay: refused
    assert page.status_code == 429
    assert "staff_login_refused" in env.audit.names()
    # Keyed apart from patrons: the patron throttle knows nothing of it.
    assert env.core.authenticator.throttle.failures("dana", env.clock()) == 0
    assert authenticate(env, ADULT, DEMO_PIN) == "accepted"


def test_unknown_account_reads_like_a_wrong_password(env: StaffEnv) -> None:
    assert "not correct" in env.login("nobody").text
    assert "not correct" in env.login("../etc").text


def test_idle_timeout_ends_the_session(env: StaffEnv) -> None:
    env.login("dana")
    env.clock.now += 601
    assert env.client.get("/desk", follow_redirects=False).status_code == 303


@pytest.mark.parametrize("action", ["block", "unblock"])
def test_desk_cannot_block_or_unblock(env: StaffEnv, action: str) -> None:
    env.login("dana")
    card = env.client.get(f"/card/{ADULT}")
    assert "Block this card" not in card.text
    page = env.post(f"/card/{BLOCKED if action == 'unblock' else ADULT}/{action}", reason="x")
    assert page.status_code == 403
    assert "staff_forbidden" in env.audit.names()
    assert "patron_blocked" not in env.audit.names()
    assert "patron_unblocked" not in env.audit.names()


@pytest.mark.parametrize("name", ["sam", "ada"])
def test_supervisor_and_admin_block_and_unblock(env: StaffEnv, name: str) -> None:
    env.login(name)
    page = env.post(f"/card/{ADULT}/block", reason="Card reported stolen")
    assert "The card is blocked." in page.text
    assert "Blocked: Card reported stolen" in page.text
    assert authenticate(env, ADULT, DEMO_PIN) == "card_blocked"
    page = env.post(f"/card/{ADULT}/unblock")
    assert "The card is unblocked." in page.text
    assert authenticate(env, ADULT, DEMO_PIN) == "accepted"
    event = next(e for e in env.audit.events if e["event"] == "patron_blocked")
    assert event["actor"] == f"staff:{name}@Central"


def test_block_needs_a_reason(env: StaffEnv) -> None:
    env.login("sam")
    page = env.post(f"/card/{ADULT}/block", reason="   ")
    assert "Give a reason" in page.text


@pytest.mark.parametrize(
    "path",
    [f"/card/{ADULT}/pin", f"/card/{ADULT}/unlock", f"/card/{ADULT}/link", "/logout"],
)
def test_every_form_needs_its_csrf_token(env: StaffEnv, path: str) -> None:
    env.login("ada")
    page = env.client.post(path, data={"new_pin": NEW_PIN, "new_again": NEW_PIN})
    assert page.status_code == 403


def test_actions_without_a_session_are_refused(env: StaffEnv) -> None:
    csrf = env.csrf("/login")
    page = env.client.post(f"/card/{ADULT}/pin", data={"csrf": csrf, "check": "photo_id"})
    assert page.status_code == 403


def test_adult_reset_needs_the_photo_id(env: StaffEnv) -> None:
    env.login("dana", branch="1")
    data = {"new_pin": NEW_PIN, "new_again": NEW_PIN}
    page = env.post(f"/card/{ADULT}/pin", **data)
    assert "Confirm the check you made" in page.text
    page = env.post(f"/card/{ADULT}/pin", check="card", **data)
    assert "a photo ID is needed" in page.text
    assert authenticate(env, ADULT, NEW_PIN) == "bad_pin"
    page = env.post(f"/card/{ADULT}/pin", check="photo_id", **data)
    assert "The new PIN is set." in page.text
    assert NEW_PIN not in CSRF_VALUE.sub("", page.text)  # a random token may hold any digits
    assert authenticate(env, ADULT, NEW_PIN) == "accepted"
    event = next(e for e in env.audit.events if e["event"] == "staff_pin_reset")
    assert (event["staff"], event["branch"], event["check"]) == ("dana", "Eastside", "photo_id")
    env.drain()
    (notice,) = env.mailer.messages
    assert notice["To"] == "ana.rivera@example.org"


def test_minor_reset_needs_only_the_card(env: StaffEnv) -> None:
    env.login("dana")
    card = env.client.get(f"/card/{MINOR}")
    assert "Minor" in card.text and "library card was presented" in card.text
    page = env.post(f"/card/{MINOR}/pin", check="card", new_pin=NEW_PIN, new_again=NEW_PIN)
    assert "The new PIN is set." in page.text
    assert authenticate(env, MINOR, NEW_PIN) == "accepted"
    env.drain()
    assert env.mailer.messages == []  # no address on record


def test_policy_refuses_1212_with_its_reason(env: StaffEnv) -> None:
    env.login("dana")
    page = env.post(f"/card/{ADULT}/pin", check="photo_id", new_pin="1212", new_again="1212")
    assert "repeating number" in page.text
    assert 'value="1212"' not in page.text
    page = env.post(f"/card/{ADULT}/pin", check="photo_id", new_pin=NEW_PIN, new_again=OTHER_PIN)
    assert "do not match" in page.text


def test_reset_clears_the_lock_and_ends_portal_sessions(env: StaffEnv) -> None:
    auth = env.core.authenticator
    ended: list[str] = []
    auth.on_invalidate.append(ended.append)
    for _ in range(auth.throttle.rules.card_lock_after):
        auth.throttle.record_failure(ADULT, "127.0.0.9", env.clock())
    env.login("dana")
    card = env.client.get(f"/card/{ADULT}")
    assert "Locked until" in card.text and "10 wrong PINs" in card.text
    env.post(f"/card/{ADULT}/pin", check="photo_id", new_pin=NEW_PIN, new_again=NEW_PIN)
    assert auth.throttle.failures(ADULT, env.clock()) == 0
    assert ADULT in ended


def test_clear_lock(env: StaffEnv) -> None:
    auth = env.core.authenticator
    for _ in range(auth.throttle.rules.card_lock_after):
        auth.throttle.record_failure(ADULT, "127.0.0.9", auth.clock())
    env.login("dana")
    page = env.post(f"/card/{ADULT}/unlock")
    assert "The lock is cleared." in page.text
    assert authenticate(env, ADULT, DEMO_PIN) == "accepted"


def test_standing_at_a_glance(env: StaffEnv) -> None:
    env.login("dana")
    assert "Expired on 2020-01-31" in env.client.get(f"/card/{DEMO['expired']}").text
    assert "Blocked: Lost card reported" in env.client.get(f"/card/{BLOCKED}").text
    fines = env.client.get(f"/card/{DEMO['fines']}").text
    assert "Fines over the limit" in fines
    adult = env.client.get(f"/card/{ADULT}").text
    assert "Active" in adult and "Adult" in adult
    assert "a•••@example.org" in adult and "ana.rivera@" not in adult


def test_find_by_barcode_name_and_email(env: StaffEnv) -> None:
    env.login("dana")
    found = env.client.get("/desk", params={"q": ADULT}, follow_redirects=False)
    assert found.headers["location"] == f"/card/{ADULT}"
    by_name = env.client.get("/desk", params={"q": "Rivera"})
    assert "Rivera, Ana" in by_name.text and "Okafor" not in by_name.text
    by_given = env.client.get("/desk", params={"q": "Ana"})
    assert "Rivera, Ana" in by_given.text
    by_email = env.client.get("/desk", params={"q": "chidi.okafor@example.org"})
    assert "Okafor, Chidi" in by_email.text
    assert "No card matches" in env.client.get("/desk", params={"q": UNKNOWN}).text
    # Wildcards are text, not patterns: "%" lists nobody.
    assert "No card matches" in env.client.get("/desk", params={"q": "%"}).text
    assert "No card matches" in env.client.get("/desk", params={"q": "%%"}).text


def test_search_is_capped(env: StaffEnv) -> None:
    env.login("dana")
    page = env.client.get("/desk", params={"q": "a"})  # too short for a name search
    assert "No card matches" in page.text


def test_history_shows_decisions_over_protocols(env: StaffEnv) -> None:
    assert authenticate(env, ADULT, DEMO_PIN, "sip2") == "accepted"
    assert authenticate(env, ADULT, WRONG_PIN, "ldap") == "bad_pin"
    assert authenticate(env, ADULT, DEMO_PIN, "radius") == "accepted"
    authenticate(env, "x" * 500, DEMO_PIN, "radius")  # malformed: never kept
    env.login("dana")
    page = env.client.get(f"/card/{ADULT}").text
    assert "Recent sign-ins with this card (3)" in page
    for protocol in ("sip2", "ldap", "radius"):
        assert f"<td>{protocol}</td>" in page
    assert "Wrong PIN" in page


def test_spanish(env: StaffEnv) -> None:
    page = env.client.get("/login", params={"lang": "es"})
    assert 'lang="es"' in page.text and "Acceso del personal" in page.text
    env.login("dana")
    card = env.client.get(f"/card/{ADULT}")
    assert "Restablecer el PIN" in card.text


def test_removed_account_loses_access_at_once(env: StaffEnv) -> None:
    env.login("dana")
    import sqlite3

    with sqlite3.connect(env.desk.accounts.path) as conn:
        conn.execute("UPDATE staff_accounts SET disabled = 1 WHERE name = 'dana'")
    assert env.client.get("/desk", follow_redirects=False).status_code == 303


def test_password_never_in_audit(env: StaffEnv) -> None:
    env.login("dana", "wrong password!!")
    env.login("dana")
    assert all(PASSWORD not in str(e) for e in env.audit.events)


def test_resend_reset_link(env: StaffEnv) -> None:
    env.login("dana")
    assert "Email a reset link" in env.client.get(f"/card/{ADULT}").text
    assert "Email a reset link" not in env.client.get(f"/card/{MINOR}").text  # no address
    page = env.post(f"/card/{ADULT}/link")
    assert "A reset link was emailed" in page.text
    env.drain()
    (mail,) = env.mailer.messages
    assert mail["To"] == "ana.rivera@example.org"
    assert "http://127.0.0.1:8080/reset?token=" in str(mail.get_body(("plain",)))
    event = next(e for e in env.audit.events if e["event"] == "staff_reset_link")
    assert event["staff"] == "dana" and event["sent"] is True
    page = env.post(f"/card/{MINOR}/link")
    assert "No reset link could be sent" in page.text


def test_unknown_and_malformed_cards(env: StaffEnv) -> None:
    env.login("dana")
    assert env.client.get(f"/card/{UNKNOWN}").status_code == 404
    assert env.client.get("/card/%20%00bad").status_code == 404
    assert env.client.get("/card/" + "9" * 500).status_code == 404


def test_totp_second_factor(env: StaffEnv) -> None:
    import pyotp

    from bridge.staff.roles import Role
    from bridge.staff.totp import new_secret

    secret = new_secret()
    account = env.desk.accounts.get("dana")
    assert account is not None
    env.desk.accounts.put("dana", Role.DESK, account.password_hash, secret)
    assert "not correct" in env.login("dana").text  # the password alone is not enough
    wrong = "000000" if pyotp.TOTP(secret).at(env.clock()) != "000000" else "111111"
    data = {"name": "dana", "password": PASSWORD, "branch": "0"}
    assert (
        "not correct"
        in env.client.post("/login", data={"csrf": env.csrf(), **data, "code": wrong}).text
    )
    code = pyotp.TOTP(secret).at(env.clock())
    page = env.client.post("/login", data={"csrf": env.csrf(), **data, "code": code})
    assert page.url.path == "/desk"
    failed = [e for e in env.audit.events if e["event"] == "staff_login_failed"]
    assert {e["factor"] for e in failed} == {"totp"}
    # The same code again (another PC, a shoulder-surfer): refused.
    env.csrf("/desk")
    env.client.post("/logout", data={"csrf": env.csrf("/desk")})
    again = env.client.post("/login", data={"csrf": env.csrf(), **data, "code": code})
    assert "not correct" in again.text


def test_new_card_with_first_pin(env: StaffEnv) -> None:
    env.login("dana")
    assert "New card" not in env.client.get("/desk").text
    assert env.client.get("/new").status_code == 403
    assert env.post("/new", barcode="21234000000099").status_code == 403
    env.client.post("/logout", data={"csrf": env.csrf("/desk")})
    env.login("sam")
    assert "New card with its first PIN" in env.client.get("/desk").text
    fields = {
        "barcode": "21234000000099",
        "name": "Haddad, Lina",
        "email": "lina@example.org",
        "category": "ADULT",
        "expires": "2031-06-30",
    }
    page = env.post("/new", **fields, new_pin="1212", new_again="1212")
    assert "repeating number" in page.text and 'value="Haddad, Lina"' in page.text
    page = env.post(
        "/new", **{**fields, "expires": "next year"}, new_pin=NEW_PIN, new_again=NEW_PIN
    )
    assert "A field is not valid" in page.text
    page = env.post("/new", **fields, new_pin=NEW_PIN, new_again=NEW_PIN)
    assert "The card is made" in page.text and "Haddad, Lina" in page.text
    assert authenticate(env, "21234000000099", NEW_PIN) == "accepted"
    again = env.post("/new", **fields, new_pin=NEW_PIN, new_again=NEW_PIN)
    assert "already exists" in again.text
    added = next(e for e in env.audit.events if e["event"] == "patron_added")
    assert added["actor"] == "staff:sam@Central"
