"""Issue 20, connection level: floods of slow, idle and half-sent connections against the real
daemon under the usual service limit of 1,024 open files (`ulimit -n`, set for the daemon
alone), while a legitimate client of every front end (SIP2, LDAP, LDAPS, the pages, RADIUS) is
still served from 127.0.0.1.

`STRESS=full` (`make stress`): 1,100 slow LDAP connections trickling one octet a second from
253 other loopback addresses; three floods of 5,000 idle LDAPS handshakes; 1,100 half-sent HTTP
requests; the daemon at 1,024 descriptors. Otherwise 200 / 400 / 200 at 192 descriptors, so
the descriptor reserve is reached in the short version too.

Stated bound: through the idle-handshake floods the daemon's RSS grows by at most
RSS_GROWTH_MIB (64 MiB) over its value after its first LDAPS bind (before the fix three floods
of 5,000 took it from 140 to 808 MB and kept it there).

Every refusal is logged at most once per listener, reason and source per interval, and the
daemon never runs out of descriptors (no EMFILE in its log)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Daemon, rss_kib
from tests.stress.connection_floods import (
    FULL,
    SERVED,
    assert_never_out_of_descriptors,
    assert_refusals_rate_limited,
    close_all,
    everyone_served,
    open_many,
    raise_own_file_limit,
    refusals,
    size,
    trickle_until_closed,
)

pytestmark = pytest.mark.timeout(1200 if FULL else 300)

NOFILE = size(1024, 192)
SLOW_LDAP = size(1100, 200)
IDLE_TLS = size(5000, 400)
TLS_FLOODS = size(3, 1)
HALF_HTTP = size(1100, 200)
RSS_GROWTH_MIB = 64

# The start of a 4 KiB LDAP PDU (SEQUENCE, two length octets): never completed.
SLOW_PDU_START = b"\x30\x82\x10\x00"
# The start of a TLS record (handshake, TLS 1.0 header), then nothing.
TLS_RECORD_START = b"\x16\x03\x01"
HALF_REQUEST = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    from tests.stress.connection_floods import sections

    raise_own_file_limit(max(SLOW_LDAP, IDLE_TLS, HALF_HTTP))
    d = Daemon(
        tmp_path,
        sections(ldap="pdu_timeout = 3\nbind_timeout = 5", portal="request_timeout = 3"),
        nofile=NOFILE,
    )
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_slow_ldap_connections_leave_every_front_end_serving(daemon: Daemon) -> None:
    slow = open_many(daemon.address("ldap"), SLOW_LDAP, SLOW_PDU_START)
    try:
        assert everyone_served(daemon) == SERVED  # while the slow connections are held
        assert everyone_served(daemon) == SERVED
        still_open = trickle_until_closed(slow, b"\x00")
    finally:
        close_all(slow)
    assert still_open == 0  # every slow connection ended at a deadline or made room
    reasons = {line["reason"] for line in refusals(daemon)}
    assert reasons & {"pdu_deadline", "evicted_fd_reserve", "evicted_connection_cap"}
    assert_refusals_rate_limited(daemon)
    assert_never_out_of_descriptors(daemon)


def test_idle_tls_handshakes_leave_rss_bounded(daemon: Daemon) -> None:
    assert daemon.proc is not None
    assert everyone_served(daemon) == SERVED  # TLS and every listener warmed up
    before = rss_kib(daemon.proc.pid)
    peak = before
    for _ in range(TLS_FLOODS):
        idle = open_many(daemon.address("ldap", 1), IDLE_TLS, TLS_RECORD_START)
        try:
            peak = max(peak, rss_kib(daemon.proc.pid))
            assert everyone_served(daemon) == SERVED  # during the flood
            peak = max(peak, rss_kib(daemon.proc.pid))
        finally:
            close_all(idle)
    assert everyone_served(daemon) == SERVED
    after = rss_kib(daemon.proc.pid)
    growth_mib = (max(peak, after) - before) / 1024
    print(f"RSS KiB before {before} peak {peak} after {after}: growth {growth_mib:.1f} MiB")
    assert growth_mib <= RSS_GROWTH_MIB, f"RSS grew {growth_mib:.0f} MiB"
    reasons = {line["reason"] for line in refusals(daemon)}
    assert reasons & {"evicted_handshake_cap", "evicted_fd_reserve", "handshake_deadline"}
    assert_refusals_rate_limited(daemon)
    assert_never_out_of_descriptors(daemon)


def test_half_sent_http_requests_leave_every_front_end_serving(daemon: Daemon) -> None:
    half = open_many(daemon.address("portal"), HALF_HTTP, HALF_REQUEST)
    try:
        assert everyone_served(daemon) == SERVED  # the real request still gets its page
        still_open = trickle_until_closed(half, b"X")
    finally:
        close_all(half)
    assert still_open == 0  # 408 at the request deadline, or evicted to make room
    reasons = {line["reason"] for line in refusals(daemon)}
    assert reasons & {"request_deadline", "evicted_fd_reserve", "evicted_connection_cap"}
    assert_refusals_rate_limited(daemon)
    assert_never_out_of_descriptors(daemon)
