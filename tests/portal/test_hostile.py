"""Hostile form fields and headers against the PIN pages of the real daemon (issue 21).

Every line the daemon writes stays short (barcodes as their size, other text cut with a
marker), a flood of distinct long barcodes on the login and forgot-PIN forms leaves its memory
where it was, and nothing answers with a server error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import DEMO, Daemon
from tests.ldap.test_hostile import rss_kib
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.portal.support import SmtpServer

THROTTLE = "source_max_failures = 100000\nglobal_max_failures = 1000000"


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def daemon(tmp_path: Path, smtp: SmtpServer) -> Iterator[Daemon]:
    sections = f"""
[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
reset_requests_per_source = 100000

[smtp]
host = "127.0.0.1"
port = {smtp.port}
sender = "pins@library.example.org"
"""
    d = Daemon(tmp_path, sections, throttle=THROTTLE).start()
    try:
        yield d
    finally:
        d.stop()


def csrf(client: httpx.Client, path: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found
    return found.group(1)


HOSTILE_HEADERS = {
    "Accept-Language": ("x" * 60 + ",") * 100,
    "User-Agent": "u" * 6000,
    "X-Forwarded-For": ", ".join(["1.2.3.4"] * 500),
    "Referer": "http://e.example/" + "r" * 5000,
}


def written(d: Daemon) -> list[dict[str, Any]]:
    d.stop()
    out = []
    for path in (d.stderr_path, d.audit_path):
        out += [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
    return out


def test_hostile_forms_and_headers(daemon: Daemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    host, port = daemon.address("portal")

    def flood(client: httpx.Client, first: int, count: int) -> None:
        login, forgot = csrf(client, "/login"), csrf(client, "/forgot")
        for i in range(first, first + count):
            barcode = f"{i:08d}" + "7" * 4000  # cut to 256 by the pages, still malformed
            data = {"csrf": login, "barcode": barcode, "pin": WRONG_PIN, "extra": "e" * 3000}
            answer = client.post("/login", data=data, headers=HOSTILE_HEADERS)
            assert answer.status_code < 500
            data = {"csrf": forgot, "barcode": barcode + " \x00", "note": "n" * 3000}
            answer = client.post("/forgot", data=data, headers=HOSTILE_HEADERS)
            assert answer.status_code < 500

    with httpx.Client(base_url=f"http://{host}:{port}", timeout=30) as client:
        flood(client, 0, 30)
        before = rss_kib(pid)
        flood(client, 1000, 300)
        after = rss_kib(pid)
        ok = {"csrf": csrf(client, "/login"), "barcode": DEMO["active"], "pin": DEMO_PIN}
        assert client.post("/login", data=ok, headers=HOSTILE_HEADERS).status_code in (200, 303)
    assert after <= before * 1.10, (before, after)
    lines = written(daemon)
    assert all(len(json.dumps(e)) < 1000 for e in lines)
    logins = [e for e in lines if e["event"] == "auth"]
    assert sum(e["barcode"] == "(malformed, 256 bytes)" for e in logins) == 330
    resets = [e for e in lines if e["event"] == "reset_requested"]
    assert len(resets) == 330
    assert all(
        e["result"] == "malformed" and e["barcode"].startswith("(malformed, ") for e in resets
    )
    assert logins[-1]["outcome"] == "accepted"
