"""The EZproxy login (service bind, search for the uid, bind as the DN found) against the real
daemon with ldap3, where the search is answered from the verified cache once the patron's PIN
was verified: the entry is the same one the store gives, and a block from the CLI (through the
control socket) shows in the very next search, as it does for the next bind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ldap3 import SUBTREE, Connection, Server

from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN

BASE_DN = "dc=library,dc=example"
PATRONS = f"ou=patrons,{BASE_DN}"
EZPROXY = f"cn=ezproxy,ou=services,{BASE_DN}"
EZPROXY_SECRET = "ezproxy-token-5d2c71"
SECTIONS = f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"

[[ldap.service_accounts]]
dn = "{EZPROXY}"
password = "{EZPROXY_SECRET}"

[cache]
ttl = 600
"""
WANTED = ["uid", "cn", "mail", "patronStatus", "patronBlocked"]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    with Daemon(tmp_path, SECTIONS) as d:
        yield d


def _search(conn: Connection, barcode: str) -> list[dict[str, list[str]]]:
    conn.search(
        BASE_DN, f"(&(objectClass=inetOrgPerson)(uid={barcode}))", SUBTREE, attributes=WANTED
    )
    return [dict(e["attributes"]) for e in conn.response if e["type"] == "searchResEntry"]


def _login(server: Server, barcode: str) -> tuple[list[dict[str, list[str]]], bool]:
    """One EZproxy login: the entries the search found, and whether the user bind worked."""
    service = Connection(server, EZPROXY, EZPROXY_SECRET, auto_bind=True)
    try:
        found = _search(service, barcode)
    finally:
        service.unbind()
    user = Connection(server, f"uid={barcode},{PATRONS}", DEMO_PIN)
    try:
        return found, bool(user.bind())
    finally:
        user.unbind()


def test_search_after_a_verified_bind_matches_the_store_answer(daemon: Daemon) -> None:
    host, port = daemon.address("ldap")
    server = Server(host, port=port)
    card = DEMO["active"]
    first, bound = _login(server, card)  # search answered by the store; the bind verifies
    assert bound and len(first) == 1
    again, bound = _login(server, card)  # search answered from the verified cache
    assert bound and again == first
    assert _login(server, UNKNOWN) == ([], False)


def test_a_block_shows_in_the_next_search(daemon: Daemon) -> None:
    host, port = daemon.address("ldap")
    server = Server(host, port=port)
    card = DEMO["active"]
    found, bound = _login(server, card)
    assert bound and found[0]["patronBlocked"] in (False, ["FALSE"], "FALSE")
    blocked = daemon.cli("patron", "block", card, "Card reported stolen")
    assert blocked.returncode == 0, blocked.stderr
    service = Connection(server, EZPROXY, EZPROXY_SECRET, auto_bind=True)
    try:
        after = _search(service, card)
    finally:
        service.unbind()
    assert len(after) == 1
    assert after[0]["patronBlocked"] in (True, ["TRUE"], "TRUE")
