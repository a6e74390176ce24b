"""koha-sql under the real daemon, on MariaDB holding Koha's tables: an old upgraded database's
zero dates answered over RADIUS and shown by `patron show`, and case variants of one card
number sharing one lock over SIP2 (Koha's collation makes them one card)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.radius import packet as rp
from tests.harness import Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import ils_fixtures, servers
from tests.plugins.ils_fixtures import KOHA_LOWERCASE, KOHA_ZERO_DATES
from tests.plugins.seed import SEED
from tests.radius.udp import Nas

SECRET = "koha-radius-secret"
SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{SECRET}"

[sip2]
listen = ["127.0.0.1:0"]

[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
"""

# Locks at the third wrong PIN in total, with no growing delays first, until staff clear it.
LOCK_AT_THREE = """
card_free_failures = 3
card_lock_after = 3
card_lock_seconds = 0
source_max_failures = 1000
"""


@pytest.fixture(scope="module")
def koha_db() -> Iterator[dict[str, Any]]:
    with servers.mariadb_database("pb_kohad") as dbname:
        extra = ils_fixtures.build_koha(dbname, SEED)
        try:
            yield {"database": dbname, **extra}
        finally:
            ils_fixtures.drop_koha_user(extra["user"])


def store_section(db: dict[str, Any]) -> str:
    return f"""
[store]
plugin = "koha-sql"
host = "{servers.MY_HOST}"
port = {servers.MY_PORT}
database = "{db["database"]}"
user = "{db["user"]}"
password = "{db["password"]}"
"""


@pytest.fixture
def daemon(koha_db: dict[str, Any], tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path, SECTIONS, store=store_section(koha_db), throttle=LOCK_AT_THREE) as d:
        yield d


class Sip2:
    def __init__(self, daemon: Daemon) -> None:
        import socket

        self.sock = socket.create_connection(daemon.address("sip2"), timeout=30)
        self.buf = b""
        assert self.ask("9300CNselfcheck|COsc-secret-1|CPdesk|").startswith("941")

    def ask(self, message: str) -> str:
        self.sock.sendall(message.encode() + b"\r")
        while b"\r" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed"
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(b"\r")
        return frame.decode("cp850")

    def check(self, barcode: str, pin: str) -> str:
        return self.ask(f"63001{'20240101    101010'}{' ' * 10}AOMAIN|AA{barcode}|AC|AD{pin}|")

    def close(self) -> None:
        self.sock.close()


def test_zero_dates_over_radius_and_patron_show(daemon: Daemon) -> None:
    """A borrower with 0000-00-00 dates used to get no RADIUS reply and no audit line, and
    `patron show` crashed: now the card is valid (no expiry, no restriction) everywhere."""
    nas = Nas(daemon.address("radius"), SECRET.encode())
    try:
        reply = nas.ask(nas.access(KOHA_ZERO_DATES.barcode.encode(), DEMO_PIN.encode()))
        assert reply.code == rp.ACCESS_ACCEPT
    finally:
        nas.close()
    shown = daemon.cli("patron", "show", KOHA_ZERO_DATES.barcode)
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["expires"] is None and record["blocked"] is False
    decisions = [e for e in daemon.audit_events() if e.get("protocol") == "radius"]
    assert [d["outcome"] for d in decisions] == ["accepted"]


def test_case_variants_share_one_lock(daemon: Daemon) -> None:
    """Wrong PINs alternating k19abc / K19ABC lock the card after card_lock_after (3) in
    total; each case variant used to get a fresh guess budget."""
    lower, upper = KOHA_LOWERCASE.barcode, KOHA_LOWERCASE.barcode.upper()
    sip = Sip2(daemon)
    try:
        assert "|CQY|" in sip.check(upper, DEMO_PIN)
        for typed in (lower, upper, lower):
            answer = sip.check(typed, WRONG_PIN)
            assert "|CQN|" in answer and "locked" not in answer
        for typed in (upper, lower, "K19abc"):
            locked = sip.check(typed, DEMO_PIN)
            assert "|CQN|" in locked and "temporarily locked" in locked, locked
        shown = daemon.cli("patron", "show", lower)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["locked"] is True
        cleared = daemon.cli("lockout", "clear", "k19ABC")
        assert cleared.returncode == 0, cleared.stderr
        assert "|CQY|" in sip.check(lower, DEMO_PIN)
    finally:
        sip.close()
    outcomes = [e["outcome"] for e in daemon.audit_events() if e.get("protocol") == "sip2"]
    assert outcomes.count("bad_pin") == 3 and outcomes.count("card_locked") == 3
