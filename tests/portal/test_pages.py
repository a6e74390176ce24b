"""My Account pages through Starlette's test client, over a real core and SQLite store."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.core.store import Capability
from bridge.portal.web import CSP
from tests.harness import DEMO, UNKNOWN
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN
from tests.portal.support import CSRF, PORTAL_SECTION, Env, make_config, open_env

ACTIVE = DEMO["active"]


def no_pin_in(text: str) -> None:
    for pin in (DEMO_PIN, NEW_PIN, OTHER_PIN, WRONG_PIN):
        assert not re.search(rf"(?<![0-9]){pin}(?![0-9])", text), pin


def test_login_then_account_shows_name_and_expiry(env: Env) -> None:
    response = env.login(ACTIVE, DEMO_PIN)
    assert response.status_code == 200
    assert str(response.url).endswith("/account")
    assert "Rivera, Ana" in response.text
    assert "2030-12-31" in response.text
    assert 'href="/pin"' in response.text
    assert "auth" not in env.audit.names()  # decisions are audited by the core's own call


def test_wrong_pin_and_unknown_card_read_the_same(env: Env) -> None:
    wrong = env.login(ACTIVE, WRONG_PIN)
    unknown = env.login(UNKNOWN, WRONG_PIN)
    assert wrong.status_code == unknown.status_code == 200
    strip = re.compile(r'name="(csrf|barcode)" value="[^"]*"')
    assert strip.sub("", wrong.text) == strip.sub("", unknown.text)
    assert "not correct" in wrong.text
    no_pin_in(wrong.text)


def test_locked_card_says_so(env: Env) -> None:
    for _ in range(10):  # the default card_lock_after
        env.client.cookies.clear()
        env.login(ACTIVE, WRONG_PIN)
    response = env.login(ACTIVE, DEMO_PIN)
    assert "locked" in response.text
    assert "/account" not in str(response.url)


def test_blocked_card_refused_but_expired_card_may_manage_its_pin(env: Env) -> None:
    assert "blocked" in env.login(DEMO["blocked"], DEMO_PIN).text
    env.client.cookies.clear()
    response = env.login(DEMO["expired"], DEMO_PIN)
    assert str(response.url).endswith("/account")
    assert "(expired)" in response.text


def test_post_without_csrf_is_refused(env: Env) -> None:
    env.client.get("/login")
    response = env.client.post("/login", data={"barcode": ACTIVE, "pin": DEMO_PIN})
    assert response.status_code == 403
    assert "csrf_refused" in env.audit.names()
    # A token bound to another cookie is refused too.
    other = env.csrf()
    env.client.cookies.clear()
    env.client.get("/login")
    forged = env.client.post("/login", data={"csrf": other, "barcode": ACTIVE, "pin": DEMO_PIN})
    assert forged.status_code == 403


def test_security_headers_and_cookie_flags(env: Env) -> None:
    response = env.client.get("/login")
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "<script" not in response.text


def test_session_id_changes_at_sign_in(env: Env) -> None:
    env.client.get("/login")
    before = env.client.cookies.get("session")
    env.login(ACTIVE, DEMO_PIN)
    after = env.client.cookies.get("session")
    assert before and after and before != after


def test_modify_pin_refused_by_policy_shows_reason_next_to_field(env: Env) -> None:
    env.login(ACTIVE, DEMO_PIN)
    token = env.csrf("/pin")
    response = env.client.post(
        "/pin",
        data={"csrf": token, "old_pin": DEMO_PIN, "new_pin": "1212", "new_again": "1212"},
    )
    assert 'id="new_pin-error"' in response.text
    assert "repeating number" in response.text
    assert 'aria-invalid="true"' in response.text
    assert 'value="1212"' not in response.text
    no_pin_in(response.text)


def test_modify_pin_mismatch_and_wrong_old_pin(env: Env) -> None:
    env.login(ACTIVE, DEMO_PIN)
    token = env.csrf("/pin")
    mismatch = env.client.post(
        "/pin",
        data={"csrf": token, "old_pin": DEMO_PIN, "new_pin": NEW_PIN, "new_again": OTHER_PIN},
    )
    assert 'id="new_again-error"' in mismatch.text
    wrong = env.client.post(
        "/pin", data={"csrf": token, "old_pin": WRONG_PIN, "new_pin": NEW_PIN, "new_again": NEW_PIN}
    )
    assert 'id="old_pin-error"' in wrong.text
    no_pin_in(mismatch.text + wrong.text)


def test_modify_pin_success_ends_other_sessions_only(env: Env) -> None:
    from starlette.testclient import TestClient

    env.login(ACTIVE, DEMO_PIN)
    with TestClient(env.client.app, base_url="http://127.0.0.1:8080") as other:
        page = other.get("/login")
        token = CSRF.search(page.text)
        assert token
        other.post("/login", data={"csrf": token.group(1), "barcode": ACTIVE, "pin": DEMO_PIN})
        assert other.get("/account").url.path == "/account"
        assert env.portal.sessions.count_patron(ACTIVE) == 2

        token2 = env.csrf("/pin")
        done = env.client.post(
            "/pin",
            data={"csrf": token2, "old_pin": DEMO_PIN, "new_pin": NEW_PIN, "new_again": NEW_PIN},
        )
        assert "has been changed" in done.text
        assert "pin_changed" in env.audit.names()
        assert env.client.get("/account").url.path == "/account"  # this browser stays in
        assert other.get("/account").url.path == "/login"  # the other one is out
        assert env.portal.sessions.count_patron(ACTIVE) == 1
    env.client.cookies.clear()
    assert env.login(ACTIVE, NEW_PIN).url.path == "/account"
    assert env.mailer.wait(1)[0]["To"] == "ana.rivera@example.org"


def test_logout(env: Env) -> None:
    env.login(ACTIVE, DEMO_PIN)
    token = env.csrf("/account")
    response = env.client.post("/logout", data={"csrf": token})
    assert response.url.path == "/login"
    assert "signed out" in response.text
    assert env.client.get("/account").url.path == "/login"
    assert env.portal.sessions.count_patron(ACTIVE) == 0


def test_session_idle_timeout(env: Env) -> None:
    env.login(ACTIVE, DEMO_PIN)
    env.clock.now += 14 * 60
    assert env.client.get("/account").url.path == "/account"
    env.clock.now += 15 * 60 + 1
    assert env.client.get("/account").url.path == "/login"


def test_core_invalidation_ends_sessions(env: Env) -> None:
    env.login(ACTIVE, DEMO_PIN)
    env.core.authenticator.invalidate(ACTIVE)  # what a CLI `pin set` or a block triggers
    assert env.client.get("/account").url.path == "/login"


def test_spanish_from_query_cookie_and_accept_language(env: Env) -> None:
    page = env.client.get("/login?lang=es")
    assert '<html lang="es">' in page.text
    assert "Iniciar sesión" in page.text
    assert "Horario" in page.text  # a help link for Spanish only
    assert env.client.get("/login").text.count('lang="es"') >= 1  # the cookie remembers
    env.client.cookies.clear()
    by_header = env.client.get("/login", headers={"accept-language": "es-MX,es;q=0.9,en;q=0.5"})
    assert '<html lang="es">' in by_header.text
    env.client.cookies.clear()
    english = env.client.get("/login", headers={"accept-language": "fr, en;q=0.3"})
    assert '<html lang="en">' in english.text
    assert "Horario" not in english.text
    assert "Library hours" in english.text


def test_library_name_and_labels(env: Env) -> None:
    page = env.client.get("/login")
    assert "Riverside Public Library" in page.text
    assert '<label for="barcode">' in page.text and '<label for="pin">' in page.text


def test_oversized_body_refused(env: Env) -> None:
    response = env.client.post("/login", content=b"x" * 20000)
    assert response.status_code == 413


def test_https_base_url_sets_host_prefixed_secure_cookie_and_hsts(tmp_path: Path) -> None:
    extra = PORTAL_SECTION.replace(
        'base_url = "http://127.0.0.1:8080"', 'base_url = "https://pins.example.org"'
    )
    for env in open_env(tmp_path, make_config(tmp_path, extra)):
        response = env.client.get("https://pins.example.org/login")
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-session=") and "Secure" in cookie
        assert response.headers["strict-transport-security"].startswith("max-age=")


def test_store_that_cannot_change_pins(tmp_path: Path) -> None:
    extra = PORTAL_SECTION.replace(
        "[[portal.help_links]]",
        'external_pin_url = "https://catalogue.example.org/pin"\n[[portal.help_links]]',
        1,
    )
    for env in open_env(tmp_path, make_config(tmp_path, extra)):
        store = env.core.store
        store.capabilities = store.capabilities - {Capability.CHANGE_PIN, Capability.RESET_TOKENS}
        account = env.login(ACTIVE, DEMO_PIN).text
        assert 'href="/pin"' not in account
        assert "changed in its catalogue" in account
        assert "https://catalogue.example.org/pin" in account
        assert "changed in its catalogue" in env.client.get("/pin").text
        forgot = env.client.get("/forgot").text
        assert "photo ID to any branch" in forgot and 'action="/forgot"' not in forgot
