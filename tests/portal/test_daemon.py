"""The pages inside the real daemon, with plain HTTP: staff desk resets end portal sessions."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, NEW_PIN

SECTIONS = """
[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
"""


def csrf(client: httpx.Client, path: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


def test_desk_reset_with_the_cli_ends_portal_sessions(tmp_path: Path) -> None:
    with Daemon(tmp_path, sections=SECTIONS) as daemon:
        host, port = daemon.address("portal")
        with httpx.Client(base_url=f"http://{host}:{port}", follow_redirects=True) as client:
            data = {"csrf": csrf(client, "/login"), "barcode": DEMO["active"], "pin": DEMO_PIN}
            assert client.post("/login", data=data).url.path == "/account"
            done = daemon.cli(
                "pin", "set", DEMO["active"], "--stdin", "--staff", "desk-7", input=NEW_PIN + "\n"
            )
            assert done.returncode == 0, done.stderr
            assert client.get("/account").url.path == "/login"  # told over the control socket
            data = {"csrf": csrf(client, "/login"), "barcode": DEMO["active"], "pin": NEW_PIN}
            assert client.post("/login", data=data).url.path == "/account"
    # The CLI audits the reset in its own process (its log lines, not the daemon's).
    said = done.stdout + done.stderr
    assert re.search(r"pin_reset\b.*actor.{0,3}desk-7", said), said


def test_without_smtp_the_forgot_page_sends_patrons_to_the_desk(tmp_path: Path) -> None:
    with Daemon(tmp_path, sections=SECTIONS) as daemon:
        host, port = daemon.address("portal")
        with httpx.Client(base_url=f"http://{host}:{port}") as client:
            page = client.get("/forgot")
            assert "photo ID to any branch" in page.text
            assert 'action="/forgot"' not in page.text
    assert "portal_no_smtp" in daemon.logs()
