"""Any exception from a store is an answer, an audit line and an error line, never silence.

Issue 21 found a RADIUS request with no reply and no audit line when a store raised ValueError
(Koha's zero dates). Here the real daemon's SQLite store holds a row whose expiry date does not
parse, so `verify_pin` raises ValueError: each protocol gives its store-unavailable answer, the
audit says `store_unavailable`, the log says `store_error` with the exception's type and place
(never its message, never the PIN), and nothing is counted against the card.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator

import pytest

from bridge.radius import packet as rp
from tests.harness import Daemon
from tests.pins import WRONG_PIN
from tests.stress.guess_clients import Nas, Sip2, audit_for, wait_until

SECRET = "testing123"
BROKEN = "21234000009501"

SECTIONS = f"""
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
store_unavailable = "reject"
[[radius.clients]]
name = "loopback"
network = "127.0.0.0/8"
secret = "{SECRET}"
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("store-errors"), SECTIONS).start()
    try:
        with sqlite3.connect(d.dir / "patrons.db") as conn:
            conn.execute(
                "INSERT INTO patrons (barcode, record_id, name, expires, pin_hash, updated_at)"
                " VALUES (?, 'r9501', 'Zero, Date', '0000-00-00', NULL, '2026-01-01')",
                (BROKEN,),
            )
        yield d
    finally:
        d.stop()


def error_lines(daemon: Daemon) -> list[dict[str, object]]:
    lines = []
    for line in daemon.stderr_path.read_text().splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == "store_error":
                lines.append(event)
    return lines


async def test_radius_answers_and_audits(daemon: Daemon) -> None:
    nas = await Nas(daemon.address("radius"), SECRET.encode()).open("127.0.0.1")
    try:
        reply = await nas.ask(BROKEN, WRONG_PIN)
    finally:
        nas.close()
    assert reply.code == rp.ACCESS_REJECT
    await wait_until(lambda: bool(audit_for(daemon, BROKEN)), "the request audited")
    assert [e["outcome"] for e in audit_for(daemon, BROKEN)] == ["store_unavailable"]


async def test_sip2_answers_and_audits(daemon: Daemon) -> None:
    session = await Sip2.login(daemon.address("sip2"), "127.0.0.1", "selfcheck", "sc-secret-1")
    try:
        reply = await session.ask(
            f"63001{'20240101    101010'}{' ' * 10}AOMAIN|AA{BROKEN}|AC|AD{WRONG_PIN}|".encode()
        )
    finally:
        await session.close()
    assert reply.startswith(b"64") and b"|CQN|" in reply
    await wait_until(lambda: len(audit_for(daemon, BROKEN)) >= 2, "the request audited")
    outcomes = [e["outcome"] for e in audit_for(daemon, BROKEN)]
    assert outcomes == ["store_unavailable", "store_unavailable"]


def test_error_lines_name_the_exception_not_its_message(daemon: Daemon) -> None:
    daemon.stop()  # the log writer drains before the process ends
    daemon.start()
    lines = error_lines(daemon)
    assert len(lines) == 2
    assert {line["error"] for line in lines} == {"ValueError"}
    assert all(re.fullmatch(r"[\w.]+\.py:\d+", str(line["at"])) for line in lines)
    assert WRONG_PIN not in daemon.stderr_path.read_text()
    assert "0000-00-00" not in json.dumps(lines)  # the message is not quoted
