"""What the daemon writes: accounting and decisions in the audit log, drop reasons in the log,
one decision per duplicated request, and the reject delay that holds no worker."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bridge.radius import packet as rp
from tests.conftest import require_tool
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN, WRONG_PIN_2
from tests.radius.udp import Nas

SECRET = "testing123"
SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 1.0

[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def accounting(nas: Nas, status: int, session: bytes, extra: list[tuple[int, bytes]]) -> bytes:
    attrs = [(1, DEMO["active"].encode()), (40, u32(status)), (44, session), *extra]
    return rp.encode_request(
        rp.ACCOUNTING_REQUEST, nas.ident(), b"", attrs, nas.secret, message_authenticator=False
    )


def test_audit_log_and_drop_reasons(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, sections=SECTIONS).start()
    server = daemon.address("radius")
    nas = Nas(server, SECRET.encode())
    stranger = Nas(server, SECRET.encode(), source="127.0.0.9")
    try:
        # Accounting Start and Stop; the Stop retransmitted once (must not be logged twice).
        start = accounting(nas, 1, b"sess-42", [])
        nas.send(start)
        assert nas.receive().code == rp.ACCOUNTING_RESPONSE
        stop = accounting(nas, 2, b"sess-42", [(46, u32(1800)), (42, u32(1000)), (43, u32(9))])
        nas.send(stop)
        response = nas.receive_raw()
        nas.send(stop)
        assert nas.receive_raw() == response
        # Accounting with the wrong secret: dropped, not audited.
        forged = rp.encode_request(
            rp.ACCOUNTING_REQUEST,
            nas.ident(),
            b"",
            [(40, u32(1))],
            b"wrong",
            message_authenticator=False,
        )
        nas.send(forged)
        # A duplicated Access-Request: one decision in the audit log.
        raw, _ = nas.access(DEMO["active"].encode(), WRONG_PIN.encode())
        nas.send(raw)
        nas.send(raw)
        first = nas.receive_raw()
        nas.send(raw)
        assert nas.receive_raw() == first
        # CHAP: refused with a reason; no PIN check.
        chap = nas.access(
            DEMO["active"].encode(), None, extra=[(rp.CHAP_PASSWORD, b"\x01" + bytes(16))]
        )
        assert nas.ask(chap).code == rp.ACCESS_REJECT
        # Drops: no Message-Authenticator, malformed, unknown client (logged once).
        nas.send(nas.access(DEMO["active"].encode(), DEMO_PIN.encode(), ma=False)[0])
        nas.send(b"\x01\x01\x00\x18" + bytes(16) + b"\x01\x01xx")
        for _ in range(3):
            stranger.send(stranger.status()[0])
        nas.nothing_but_probe()
    finally:
        nas.close()
        stranger.close()
        assert daemon.stop() == 0
    events = daemon.audit_events()
    acct = [e for e in events if e["event"] == "accounting"]
    assert [e["status"] for e in acct] == ["Start", "Stop"]
    assert acct[1]["session_id"] == "sess-42"
    assert acct[1]["session_time"] == 1800
    assert acct[1]["input_octets"] == 1000 and acct[1]["output_octets"] == 9
    assert acct[1]["barcode"].endswith(DEMO["active"][-4:])
    assert acct[1]["barcode"] != DEMO["active"]  # masked by the audit
    decisions = [e for e in events if e["event"] == "auth"]
    assert [d["outcome"] for d in decisions] == ["bad_pin"]
    assert decisions[0]["protocol"] == "radius" and decisions[0]["client"] == "loopback"
    logs = daemon.logs()
    assert "CHAP is not supported" in logs
    assert "no Message-Authenticator (required for this client)" in logs
    assert "bad accounting Request Authenticator" in logs
    assert '"reason":"malformed: bad attribute length"' in logs  # the kind: no numbers
    assert '"detail":"attribute 1 has length 1"' in logs
    assert logs.count('"radius_unknown_client"') == 1
    assert SECRET not in logs


def test_reject_delay_holds_no_worker(tmp_path: Path) -> None:
    """A wrong PIN's reject waits on a timer; an accept asked right after overtakes it."""
    with Daemon(tmp_path, sections=SECTIONS) as daemon:
        nas = Nas(daemon.address("radius"), SECRET.encode())
        try:
            wrong, _wrong_auth = nas.access(DEMO["fines"].encode(), WRONG_PIN_2.encode())
            right, _right_auth = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
            nas.send(wrong)
            nas.send(right)
            first, second = nas.receive(), nas.receive()
            assert (first.code, first.identifier) == (rp.ACCESS_ACCEPT, right[1])
            assert (second.code, second.identifier) == (rp.ACCESS_REJECT, wrong[1])
        finally:
            nas.close()


def test_radclient_accounting_start_stop_audited(tmp_path: Path) -> None:
    require_tool("radclient")
    with Daemon(tmp_path, sections=SECTIONS) as daemon:
        host, port = daemon.address("radius")
        packets = (
            f'User-Name = "{DEMO["minor"]}"\nAcct-Status-Type = Start\nAcct-Session-Id = "rc-1"\n'
            "\n"
            f'User-Name = "{DEMO["minor"]}"\nAcct-Status-Type = Stop\nAcct-Session-Id = "rc-1"\n'
            "Acct-Session-Time = 60\nAcct-Terminate-Cause = Idle-Timeout\n"
        )
        result = subprocess.run(
            ["radclient", "-x", "-r", "1", "-t", "5", f"{host}:{port}", "acct", SECRET],
            input=packets,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.count("Received Accounting-Response") == 2
    acct = [e for e in daemon.audit_events() if e["event"] == "accounting"]
    assert [(e["status"], e["session_id"]) for e in acct] == [("Start", "rc-1"), ("Stop", "rc-1")]
    assert acct[1]["terminate_cause"] == "Idle-Timeout"


def test_accounting_audited_even_at_log_level_warning(tmp_path: Path) -> None:
    """Audit lines are records: a quiet log level must not drop them."""
    sections = SECTIONS + '\n[log]\nlevel = "warning"\n'
    with Daemon(tmp_path, sections=sections) as daemon:
        nas = Nas(daemon.address("radius"), SECRET.encode())
        try:
            nas.send(accounting(nas, 1, b"quiet-1", []))
            assert nas.receive().code == rp.ACCOUNTING_RESPONSE
            reply = nas.ask(nas.access(DEMO["active"].encode(), DEMO_PIN.encode()))
            assert reply.code == rp.ACCESS_ACCEPT
        finally:
            nas.close()
    events = [e["event"] for e in daemon.audit_events()]
    assert events == ["accounting", "auth"]
