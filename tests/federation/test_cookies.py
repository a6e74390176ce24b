"""The PIN pages and the OpenID Connect provider on one host name: cookies do not isolate by
port (RFC 6265 8.5), so two listeners on 127.0.0.1 stand for the two sharing a name behind a
proxy. Each keeps its own session cookie (`session` and `bridge-sso`), so a patron can be
signed in to both at once, and signing out of one leaves the other alone."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.federation.support import RP, Flow, code_of, error_of, sign_in, start_daemon
from tests.harness import DEMO
from tests.pins import DEMO_PIN


def portal_url(daemon_config: str) -> str:
    found = re.search(r'\[portal\]\nlisten = "([^"]+)"', daemon_config)
    assert found
    return f"http://{found.group(1)}"


def test_pin_pages_and_provider_sessions_live_side_by_side(tmp_path: Path) -> None:
    daemon, issuer = start_daemon(tmp_path)
    pages = portal_url(daemon.config.read_text())
    flow = Flow("vendor", RP)
    try:
        with httpx.Client(timeout=30) as http:
            form = http.get(f"{pages}/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', form)
            assert token
            data = {"csrf": token.group(1), "barcode": DEMO["active"], "pin": DEMO_PIN}
            assert http.post(f"{pages}/login", data=data).headers["location"] == "/account"
            assert code_of(sign_in(http, issuer, flow, DEMO["active"], DEMO_PIN), RP)

            def in_pages() -> bool:
                return http.get(f"{pages}/account").status_code == 200

            assert in_pages()  # the provider's sign-in did not replace the pages' session
            assert code_of(http.get(f"{issuer}/oidc/authorize?{flow.query(prompt='none')}"), RP)
            http.get(f"{issuer}/oidc/logout")  # out of the provider only
            assert in_pages()
            silent = http.get(f"{issuer}/oidc/authorize?{flow.query(prompt='none')}")
            assert error_of(silent) == "login_required"
            assert {c.name for c in http.cookies.jar} == {"session", "bridge-sso"}
    finally:
        daemon.stop()
