"""Issue 12: real load-balancer software in front of two bridge daemons (one PostgreSQL store,
one Redis). HAProxy balances LDAP and SIP2 connections (TCP, round robin), nginx's stream module
balances RADIUS datagrams (UDP, `proxy_responses 1`). Logins pass through each balancer to both
daemons, and 12 wrong PINs sent through a balancer lock the card after exactly
`card_lock_after` evaluated guesses across both (counted from the two daemons' audit lines)."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyrad import packet as pp
from pyrad.client import Client as PyradClient
from pyrad.dictionary import Dictionary

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import servers
from tests.plugins.test_shared_store import store_toml
from tests.radius.udp import Nas
from tests.sip2.wire import Wire, patron_msg
from tests.state import scenario
from tests.state.balancers import Address, haproxy, nginx_udp
from tests.state.redis_server import shared_prefix
from tests.state.test_scale_out import redis_state

DICTIONARY = Path(__file__).resolve().parents[2] / "bridge" / "radius" / "dictionary"
SECRET = "balancer-radius-secret-0123"
FRONT_ENDS = f"""
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "balancer"
network = "127.0.0.1/32"
secret = "{SECRET}"
"""


@pytest.fixture
def two_daemons(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon]]:
    """Daemons A and B: one PostgreSQL store, one Redis (a unique key prefix)."""
    with shared_prefix() as (url, prefix), servers.pg_database() as dbname:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        sections = scenario.LDAP + FRONT_ENDS + redis_state(url, prefix)
        store = store_toml(dbname)
        with Daemon(a_dir, sections, store=store, throttle=scenario.THROTTLE) as a:
            shutil.copy(a_dir / "pepper.key", b_dir / "pepper.key")  # one pepper per library
            with Daemon(b_dir, sections, store=store, throttle=scenario.THROTTLE) as b:
                yield a, b


def backends(daemons: tuple[Daemon, Daemon], protocol: str) -> list[Address]:
    return [daemon.address(protocol) for daemon in daemons]


def by_daemon(
    daemons: tuple[Daemon, Daemon], protocol: str, start: list[int]
) -> list[Counter[str]]:
    """Per daemon: the outcomes of its `protocol` audit lines after index `start[i]`."""
    return [
        Counter(
            e["outcome"] for e in scenario.auth_lines([daemon])[begin:] if e["protocol"] == protocol
        )
        for daemon, begin in zip(daemons, start, strict=True)
    ]


def marks(daemons: tuple[Daemon, Daemon]) -> list[int]:
    return [len(scenario.auth_lines([daemon])) for daemon in daemons]


def radius_client(address: Address) -> PyradClient:
    """pyrad keeps one socket (one source port): nginx still balances every request, since
    each session ends with its one response."""
    return PyradClient(
        server=address[0],
        authport=address[1],
        acctport=address[1],
        secret=SECRET.encode(),
        dict=Dictionary(str(DICTIONARY)),
        retries=1,
        timeout=15,
    )


def radius_auth(client: PyradClient, barcode: str, pin: str) -> Any:
    request = client.CreateAuthPacket(code=pp.AccessRequest, User_Name=barcode)
    request["User-Password"] = request.PwCrypt(pin)
    request.add_message_authenticator()
    return client.SendPacket(request)


def settled(daemons: tuple[Daemon, Daemon], start: list[int], count: int) -> None:
    """Wait until both daemons' audit writers have caught up with `count` new lines."""
    scenario.audited(list(daemons), sum(start) + count)


def test_haproxy_balances_ldap_and_sip2(tmp_path: Path, two_daemons: tuple[Daemon, Daemon]) -> None:
    daemons = two_daemons
    with haproxy(
        tmp_path, {"ldap": backends(daemons, "ldap"), "sip2": backends(daemons, "sip2")}
    ) as front:
        start = marks(daemons)
        for _ in range(4):
            assert scenario.bind_at(front["ldap"], DEMO["active"], DEMO_PIN) == 0
        for _ in range(4):  # a new connection each time: round robin over A and B
            with Wire(front["sip2"]) as sip:
                assert sip.login().startswith(b"941")
                assert b"|CQY|" in sip.ask(patron_msg("63", DEMO["minor"], DEMO_PIN))
        settled(daemons, start, 8)
        for protocol in ("ldap", "sip2"):
            seen = by_daemon(daemons, protocol, start)
            assert all(c["accepted"] >= 1 for c in seen), (protocol, seen)  # both daemons

        # 12 wrong PINs through HAProxy: the card's budget holds across A and B.
        start = marks(daemons)
        card = DEMO["fines"]
        answers = [scenario.bind_at(front["ldap"], card, WRONG_PIN) for _ in range(12)]
        assert answers == [49] * 12
        settled(daemons, start, 12)
        seen = by_daemon(daemons, "ldap", start)
        assert sum(c["bad_pin"] for c in seen) == scenario.LOCK_AFTER, seen
        assert all(sum(c.values()) >= 1 for c in seen), seen  # both took part
        assert scenario.bind_at(front["ldap"], card, DEMO_PIN) == 49  # locked: even the right PIN
        assert scenario.bind_at(front["ldap"], card, DEMO_PIN) == 49  # ... on the other daemon too
    log = (tmp_path / "haproxy.log").read_text()
    assert "ALERT" not in log, log


def test_nginx_balances_radius(tmp_path: Path, two_daemons: tuple[Daemon, Daemon]) -> None:
    daemons = two_daemons
    with nginx_udp(tmp_path, backends(daemons, "radius")) as front:
        client = radius_client(front)
        start = marks(daemons)
        for _ in range(4):
            assert radius_auth(client, DEMO["active"], DEMO_PIN).code == pp.AccessAccept
        settled(daemons, start, 4)
        seen = by_daemon(daemons, "radius", start)
        assert all(c["accepted"] >= 1 for c in seen), seen  # both daemons answered

        start = marks(daemons)
        card = DEMO["minor"]
        for _ in range(12):
            assert radius_auth(client, card, WRONG_PIN).code == pp.AccessReject
        settled(daemons, start, 12)
        seen = by_daemon(daemons, "radius", start)
        assert sum(c["bad_pin"] for c in seen) == scenario.LOCK_AFTER, seen
        assert all(sum(c.values()) >= 1 for c in seen), seen
        for _ in range(2):  # locked on both: the right PIN is refused whichever answers
            assert radius_auth(client, card, DEMO_PIN).code == pp.AccessReject
        settled(daemons, start, 14)
        seen = by_daemon(daemons, "radius", start)
        assert sum(c["card_locked"] for c in seen) >= 2, seen


def test_nginx_keeps_each_nas_on_one_daemon_for_retransmissions(
    tmp_path: Path, two_daemons: tuple[Daemon, Daemon]
) -> None:
    """With `hash $remote_addr$remote_port`, a retransmission (the same datagram again from the
    same port) reaches the daemon that answered it, from a new nginx port, and is answered from
    its duplicate cache (found by address, Identifier and Request Authenticator): one decision,
    not two. Sixteen NASes (source ports) still spread over both daemons."""
    daemons = two_daemons
    with nginx_udp(tmp_path, backends(daemons, "radius"), affinity=True) as front:
        start = marks(daemons)
        nases = [Nas(front, SECRET.encode()) for _ in range(16)]
        try:
            for nas in nases:
                request = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
                assert nas.ask(request).code == nas.ask(request).code == pp.AccessAccept
            for nas in nases:  # one new request each: its line follows the first on its daemon
                request = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
                assert nas.ask(request).code == pp.AccessAccept
        finally:
            for nas in nases:
                nas.close()
        settled(daemons, start, 32)
        seen = by_daemon(daemons, "radius", start)
        assert sum(c["accepted"] for c in seen) == 32, seen  # 48 if retransmissions re-decided
        assert all(c["accepted"] >= 2 for c in seen), seen  # both daemons had NASes
