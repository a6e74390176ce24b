"""The real daemon's metrics listener: decisions made by real SIP2, LDAP and RADIUS clients show
up in a real scrape with the right labels; health and readiness answer as documented."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ldap3 import Connection, Server
from pyrad import packet as pp
from pyrad.client import Client as PyradClient
from pyrad.dictionary import Dictionary

from tests.harness import DEMO, UNKNOWN, Daemon
from tests.metrics.scrape import base_url, scrape
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.udp import Nas
from tests.test_daemon import Sip2

DICTIONARY = Path(__file__).resolve().parents[2] / "bridge" / "radius" / "dictionary"
SECRET = "metrics-radius-secret-0123"
BASE_DN = "dc=library,dc=example"

SECTIONS = f"""
[metrics]
listen = "127.0.0.1:0"

[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"

[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "wifi"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""
THROTTLE = """
card_free_failures = 2
card_lock_after = 2
card_lock_seconds = 0
source_max_failures = 1000
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("metrics"), SECTIONS, throttle=THROTTLE).start()
    yield d
    assert d.stop() == 0


def radius_auth(daemon: Daemon, barcode: str, pin: str) -> pp.Packet:
    host, port = daemon.address("radius")
    client = PyradClient(
        server=host,
        authport=port,
        acctport=port,
        secret=SECRET.encode(),
        dict=Dictionary(str(DICTIONARY)),
        retries=1,
        timeout=10,
    )
    request = client.CreateAuthPacket(code=pp.AccessRequest, User_Name=barcode)
    request["User-Password"] = request.PwCrypt(pin)
    request.add_message_authenticator()
    return client.SendPacket(request)


def ldap_bind(daemon: Daemon, barcode: str, pin: str) -> bool:
    host, port = daemon.address("ldap")
    conn = Connection(
        Server(host, port, get_info="NO_INFO"),
        f"uid={barcode},ou=patrons,{BASE_DN}",
        pin,
        raise_exceptions=False,
    )
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()


def test_decisions_over_every_protocol_carry_their_labels(daemon: Daemon) -> None:
    sip = Sip2(daemon)
    try:
        assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)  # the store path
        assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)  # the cached path
        assert "|CQN|" in sip.check(UNKNOWN, DEMO_PIN)
        during = scrape(daemon)
    finally:
        sip.close()
    assert during.value("patron_bridge_open_connections", front_end="sip2") == 1
    assert ldap_bind(daemon, DEMO["minor"], DEMO_PIN)
    assert not ldap_bind(daemon, DEMO["minor"], WRONG_PIN)
    assert radius_auth(daemon, DEMO["fines"], DEMO_PIN).code == pp.AccessReject
    assert radius_auth(daemon, DEMO["active"], DEMO_PIN).code == pp.AccessAccept

    s = scrape(daemon)
    decisions = "patron_bridge_decisions_total"
    assert s.families["patron_bridge_decisions"] == "counter"
    assert s.value(decisions, protocol="sip2", client="selfcheck", outcome="accepted") == 2
    assert s.value(decisions, protocol="sip2", client="selfcheck", outcome="unknown_card") == 1
    assert s.value(decisions, protocol="ldap", client="anonymous", outcome="accepted") == 1
    assert s.value(decisions, protocol="ldap", client="anonymous", outcome="bad_pin") == 1
    assert s.value(decisions, protocol="radius", client="wifi", outcome="fines_over_limit") == 1
    assert s.value(decisions, protocol="radius", client="wifi", outcome="accepted") == 1

    latency = "patron_bridge_request_duration_seconds"
    assert s.families[latency] == "histogram"
    assert s.value(f"{latency}_count", protocol="sip2", path="cached") == 1
    assert s.value(f"{latency}_count", protocol="sip2", path="store") == 2
    assert s.value(f"{latency}_bucket", protocol="sip2", path="store", le="+Inf") == 2
    assert s.value(f"{latency}_count", protocol="ldap", path="store") == 2
    assert s.value(f"{latency}_count", protocol="radius", path="store") == 1
    # The active card's PIN was verified over SIP2 a moment ago: RADIUS gets it from the cache.
    assert s.value(f"{latency}_count", protocol="radius", path="cached") == 1

    assert s.value("patron_bridge_cache_hits_total") == 2  # SIP2's second check, RADIUS
    assert s.value("patron_bridge_cache_misses_total") == 5  # every store-path decision
    assert (s.value("patron_bridge_cache_entries") or 0) >= 3
    assert s.value("patron_bridge_store_call_duration_seconds_count", call="verify_pin") == 5
    assert s.value("patron_bridge_store_up") == 1
    assert (s.value("patron_bridge_kdf_workers") or 0) >= 1
    assert s.value("patron_bridge_kdf_queue_depth") == 0
    assert s.value("patron_bridge_open_connections", front_end="sip2") == 0
    assert s.value("patron_bridge_open_connections", front_end="ldap") == 0
    assert s.value("patron_bridge_open_connections", front_end="metrics") is None
    build = [x for x in s.samples if x.name == "patron_bridge_build_info"]
    assert build and build[0].labels["version"] and build[0].labels["store"] == "SqliteStore"
    assert s.value("process_open_fds") is not None


def test_radius_drops_are_counted_by_reason(daemon: Daemon) -> None:
    before = scrape(daemon).value(
        "patron_bridge_radius_dropped_total", reason="bad_message_authenticator"
    )
    nas = Nas(daemon.address("radius"), b"not-the-secret-at-all")
    try:
        raw, _ = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
        nas.sock.sendto(raw, daemon.address("radius"))
        nas.sock.sendto(b"\x01\x02garbage", daemon.address("radius"))
    finally:
        nas.close()
    # Proof the two were handled (and dropped) before the scrape: a later request is answered.
    assert radius_auth(daemon, DEMO["active"], DEMO_PIN).code == pp.AccessAccept
    s = scrape(daemon)
    after = s.value("patron_bridge_radius_dropped_total", reason="bad_message_authenticator")
    assert after == (before or 0) + 1
    assert (s.value("patron_bridge_radius_dropped_total", reason="malformed") or 0) >= 1


def test_locked_cards_show_in_the_throttle_gauges(daemon: Daemon) -> None:
    assert scrape(daemon).value("patron_bridge_throttle_cards_locked") == 0
    sip = Sip2(daemon)
    try:
        for _ in range(2):
            assert "|CQN|" in sip.check(DEMO["expired"], WRONG_PIN)
    finally:
        sip.close()
    s = scrape(daemon)
    assert s.value("patron_bridge_throttle_cards_locked") == 1
    assert s.value("patron_bridge_throttle_spray_guard_active") == 0
    assert s.value("patron_bridge_throttle_sources_blocked") == 0
    assert (
        s.value(
            "patron_bridge_decisions_total", protocol="sip2", client="selfcheck", outcome="bad_pin"
        )
        == 2
    )


def test_healthz_and_readyz(daemon: Daemon) -> None:
    url = base_url(daemon)
    alive = httpx.get(f"{url}/healthz", timeout=10)
    assert (alive.status_code, alive.text) == (200, "ok\n")
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert (ready.status_code, ready.text) == (200, "ready\n")
    assert httpx.get(f"{url}/nothing", timeout=10).status_code == 404


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readyz_is_503_while_the_ils_is_down(tmp_path: Path) -> None:
    """The SIP2 upstream store with nothing listening at the ILS's address: the daemon runs
    (alive), is not ready, and the scrape shows the store down and the breaker's state."""
    store = f"""
[store]
plugin = "sip2"
host = "127.0.0.1"
port = {_closed_port()}
connect_timeout = 2
breaker_failures = 1
"""
    with Daemon(tmp_path, '[metrics]\nlisten = "127.0.0.1:0"\n', store=store) as daemon:
        url = base_url(daemon)
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.text.startswith("store not ready: ILS unreachable")
        s = scrape(daemon)
        assert s.value("patron_bridge_store_up") == 0
        assert s.value("patron_bridge_sip2_upstream_breaker_state", state="open") == 1
        assert s.value("patron_bridge_sip2_upstream_breaker_state", state="closed") == 0
        assert s.value("patron_bridge_sip2_upstream_connections") == 0
