"""Staff accounts in the browser's pages, in process: only the admin role gets them (403 for
desk and supervisor on every page and action, from the server), CSRF on every POST, the
password policy, role changes and disabling that take effect at the account's next click, TOTP
enrolment shown once, and an audit line for every change."""

from __future__ import annotations

import re

import pyotp
import pytest

from tests.staff.support import PASSWORD, StaffEnv

NEW_PASSWORD = "a long new passphrase 7"  # a staff password, not a PIN
PATHS = [
    ("GET", "/staff"),
    ("POST", "/staff"),
    ("GET", "/staff/dana"),
    *[
        ("POST", f"/staff/dana/{what}")
        for what in ("role", "disable", "enable", "password", "totp", "totp_remove")
    ],
]


@pytest.mark.parametrize("name", ["dana", "sam"])
@pytest.mark.parametrize(("method", "path"), PATHS)
def test_only_admins_manage_staff(env: StaffEnv, name: str, method: str, path: str) -> None:
    env.login(name)
    if method == "GET":
        page = env.client.get(path)
    else:
        fields = {
            "role": "admin",
            "name": "eve",
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
        }
        page = env.post(path, **fields)
    assert page.status_code == 403
    assert "staff_forbidden" in env.audit.names()
    assert env.desk.accounts.get("dana").role.value == "desk"  # type: ignore[union-attr]
    assert env.desk.accounts.get("eve") is None
    assert "Staff accounts" not in env.client.get("/desk").text


@pytest.mark.parametrize("what", ["role", "disable", "password", "totp"])
def test_every_change_needs_csrf(env: StaffEnv, what: str) -> None:
    env.login("ada")
    page = env.client.post(f"/staff/dana/{what}", data={"role": "admin"})
    assert page.status_code == 403
    assert env.desk.accounts.get("dana").role.value == "desk"  # type: ignore[union-attr]


def test_admin_adds_an_account_under_the_policy(env: StaffEnv) -> None:
    env.login("ada")
    assert "Staff accounts" in env.client.get("/desk").text
    listing = env.client.get("/staff")
    assert all(name in listing.text for name in ("dana", "sam", "ada"))
    short = env.post("/staff", name="eve", role="desk", password="short", password_again="short")
    assert "at least 12 characters" in short.text
    named = env.post(
        "/staff",
        name="eve",
        role="desk",
        password="eve is my password",
        password_again="eve is my password",
    )
    assert "must not contain the account name" in named.text
    mismatch = env.post(
        "/staff", name="eve", role="desk", password=NEW_PASSWORD, password_again=NEW_PASSWORD + "x"
    )
    assert "do not match" in mismatch.text
    taken = env.post(
        "/staff", name="dana", role="desk", password=NEW_PASSWORD, password_again=NEW_PASSWORD
    )
    assert "already an account" in taken.text
    made = env.post(
        "/staff", name="eve", role="supervisor", password=NEW_PASSWORD, password_again=NEW_PASSWORD
    )
    assert made.url.path == "/staff/eve" and "The account is added." in made.text
    assert NEW_PASSWORD not in made.text
    event = next(e for e in env.audit.events if e["event"] == "staff_account_added")
    assert (event["staff"], event["account"], event["role"]) == ("ada", "eve", "supervisor")
    env.client.cookies.clear()
    env.login("eve", NEW_PASSWORD)
    assert "eve · Supervisor · Central" in env.client.get("/desk").text


def test_role_disable_enable_and_password(env: StaffEnv) -> None:
    env.login("ada")
    page = env.post("/staff/dana/role", role="supervisor")
    assert "The role is changed." in page.text and "Supervisor" in page.text
    page = env.post("/staff/dana/password", password=NEW_PASSWORD, password_again=NEW_PASSWORD)
    assert "The password is set." in page.text
    page = env.post("/staff/dana/disable")
    assert "The account is disabled" in page.text
    names = [e["event"] for e in env.audit.events if e["event"].startswith("staff_account_")]
    assert names == ["staff_account_role", "staff_account_password", "staff_account_disabled"]
    # dana, now disabled, cannot sign in with the new password; enabled again, can.
    admin_cookies = dict(env.client.cookies)
    env.client.cookies.clear()
    assert "not correct" in env.login("dana", NEW_PASSWORD).text
    env.client.cookies.update(admin_cookies)
    env.post("/staff/dana/enable")
    env.client.cookies.clear()
    env.login("dana", NEW_PASSWORD)
    assert "dana · Supervisor · Central" in env.client.get("/desk").text
    assert "not correct" in env.login("dana", PASSWORD).text


def test_a_disabled_account_loses_its_session_at_the_next_click(env: StaffEnv) -> None:
    env.login("dana")
    dana = dict(env.client.cookies)
    env.client.cookies.clear()
    env.login("ada")
    env.post("/staff/dana/disable")
    env.client.cookies.clear()
    env.client.cookies.update(dana)
    assert env.client.get("/desk", follow_redirects=False).status_code == 303


def test_an_admin_cannot_demote_or_disable_themselves(env: StaffEnv) -> None:
    env.login("ada")
    assert env.post("/staff/ada/role", role="desk").status_code == 400
    assert env.post("/staff/ada/disable").status_code == 400
    assert env.desk.accounts.get("ada").role.value == "admin"  # type: ignore[union-attr]


def test_totp_enrol_is_shown_once_and_then_required(env: StaffEnv) -> None:
    env.login("ada")
    page = env.post("/staff/dana/totp")
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert found is not None and "otpauth://totp/" in page.text
    secret = found.group(1)
    assert secret not in env.client.get("/staff/dana").text
    assert all(secret not in str(e) for e in env.audit.events)
    env.client.cookies.clear()
    assert "not correct" in env.login("dana").text  # the password alone no longer does
    code = pyotp.TOTP(secret).at(env.desk.clock())
    page = env.client.post(
        "/login",
        data={
            "csrf": env.csrf(),
            "name": "dana",
            "password": PASSWORD,
            "branch": "0",
            "code": code,
        },
    )
    assert page.url.path == "/desk"
    env.client.cookies.clear()
    env.login("ada")
    assert "The second factor is removed." in env.post("/staff/dana/totp_remove").text
    assert env.desk.accounts.get("dana").totp_secret is None  # type: ignore[union-attr]


def test_unknown_account(env: StaffEnv) -> None:
    env.login("ada")
    assert env.client.get("/staff/nobody").status_code == 404
    assert env.post("/staff/nobody/role", role="desk").status_code == 404
