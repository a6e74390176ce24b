"""Hostile binds through the real daemon: huge DNs must cost neither memory nor log space.

Issue 21: 300 anonymous binds with 200,000-character DNs took the daemon from 98 to 277 MB and
wrote 57 MiB of log, because the audit wrote (and remembered) the whole name. Here 1,000 binds,
each with a different 200 KB DN (patron DNs and bare names), must leave the daemon's RSS within
10 % of what it was after a warm-up, and everything it logged under 1 MB.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.ldap import ber
from tests.harness import Daemon
from tests.ldap import oracle
from tests.pins import WRONG_PIN

BASE_DN = "dc=library,dc=example"
SECTIONS = f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
"""
DN_SIZE = 200_000
BINDS = 1_000
CONNECTIONS = 4


def bind_pdu(msgid: int, name: str, password: str) -> bytes:
    """An LDAPv3 simple BindRequest, built with the BER writer (checked against ldap3's
    own encoder below): ldap3's pyasn1 encoder takes seconds per 200 KB name."""
    op = ber.sequence(ber.integer(3), ber.octets(name), ber.octets(password, tag=0x80), tag=0x60)
    return ber.sequence(ber.integer(msgid), op)


def test_hand_built_bind_is_what_ldap3_sends() -> None:
    name = "uid=" + "7" * 300 + ",ou=patrons," + BASE_DN
    assert bind_pdu(5, name, WRONG_PIN) == oracle.bind(5, name, WRONG_PIN.encode())


def hostile_name(i: int) -> str:
    """Every name different (a cache keyed on it would keep each one)."""
    filler = f"{i:08d}" + "7" * (DN_SIZE - 8)
    return f"uid={filler},ou=patrons,{BASE_DN}" if i % 2 else filler


def read_pdu(sock: socket.socket) -> bytes:
    buffer = b""
    while True:
        size = ber.frame_length(buffer, 1 << 20)
        if size is not None and len(buffer) >= size:
            return buffer[:size]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk


def bind_result(pdu: bytes) -> int:
    """The resultCode of a BindResponse (tag 0x61)."""
    _, start, end = ber.read_tlv(pdu, 0, len(pdu))
    _, _, pos = ber.read_tlv(pdu, start, end)  # messageID
    tag, op_start, op_end = ber.read_tlv(pdu, pos, end)
    assert tag == 0x61
    code_tag, c0, c1 = ber.read_tlv(pdu, op_start, op_end)
    assert code_tag == ber.ENUMERATED
    return ber.to_int(pdu, c0, c1)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def log_bytes(d: Daemon) -> int:
    return sum(p.stat().st_size for p in (d.stderr_path, d.audit_path) if p.exists())


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, SECTIONS)
    d.start()
    yield d
    d.stop()


def run_binds(d: Daemon, first: int, count: int) -> list[int]:
    """`count` binds over CONNECTIONS connections, one at a time on each (answer read)."""
    codes: list[int] = []
    per = count // CONNECTIONS
    for c in range(CONNECTIONS):
        with socket.create_connection(d.address("ldap"), timeout=30) as sock:
            for j in range(per):
                i = first + c * per + j
                sock.sendall(bind_pdu(j + 1, hostile_name(i), WRONG_PIN))
                codes.append(bind_result(read_pdu(sock)))
    return codes


def test_thousand_binds_with_200kb_dns_leave_memory_and_log_bounded(daemon: Daemon) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    warm = run_binds(daemon, 0, 40)
    before = rss_kib(pid)
    codes = run_binds(daemon, 1_000_000, BINDS)
    after = rss_kib(pid)
    assert len(warm) == 40 and len(codes) == BINDS
    assert 0 not in codes  # never a success
    assert after <= before * 1.10, (before, after)
    daemon.stop()  # every queued line written
    assert log_bytes(daemon) < 1_000_000
    lines = [json.loads(x) for x in daemon.audit_path.read_text().splitlines() if x]
    audited = [e for e in lines if e.get("event") == "auth"]
    assert audited, "bad binds are still audited"
    for event in audited:
        assert event["barcode"].startswith("(malformed, ") and "bytes)" in event["barcode"]
    assert max(len(x) for x in daemon.audit_path.read_text().splitlines()) < 1000
    assert os.path.getsize(daemon.stderr_path) < 100_000
