"""Hostile RADIUS through the real daemon (issues 20 and 21), and `require_message_authenticator`.

- Log limiting keys on the reason's kind: one sender varying the length of its garbage once made
  3,875 lines a second, because each length was a new reason text.
- A 253-byte User-Name (the most RADIUS allows) is bad input, audited as its size; requests
  packed with attributes up to the 4,096-byte packet limit are answered and logged short; a
  flood of distinct long User-Names leaves the daemon's memory where it was.
- `require_message_authenticator = "auto"`: unsigned requests are answered until the NAS sends
  a signed one, then dropped.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.radius import packet as rp
from tests.harness import DEMO, Daemon
from tests.ldap.test_hostile import rss_kib
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.udp import Nas

SECRET = "hostile-secret-0123456789"
AUTO_SECRET = "auto-secret-0123456789"
SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{SECRET}"

[[radius.clients]]
name = "auto"
network = "127.0.0.3/32"
secret = "{AUTO_SECRET}"
require_message_authenticator = "auto"
"""
THROTTLE = "source_max_failures = 100000\ncard_free_failures = 100000\ncard_lock_after = 100000"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, SECTIONS, throttle=THROTTLE).start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def nas(daemon: Daemon) -> Iterator[Nas]:
    client = Nas(daemon.address("radius"), SECRET.encode())
    yield client
    client.close()


def written(d: Daemon) -> list[dict[str, Any]]:
    d.stop()  # the writer drains every queued line before the process exits
    out = []
    for path in (d.stderr_path, d.audit_path):
        out += [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]
    return out


def test_drop_lines_are_limited_per_kind_not_per_text(daemon: Daemon, nas: Nas) -> None:
    sent = 0
    for i in range(1500):
        # a header claiming more octets than sent: "truncated packet (N of M octets)"
        claimed = 100 + i % 900
        nas.send(struct.pack("!BBH", rp.ACCESS_REQUEST, i % 256, claimed) + os.urandom(16 + i % 50))
        # an attribute whose length field is impossible: "attribute K has length L"
        body = bytes((i % 200 + 1, i % 2))
        nas.send(struct.pack("!BBH", rp.ACCESS_REQUEST, i % 256, 22) + os.urandom(16) + body)
        sent += 2
    nas.nothing_but_probe()  # every datagram above was handled before this answer
    dropped = [e for e in written(daemon) if e["event"] == "radius_dropped"]
    reasons = {e["reason"] for e in dropped}
    assert reasons == {"malformed: truncated packet", "malformed: bad attribute length"}
    assert not any(re.search(r"\d", r) for r in reasons)
    assert len(dropped) < sent / 5
    assert all("detail" in e for e in dropped)  # the numbers still reach the line written


def test_longest_user_names_and_attribute_floods(daemon: Daemon, nas: Nas) -> None:
    assert daemon.proc is not None
    pid = daemon.proc.pid
    # the packet's 4,096-octet limit filled with attributes the bridge does not use
    flood = [(26, os.urandom(253)) for _ in range(14)] + [(18, b"r" * 200)]

    def ask(i: int) -> int:
        user = f"{i:08d}".encode() + b"7" * 245  # 253 octets, each different
        raw, auth = nas.access(user, WRONG_PIN.encode(), extra=flood[: i % 15])
        return nas.ask((raw, auth)).code

    for i in range(30):
        assert ask(i) == rp.ACCESS_REJECT
    before = rss_kib(pid)
    for i in range(1000, 1600):
        assert ask(i) == rp.ACCESS_REJECT
    after = rss_kib(pid)
    raw, auth = nas.access(DEMO["active"].encode(), DEMO_PIN.encode(), extra=flood)
    assert len(raw) <= 4096
    assert nas.ask((raw, auth)).code == rp.ACCESS_ACCEPT
    assert after <= before * 1.10, (before, after)
    lines = written(daemon)
    assert all(len(json.dumps(e)) < 1000 for e in lines)
    audited = [e for e in lines if e["event"] == "auth"]
    assert len(audited) == 631
    assert sum(e["barcode"] == "(malformed, 253 bytes)" for e in audited) == 630
    assert audited[-1]["outcome"] == "accepted"


def test_auto_requires_the_authenticator_once_a_nas_has_sent_one(daemon: Daemon) -> None:
    auto = Nas(daemon.address("radius"), AUTO_SECRET.encode(), source="127.0.0.3")
    try:
        unsigned = nas_access(auto, ma=False)
        assert auto.ask(unsigned).code == rp.ACCESS_ACCEPT  # never signed yet: answered
        assert auto.ask(nas_access(auto, ma=True)).code == rp.ACCESS_ACCEPT
        auto.send(nas_access(auto, ma=False)[0])  # signed once: unsigned now dropped
        auto.nothing_but_probe()
        assert auto.ask(nas_access(auto, ma=True)).code == rp.ACCESS_ACCEPT
    finally:
        auto.close()
    dropped = [e for e in written(daemon) if e["event"] == "radius_dropped"]
    assert [e["reason"] for e in dropped] == ["no Message-Authenticator (required for this client)"]


def nas_access(nas: Nas, *, ma: bool) -> tuple[bytes, bytes]:
    return nas.access(DEMO["active"].encode(), DEMO_PIN.encode(), ma=ma)
