"""The consent page over real HTTP against the daemon, for a client with `consent = true`:
shown after the PIN (and after single sign-on), naming the client and what it will receive;
Allow sends the code and is remembered for that patron, client and scope set; Deny returns
`access_denied` with the client's state; `prompt=consent` asks again; `prompt=none` gets
`consent_required`; an answer from another browser, or without the form's CSRF token, is
refused. Clients without `consent` are never asked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.federation.support import (
    CONSENT_RP,
    RP,
    SECRET,
    Flow,
    code_of,
    error_of,
    form_fields,
    redeem,
    sign_in,
    start_daemon,
    userinfo,
)
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN

ACTIVE = DEMO["active"]
FLOW = Flow("booking", CONSENT_RP, scope="openid profile library")


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    daemon, issuer = start_daemon(tmp_path)
    try:
        yield daemon, issuer
    finally:
        daemon.stop()


def shown(http: httpx.Client, response: httpx.Response) -> httpx.Response:
    """The consent page a sign-in or an authorize redirected to."""
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith("/oidc/consent?request=")
    return http.get(str(response.url.join(location)))


def consent_page(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    assert "<h1>Share your details with Room Booking?</h1>" in response.text
    return response.text


def answer(http: httpx.Client, issuer: str, page: str, choice: str) -> httpx.Response:
    return http.post(f"{issuer}/oidc/consent", data={**form_fields(page), "answer": choice})


def test_consent_is_asked_once_then_remembered(bridge: tuple[Daemon, str]) -> None:
    daemon, issuer = bridge
    with httpx.Client(timeout=30) as http:
        first = shown(http, sign_in(http, issuer, FLOW, ACTIVE, DEMO_PIN))
        page = consent_page(first)
        # Allow redirects to the client: the page's CSP lets its form go there, nowhere else.
        csp = first.headers["content-security-policy"]
        assert "form-action 'self' https://booking.example.org;" in csp
        assert first.headers["cache-control"] == "no-store"
        items = re.findall(r"<li>([^<]+)</li>", page)
        assert items == [
            "a number that identifies you to this service (not your card number)",
            "your name",
            "your card&#39;s standing (active or expired), borrower category and home library",
        ]  # by the scopes asked (no email here), in the patron's language
        page = consent_page(shown(http, http.get(f"{issuer}/oidc/authorize?{FLOW.query()}")))
        code = code_of(answer(http, issuer, page, "allow"), CONSENT_RP)
        token = redeem(issuer, code, CONSENT_RP, ("booking", SECRET)).json()["access_token"]
        assert userinfo(issuer, token).json()["name"] == "Rivera, Ana"
        # Remembered: the same client and scopes go straight through, even silently.
        assert code_of(http.get(f"{issuer}/oidc/authorize?{FLOW.query()}"), CONSENT_RP)
        assert code_of(http.get(f"{issuer}/oidc/authorize?{FLOW.query(prompt='none')}"), CONSENT_RP)
        # prompt=consent asks again; more scopes ask again.
        consent_page(
            shown(http, http.get(f"{issuer}/oidc/authorize?{FLOW.query(prompt='consent')}"))
        )
        wider = Flow("booking", CONSENT_RP, scope="openid profile email library")
        page = consent_page(shown(http, http.get(f"{issuer}/oidc/authorize?{wider.query()}")))
        assert "<li>your email address</li>" in page
        silent = http.get(f"{issuer}/oidc/authorize?{wider.query(prompt='none')}")
        assert error_of(silent) == "consent_required"
    # Another patron is asked for themselves.
    with httpx.Client(timeout=30) as other:
        consent_page(shown(other, sign_in(other, issuer, FLOW, DEMO["minor"], DEMO_PIN)))
    daemon.stop()
    answers = [e for e in daemon.audit_events() if e.get("event") == "oidc_consent"]
    assert [(e["client"], e["outcome"]) for e in answers] == [("booking", "allowed")]


def test_deny_returns_access_denied_and_is_not_remembered(bridge: tuple[Daemon, str]) -> None:
    _, issuer = bridge
    with httpx.Client(timeout=30) as http:
        page = consent_page(shown(http, sign_in(http, issuer, FLOW, ACTIVE, DEMO_PIN)))
        denied = answer(http, issuer, page, "deny")
        assert denied.status_code == 303
        location = denied.headers["location"]
        assert location.startswith(CONSENT_RP + "?")
        query = parse_qs(urlsplit(location).query)
        assert query["error"] == ["access_denied"] and query["state"] == ["st-1"]
        assert "code" not in query and "iss" not in query  # see oidc.error_params
        # The form is spent, and nothing was remembered: the next visit asks again.
        assert answer(http, issuer, page, "allow").status_code == 400
        consent_page(shown(http, http.get(f"{issuer}/oidc/authorize?{FLOW.query()}")))


def test_answers_from_elsewhere_are_refused(bridge: tuple[Daemon, str]) -> None:
    _, issuer = bridge
    with httpx.Client(timeout=30) as http, httpx.Client(timeout=30) as stranger:
        page = consent_page(shown(http, sign_in(http, issuer, FLOW, ACTIVE, DEMO_PIN)))
        fields = form_fields(page)
        # Another browser with its own session (and its own CSRF token) cannot answer it.
        consent_page(shown(stranger, sign_in(stranger, issuer, FLOW, DEMO["minor"], DEMO_PIN)))
        theirs = form_fields(
            shown(stranger, stranger.get(f"{issuer}/oidc/authorize?{FLOW.query()}")).text
        )
        # Nor see it.
        assert stranger.get(f"{issuer}/oidc/consent?request={fields['request']}").status_code == 400
        stolen = {**theirs, "request": fields["request"], "answer": "allow"}
        assert stranger.post(f"{issuer}/oidc/consent", data=stolen).status_code == 400
        # Without the CSRF token of this browser's cookie: refused.
        forged = {"request": fields["request"], "answer": "allow", "csrf": "0" * 64}
        assert http.post(f"{issuer}/oidc/consent", data=forged).status_code == 403
        # The rightful answer still works.
        assert code_of(answer(http, issuer, page, "allow"), CONSENT_RP)


def test_clients_without_consent_are_not_asked(bridge: tuple[Daemon, str]) -> None:
    _, issuer = bridge
    with httpx.Client(timeout=30) as http:
        flow = Flow("vendor", RP, scope="openid profile")
        assert code_of(sign_in(http, issuer, flow, ACTIVE, DEMO_PIN), RP)
        prompt = http.get(f"{issuer}/oidc/authorize?{flow.query(prompt='consent')}")
        assert code_of(prompt, RP)
