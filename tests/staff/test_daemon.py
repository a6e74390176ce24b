"""The desk on the real daemon: its own listener over HTTPS (the certificate checked against
the one written here), the `__Host-` cookie, security headers, and a desk account signed in."""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import httpx

from bridge.tls import generate_self_signed
from tests.harness import Daemon

PASSWORD = "river desk pass 42"  # a staff password, not a PIN


def test_staff_listener_over_tls(tmp_path: Path) -> None:
    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    sections = """
[staff]
listen = "127.0.0.1:0"
base_url = "https://127.0.0.1"
tls_cert = "cert.pem"
tls_key = "key.pem"
"""
    with Daemon(tmp_path, sections=sections) as bridge:
        made = bridge.cli("staff", "add", "dana", "--role", "desk", "--stdin", input=PASSWORD)
        assert made.returncode == 0, made.stderr
        host, port = bridge.address("staff")
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        with httpx.Client(base_url=f"https://{host}:{port}", verify=context) as client:
            page = client.get("/login")
            assert page.status_code == 200
            assert "__Host-staff=" in page.headers["set-cookie"]
            assert "secure" in page.headers["set-cookie"].lower()
            assert "script-src" not in page.headers["content-security-policy"]
            assert page.headers["strict-transport-security"]
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
            assert csrf is not None
            signed_in = client.post(
                "/login",
                data={"csrf": csrf.group(1), "name": "dana", "password": PASSWORD, "branch": "0"},
            )
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/desk"
            assert "dana · Desk · Main" in client.get("/desk").text
    events = [e.get("event") for e in bridge.audit_events()]
    assert "staff_login" in events
    assert PASSWORD not in bridge.logs()
