"""Forgot-PIN and reset-link pages through the test client (mail captured by a fake mailer)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.harness import DEMO, UNKNOWN
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN
from tests.portal.support import LINK, PORTAL_SECTION, Env, body_of, make_config, open_env

ACTIVE = DEMO["active"]


def request_link(env: Env, barcode: str, **headers: str) -> str:
    token = env.csrf("/forgot")
    response = env.client.post("/forgot", data={"csrf": token, "barcode": barcode}, headers=headers)
    assert response.status_code == 200
    return str(response.text)


def wait_link(env: Env, count: int = 1) -> str:
    message = env.mailer.wait(count)[count - 1]
    found = LINK.search(body_of(message))
    assert found
    return found.group(1)


def set_pin_via(env: Env, link: str, pin: str, again: str | None = None) -> str:
    page = env.client.get(link.replace("http://127.0.0.1:8080", ""))
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert csrf and token
    response = env.client.post(
        "/reset",
        data={
            "csrf": csrf.group(1),
            "token": token.group(1),
            "new_pin": pin,
            "new_again": again or pin,
        },
    )
    return str(response.text)


def test_same_answer_for_existing_unknown_and_no_email_cards(env: Env) -> None:
    strip = re.compile(r'name="csrf" value="[^"]*"')
    answers = {
        strip.sub("", request_link(env, barcode))
        for barcode in (ACTIVE, UNKNOWN, DEMO["minor"], "not a card")
    }
    assert len(answers) == 1
    (text,) = answers
    assert "photo ID" in text
    env.drain()
    results = {e.get("result") for e in env.audit.events if e["event"] == "reset_requested"}
    assert {"token_issued", "unknown_card", "no_email"} <= results


def test_link_from_base_url_not_host_header(env: Env) -> None:
    request_link(env, ACTIVE, host="evil.example.com")
    message = env.mailer.wait(1)[0]
    assert message["To"] == "ana.rivera@example.org"
    assert "Riverside Public Library" in message["Subject"]
    link = wait_link(env)
    assert link.startswith("http://127.0.0.1:8080/reset?token=")
    assert "evil" not in body_of(message)


def test_reset_sets_pin_once_and_clears_lock(env: Env) -> None:
    request_link(env, ACTIVE)
    link = wait_link(env)
    done = set_pin_via(env, link, NEW_PIN)
    assert "new PIN is set" in done
    assert "pin_reset" in env.audit.names()
    assert "lock_cleared" in env.audit.names()
    env.mailer.wait(2)  # the "your PIN was changed" notice
    assert "changed" in env.mailer.messages[1]["Subject"]
    again = env.client.get(link.replace("http://127.0.0.1:8080", ""))
    assert again.status_code == 400
    assert "not valid" in again.text
    env.client.cookies.clear()
    assert env.login(ACTIVE, NEW_PIN).url.path == "/account"


def test_token_used_twice_by_post_is_refused(env: Env) -> None:
    request_link(env, ACTIVE)
    link = wait_link(env)
    page = env.client.get(link.replace("http://127.0.0.1:8080", ""))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    token = link.rsplit("=", 1)[1]
    data = {"csrf": csrf.group(1), "token": token, "new_pin": NEW_PIN, "new_again": NEW_PIN}
    assert "new PIN is set" in env.client.post("/reset", data=data).text
    csrf2 = re.search(r'name="csrf" value="([^"]+)"', env.client.get("/login").text)
    assert csrf2
    second = env.client.post(
        "/reset",
        data={**data, "csrf": csrf2.group(1), "new_pin": OTHER_PIN, "new_again": OTHER_PIN},
    )
    assert second.status_code == 400
    assert "reset_token_rejected" in env.audit.names()


def test_expired_token_is_refused(env: Env) -> None:
    request_link(env, ACTIVE)
    link = wait_link(env)
    env.clock.now += 30 * 60 - 1
    assert env.client.get(link.replace("http://127.0.0.1:8080", "")).status_code == 200
    env.clock.now += 2
    assert env.client.get(link.replace("http://127.0.0.1:8080", "")).status_code == 400


def test_newer_token_voids_older(env: Env) -> None:
    request_link(env, ACTIVE)
    first = wait_link(env, 1)
    request_link(env, ACTIVE)
    second = wait_link(env, 2)
    assert first != second
    assert env.client.get(first.replace("http://127.0.0.1:8080", "")).status_code == 400
    assert env.client.get(second.replace("http://127.0.0.1:8080", "")).status_code == 200


def test_policy_failure_keeps_the_token(env: Env) -> None:
    request_link(env, ACTIVE)
    link = wait_link(env)
    refused = set_pin_via(env, link, "2222")
    assert "repeating number" in refused
    assert "new PIN is set" in set_pin_via(env, link, NEW_PIN)


def test_mismatch_keeps_the_token(env: Env) -> None:
    request_link(env, ACTIVE)
    link = wait_link(env)
    assert 'id="new_again-error"' in set_pin_via(env, link, NEW_PIN, OTHER_PIN)
    assert "new PIN is set" in set_pin_via(env, link, NEW_PIN)


def test_reset_without_csrf_refused(env: Env) -> None:
    env.client.get("/login")
    response = env.client.post(
        "/reset", data={"token": "x" * 43, "new_pin": NEW_PIN, "new_again": NEW_PIN}
    )
    assert response.status_code == 403
    forgot = env.client.post("/forgot", data={"barcode": ACTIVE})
    assert forgot.status_code == 403


def test_requests_limited_per_card_silently_and_per_source_openly(env: Env) -> None:
    for _ in range(5):
        request_link(env, ACTIVE)
    env.drain()
    limited = [e for e in env.audit.events if e.get("result") == "rate_limited"]
    assert len(limited) == 2
    assert len(env.mailer.messages) == 3
    for _ in range(5):  # 10 per source per hour by default
        request_link(env, UNKNOWN)
    token = env.csrf("/forgot")
    refused = env.client.post("/forgot", data={"csrf": token, "barcode": UNKNOWN})
    assert refused.status_code == 429
    env.clock.now += 3601
    assert env.client.post("/forgot", data={"csrf": token, "barcode": UNKNOWN}).status_code == 200


def test_reset_page_bad_tokens(env: Env) -> None:
    for query in ("", "?token=", "?token=abc", "?token=%00%01", "?token=" + "a" * 500):
        assert env.client.get("/reset" + query).status_code == 400


def test_demo_pin_never_on_a_page(env: Env) -> None:
    request_link(env, ACTIVE)
    link = wait_link(env)
    page = env.client.get(link.replace("http://127.0.0.1:8080", "")).text
    assert DEMO_PIN not in page


def test_scanning_reset_links_is_limited_per_source(env: Env) -> None:
    for i in range(20):
        assert env.client.get(f"/reset?token=guess{i:04d}").status_code == 400
    assert env.client.get("/reset?token=guess-more").status_code == 429
    env.clock.now += 3601
    assert env.client.get("/reset?token=guess-again").status_code == 400


def test_requests_limited_per_email_address(tmp_path: Path) -> None:
    extra = PORTAL_SECTION.replace(
        "[[portal.help_links]]",
        "reset_requests_per_email = 1\nreset_requests_per_card = 5\n[[portal.help_links]]",
        1,
    )
    for env in open_env(tmp_path, make_config(tmp_path, extra)):
        request_link(env, ACTIVE)
        request_link(env, ACTIVE)
        env.drain()
        assert len(env.mailer.messages) == 1
        results = [e.get("result") for e in env.audit.events if e["event"] == "reset_requested"]
        # The two requests are worked in background tasks, in either order.
        assert sorted(results) == ["rate_limited", "token_issued"]
