"""OpenSSL-level memory of the EAP front end, on the real daemon: resident memory after many
completed and abandoned EAP-TTLS/PAP conversations comes back to its level once the abandoned
ones time out. Counts and sizes only: nothing here asserts on time.

The figures are printed (`pytest -s`) and quoted in docs/radius.md. Resumption is off here
(`resumption_lifetime = 0`): remembered sessions are a bounded cache, measured separately by
the second test, not a leak."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.eap.nas import abandon, run
from tests.radius.eap.peer import client_context
from tests.radius.eap.supplicant import SECRET, make_certificates

COMPLETED = 2000
ABANDONED = 200
ABANDONED_TIMEOUT = 2  # seconds: the conversation timeout of the test that abandons some
SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
duplicate_window = 1  # the RFC 5080 reply cache would otherwise hold each Challenge 10 s

[radius.eap]
certificate = "tls/server.pem"
key = "tls/server-key.pem"
ca = "tls/ca.pem"
timeout = {{timeout}}
max_per_client = 4096
resumption_lifetime = {{lifetime}}

[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""
CARDS = [(DEMO["active"], DEMO_PIN), (DEMO["minor"], DEMO_PIN)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def daemon(tmp: Path, lifetime: int, timeout: float = 30) -> Daemon:
    """`timeout`: the conversation timeout. Short only where abandoned conversations must
    expire within the test: a live one idle that long between rounds (a stalled CI host) is
    expired too, and its next round rejected."""
    d = Daemon(
        tmp, SECTIONS.replace("{lifetime}", str(lifetime)).replace("{timeout}", str(timeout))
    )
    make_certificates(d)
    return d.start()


def complete(d: Daemon, count: int) -> None:
    ca = d.dir / "tls" / "ca.pem"
    accepted, *_ = run(
        d.address("radius"), ca, CARDS, count, client_context(ca), secret=SECRET.encode()
    )
    assert accepted == count


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[Daemon]:
    d = daemon(tmp_path, 0, ABANDONED_TIMEOUT)
    try:
        yield d
    finally:
        d.stop()


def one_round(d: Daemon) -> tuple[int, int]:
    """COMPLETED conversations, then ABANDONED left halfway until they time out, then a few
    more completed (which reuse what the abandoned held). RSS after the completed ones, and
    after the whole round."""
    assert d.proc is not None
    complete(d, COMPLETED)
    completed = rss_kib(d.proc.pid)
    ca = d.dir / "tls" / "ca.pem"
    assert abandon(d.address("radius"), ca, ABANDONED, secret=SECRET.encode()) == ABANDONED
    time.sleep(ABANDONED_TIMEOUT * 2 + 0.5)  # the sweeper forgets them, the reply cache empties
    complete(d, 50)
    return completed, rss_kib(d.proc.pid)


@pytest.mark.timeout(600)  # thousands of TLS handshakes: minutes on a loaded host
def test_memory_returns_to_its_level(plain: Daemon) -> None:
    """The first round grows the heap (OpenSSL's buffers for 200 half-open tunnels at once:
    glibc keeps freed memory for reuse rather than giving it back); later rounds grow it less
    and less until it stops: nothing is kept per conversation once it is over or expired."""
    assert plain.proc is not None
    complete(plain, 300)  # allocator and caches warm
    start = rss_kib(plain.proc.pid)
    rounds = [one_round(plain) for _ in range(5)]
    print(f"\nRSS KiB: warm {start}; per round (after {COMPLETED} completed, after "
          f"{ABANDONED} abandoned and expired): {rounds}")  # fmt: skip
    ends = [end for _, end in rounds]
    # a leak grows every round by the same amount (200 half-open tunnels: about 11 MB, see the
    # first round); the heap instead settles: each round grows less, the last hardly at all
    assert all(
        c - b <= max(b - a, 0) + 1024 for a, b, c in zip(ends, ends[1:], ends[2:], strict=False)
    )
    assert ends[-1] - ends[-2] < 1024
    assert ends[-1] - ends[0] < 8192
    logs = plain.stderr_path.read_text()
    assert "Traceback" not in logs


def test_resumable_sessions_cost_bounded_memory(tmp_path: Path) -> None:
    """With resumption on (the default), each accepted TTLS session is remembered: its cost
    per session, printed for the docs; bounded by the cache size and lifetime."""
    d = daemon(tmp_path, 3600)
    try:
        assert d.proc is not None
        complete(d, 300)
        time.sleep(1.5)
        complete(d, 50)
        before = rss_kib(d.proc.pid)
        complete(d, COMPLETED)
        time.sleep(1.5)
        complete(d, 50)
        after = rss_kib(d.proc.pid)
    finally:
        d.stop()
    per_session = (after - before) * 1024 / COMPLETED
    print(f"\nRSS KiB with resumption: {before} -> {after}: {per_session:.0f} bytes a session")
    assert per_session < 8192
