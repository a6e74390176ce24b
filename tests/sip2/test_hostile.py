"""Hostile and mangled SIP2 through the real daemon (issue 20 and 21).

- Oversized AA/AO/AC/CN fields: every line the daemon writes stays short, with an explicit
  marker, and a flood of distinct huge barcodes leaves its memory where it was.
- A mangled 63 whose AA swallowed the AD (the `|` lost) must not show the PIN's digits in the
  audit (it once showed `******5961`); a mangled 93 must not put the password in the log.
- `sip2_login_failed` says why, at warning level.
- An AY that is not one digit is answered with 96.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.sip2.codec import RESEND
from tests.harness import DEMO, Daemon
from tests.ldap.test_hostile import rss_kib
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.sip2.wire import DATE, Wire, login_msg, patron_msg, trailer

SECRET = "sc-secret-1"
SECTIONS = f"""
[sip2]
listen = ["127.0.0.1:0"]
max_message_length = 8192

[[sip2.accounts]]
login = "selfcheck"
password = "{SECRET}"
institution = "MAIN"

[[sip2.accounts]]
login = "remote"
password = "remote-secret-1"
networks = ["10.0.0.0/8"]
"""
THROTTLE = """
source_max_failures = 100000
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, SECTIONS, throttle=THROTTLE).start()
    try:
        yield d
    finally:
        d.stop()


def logged_in(d: Daemon) -> Wire:
    w = Wire(d.address("sip2"))
    assert w.login("selfcheck", SECRET) == b"941\r"
    return w


def lines(d: Daemon) -> list[dict[str, Any]]:
    d.stop()  # the writer drains every queued line before the process exits
    out = []
    for path in (d.stderr_path, d.audit_path):
        out += [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
    return out


def test_login_failures_say_why_at_warning_without_secrets(daemon: Daemon) -> None:
    w = Wire(daemon.address("sip2"))
    assert w.login("selfcheck", "wrong-secret") == b"940\r"
    assert w.login("nobody", SECRET) == b"940\r"
    assert w.login("remote", "remote-secret-1") == b"940\r"
    w.sock.close()
    w = Wire(daemon.address("sip2"))
    assert w.ask(login_msg(alg=b"11")) == b"940\r"
    # mangled: the `|` between CN and CO lost, so the CN holds the password
    assert w.ask(f"9300CNselfcheckCO{SECRET}|CPdesk|".encode()) == b"940\r"
    w.sock.close()
    failed = [e for e in lines(daemon) if e["event"] == "sip2_login_failed"]
    assert [e["reason"] for e in failed] == [
        "wrong password",
        "unknown login",
        "source not in the account's networks",
        "unsupported uid/pwd algorithm (only 0, plain text)",
        "unknown login",
    ]
    assert all(e["level"] == "warning" for e in failed)
    assert [e["client"] for e in failed] == ["selfcheck", "", "remote", "selfcheck", ""]
    text = daemon.logs()
    assert SECRET not in text and "wrong-secret" not in text and "nobody" not in text


def test_glued_pin_never_shows_in_the_audit(daemon: Daemon) -> None:
    with logged_in(daemon) as w:
        for barcode in ("1234", DEMO["active"]):
            # the `|` between AA and AD lost: AA holds the PIN (and no AD: a lookup)
            body = f"63001{DATE}          AOMAIN|AA{barcode}AD{DEMO_PIN}|AC|".encode()
            assert w.ask(body).startswith(b"64")
            # ... and with a PIN field after it (a client that repeats fields): a PIN check
            body = f"63001{DATE}          AOMAIN|AA{barcode}AD{DEMO_PIN}|AC|AD{WRONG_PIN}|"
            assert w.ask(body.encode()).startswith(b"64")
    written = lines(daemon)
    audited = [e for e in written if e["event"] == "auth"]
    assert len(audited) == 2
    for event in audited:
        assert event["barcode"].startswith("(malformed, ")
    assert not [e for e in written if DEMO_PIN in json.dumps(e)]


def test_oversized_fields_are_bounded_and_forgotten(daemon: Daemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    huge = "7" * 7000

    def flood(w: Wire, first: int, count: int) -> None:
        for i in range(first, first + count):
            barcode = f"{i:08d}{huge}"
            assert w.ask(patron_msg("63", barcode, WRONG_PIN, institution="I" * 500)).startswith(
                b"64"
            )

    with Wire(daemon.address("sip2")) as w:
        # a login with a huge CN and CO: refused, and the CN is not logged
        assert w.ask(login_msg("C" * 4000, "P" * 3000)) == b"940\r"
    with logged_in(daemon) as w:
        flood(w, 0, 40)
        before = rss_kib(pid)
        flood(w, 1000, 600)
        after = rss_kib(pid)
        # an AC (terminal password) and AO of thousands of bytes, a valid card
        body = (
            f"63001{DATE}          AO{'O' * 3000}|AA{DEMO['active']}|AC{'A' * 3000}|AD{DEMO_PIN}|"
        )
        assert w.ask(body.encode()).startswith(b"64")
    assert after <= before * 1.10, (before, after)
    written = lines(daemon)
    assert all(len(json.dumps(e)) < 1000 for e in written)
    audited = [e for e in written if e["event"] == "auth"]
    assert len(audited) == 641
    assert sum(e["barcode"] == "(malformed, 7008 bytes)" for e in audited) == 640
    assert daemon.stderr_path.stat().st_size + daemon.audit_path.stat().st_size < 1_000_000


@pytest.mark.parametrize("ay", [b"12", b"", b"x"])
def test_sequence_not_one_digit_gets_96(daemon: Daemon, ay: bytes) -> None:
    with logged_in(daemon) as w:
        body = patron_msg("63", DEMO["active"], DEMO_PIN) + b"AY" + ay + b"AZ"
        assert w.ask(trailer(body[:-2], None)) == RESEND + b"\r"
        assert w.ask(trailer(patron_msg("63", DEMO["active"], DEMO_PIN), 3)).startswith(b"64")
    assert not [e for e in lines(daemon) if e["event"] == "auth" and e.get("outcome") != "accepted"]
