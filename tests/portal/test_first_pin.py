"""My Account and a one-time PIN from the staff desk: no session from it, only the form that
replaces it; that form needs its CSRF token, checks the one-time PIN again (a wrong one is a
counted guess), applies the policy with its reason, and then signs the patron in."""

from __future__ import annotations

import re
from functools import partial

from tests.harness import DEMO
from tests.pins import NEW_PIN, WRONG_PIN
from tests.portal.support import Env

ACTIVE = DEMO["active"]


def one_time(env: Env) -> str:
    portal = env.client.portal
    assert portal is not None
    issue = partial(env.core.authenticator.issue_one_time_pin, ACTIVE, actor="staff:test")
    result, pin = portal.call(issue)
    assert result.ok
    return str(pin)


def first_pin(env: Env, slip: str, new: str, again: str | None = None, csrf: bool = True) -> object:
    data = {"barcode": ACTIVE, "old_pin": slip, "new_pin": new, "new_again": again or new}
    if csrf:
        data["csrf"] = env.csrf()
    return env.client.post("/pin/first", data=data)


def test_a_one_time_pin_opens_only_the_change_form(env: Env) -> None:
    slip = one_time(env)
    page = env.login(ACTIVE, slip)
    assert "Choose your new PIN" in page.text and slip not in page.text
    assert env.client.get("/account", follow_redirects=False).headers["location"] == "/login"
    assert env.client.get("/pin", follow_redirects=False).headers["location"] == "/login"


def test_the_form_checks_csrf_the_pin_and_the_policy(env: Env) -> None:
    slip = one_time(env)
    assert first_pin(env, slip, NEW_PIN, csrf=False).status_code == 403  # type: ignore[attr-defined]
    wrong = first_pin(env, WRONG_PIN, NEW_PIN)
    assert "current PIN is not correct" in wrong.text  # type: ignore[attr-defined]
    assert env.core.authenticator.throttle.failures(ACTIVE, env.core.authenticator.clock()) == 1
    weak = first_pin(env, slip, "1212")
    assert "repeating number" in weak.text  # type: ignore[attr-defined]
    same = first_pin(env, slip, slip)
    assert "different from your current PIN" in same.text  # type: ignore[attr-defined]
    mismatch = first_pin(env, slip, NEW_PIN, "4827")
    assert "do not match" in mismatch.text  # type: ignore[attr-defined]
    for page in (wrong, weak, same, mismatch):
        assert not re.search(rf"value=\"{slip}\"", page.text)  # type: ignore[attr-defined]
    done = first_pin(env, slip, NEW_PIN)
    assert "Your PIN has been changed." in done.text  # type: ignore[attr-defined]
    assert env.client.get("/account").url.path == "/account"
    env.client.cookies.clear()
    assert env.login(ACTIVE, NEW_PIN).url.path == "/account"
