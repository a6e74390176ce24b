"""Malformed barcodes and PINs count against their source on every protocol (issue 21).

The real daemon, one address per protocol sending `source_max_failures` malformed requests:
that address is then blocked (even the right PIN is refused), while the same card and PIN from
another address still get in.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import httpx
import pytest

from bridge.radius import packet as rp
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.stress.guess_clients import Ldap, Nas, Sip2, login_accepted

SOURCE_MAX = 3
SECRET = "testing123"
BASE_DN = "dc=library,dc=example"
GOOD = "127.0.0.1"

SECTIONS = f"""
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
name = "loopback"
network = "127.0.0.0/8"
secret = "{SECRET}"

[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
"""
THROTTLE = f"source_max_failures = {SOURCE_MAX}\nsource_block_seconds = 3600"


#: One card per protocol, never verified before its test (a verified card would be answered
#: from the cache, which source limits do not stop).
CARDS = {p: f"2123400000940{i}" for i, p in enumerate(("sip2", "ldap", "radius", "portal"))}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("bad-input"), SECTIONS, throttle=THROTTLE).start()
    try:
        for barcode in CARDS.values():
            added = d.cli("patron", "add", barcode, "--pin-stdin", "--name", "A, B", input=DEMO_PIN)
            assert added.returncode == 0, added.stderr
        yield d
    finally:
        d.stop()


async def test_sip2(daemon: Daemon) -> None:
    bad = "127.0.0.51"
    server = daemon.address("sip2")
    session = await Sip2.login(server, bad, "selfcheck", "sc-secret-1")
    try:
        for _ in range(SOURCE_MAX):
            assert not await session.patron("2123 4000 0000", DEMO_PIN)  # a space: malformed
        assert not await session.patron(CARDS["sip2"], DEMO_PIN)
    finally:
        await session.close()
    good = await Sip2.login(server, GOOD, "selfcheck", "sc-secret-1")
    try:
        assert await good.patron(CARDS["sip2"], DEMO_PIN)
    finally:
        await good.close()


async def test_ldap(daemon: Daemon) -> None:
    bad = "127.0.0.52"
    server = daemon.address("ldap")
    conn = await Ldap.open(server, bad)
    try:
        for _ in range(SOURCE_MAX):
            assert await conn.bind("uid=x,dc=elsewhere", DEMO_PIN) == 49  # names no patron
        assert await conn.bind(f"uid={CARDS['ldap']},ou=patrons,{BASE_DN}", DEMO_PIN) == 49
    finally:
        await conn.close()
    good = await Ldap.open(server, GOOD)
    try:
        assert await good.bind(f"uid={CARDS['ldap']},ou=patrons,{BASE_DN}", DEMO_PIN) == 0
    finally:
        await good.close()


async def test_radius(daemon: Daemon) -> None:
    bad = await Nas(daemon.address("radius"), SECRET.encode()).open("127.0.0.53")
    good = await Nas(daemon.address("radius"), SECRET.encode()).open(GOOD)
    try:
        for _ in range(SOURCE_MAX):
            # A User-Password of 17 octets cannot be decrypted: a malformed PIN.
            assert bad.transport is not None
            auth = os.urandom(16)
            attrs = [(rp.USER_NAME, DEMO["fines"].encode()), (rp.USER_PASSWORD, b"x" * 17)]
            raw = rp.encode_request(
                rp.ACCESS_REQUEST,
                bad.free.pop(),
                auth,
                attrs,
                bad.secret,
                message_authenticator=True,
            )
            bad.waiting[raw[1]] = (auth, asyncio.get_running_loop().create_future())
            bad.transport.sendto(raw, bad.server)
            assert (await bad.waiting[raw[1]][1]).code == rp.ACCESS_REJECT
        assert (await bad.ask(CARDS["radius"], DEMO_PIN)).code == rp.ACCESS_REJECT
        assert (await good.ask(CARDS["radius"], DEMO_PIN)).code == rp.ACCESS_ACCEPT
    finally:
        bad.close()
        good.close()


async def test_pin_pages(daemon: Daemon) -> None:
    host, port = daemon.address("portal")

    async def client(source: str) -> tuple[httpx.AsyncClient, str]:
        c = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            transport=httpx.AsyncHTTPTransport(local_address=source),
        )
        page = (await c.get("/login")).text
        start = page.index('name="csrf" value="') + len('name="csrf" value="')
        return c, page[start : page.index('"', start)]

    bad, token = await client("127.0.0.54")
    try:
        for _ in range(SOURCE_MAX):
            data = {"csrf": token, "barcode": "21234000000001", "pin": "5" * 200}  # too long
            assert (await bad.post("/login", data=data)).status_code == 200
        data = {"csrf": token, "barcode": CARDS["portal"], "pin": DEMO_PIN}
        refused = await bad.post("/login", data=data)
        assert not login_accepted(refused.status_code, refused.headers.get("location"))
    finally:
        await bad.aclose()
    good, token = await client(GOOD)
    try:
        data = {"csrf": token, "barcode": CARDS["portal"], "pin": DEMO_PIN}
        accepted = await good.post("/login", data=data)
        assert login_accepted(accepted.status_code, accepted.headers.get("location"))
    finally:
        await good.aclose()
