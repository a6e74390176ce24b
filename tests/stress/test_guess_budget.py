"""Issue 20: ten guesses mean ten, whatever arrives at once, on every protocol.

Through the real daemon, one card per protocol: GUESSES simultaneous guesses from many
connections (20 loopback addresses), the right PIN among them. The right PIN is sent once the
audit shows the card's budget taken (ten wrong PINs checked, or a refusal by the card's own
limit), while the other guesses are still arriving: it must be refused, and the audit must show
exactly `card_lock_after` PINs evaluated for the card, whatever the protocol.

`STRESS=full` (make stress): 400 guesses, the right PIN 351st. Otherwise 60, the right PIN 51st.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from bridge.radius import packet as rp
from tests.harness import Daemon
from tests.pins import DEMO_PIN
from tests.stress.guess_clients import (
    ADDRESSES,
    FULL,
    PATIENCE,
    Ldap,
    Nas,
    Sip2,
    audit_for,
    budget_taken,
    login_accepted,
    size,
    wait_until,
)

pytestmark = pytest.mark.timeout(900 if FULL else 300)

LOCK_AFTER = 10
GUESSES = size(400, 60)
RIGHT_AT = size(350, 50)  # the right PIN is the (RIGHT_AT + 1)th guess
WRONG = [f"{n:04d}" for n in range(5000, 5000 + GUESSES)]
assert DEMO_PIN not in WRONG

BASE_DN = "dc=library,dc=example"
SECRET = "testing123"
CARDS = {
    "sip2": "21234000000101",
    "ldap": "21234000000102",
    "radius": "21234000000103",
    "portal": "21234000000104",
}

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
THROTTLE = f"""
card_free_failures = {LOCK_AFTER}
card_lock_after = {LOCK_AFTER}
card_lock_seconds = 0
source_max_failures = 1000000
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("guess-budget"), SECTIONS, throttle=THROTTLE).start()
    try:
        for protocol, barcode in CARDS.items():
            added = d.cli(
                "patron",
                "add",
                barcode,
                "--pin-stdin",
                "--name",
                f"Guessed, {protocol}",
                input=DEMO_PIN,
            )
            assert added.returncode == 0, added.stderr
        yield d
    finally:
        d.stop()


async def burst(
    daemon: Daemon, barcode: str, guess: Callable[[int, str], Awaitable[bool]]
) -> list[bool]:
    """Every wrong guess before the right PIN at once; the right PIN (and the rest) once the
    budget is taken. `guess(i, pin)` says whether the protocol let the patron in."""
    first = [asyncio.create_task(guess(i, WRONG[i])) for i in range(RIGHT_AT)]
    await wait_until(budget_taken(daemon, barcode, LOCK_AFTER), "the budget is taken")
    rest = [asyncio.create_task(guess(RIGHT_AT, DEMO_PIN))] + [
        asyncio.create_task(guess(i, WRONG[i])) for i in range(RIGHT_AT + 1, GUESSES)
    ]
    return list(await asyncio.gather(*first, *rest))


async def settled_audit(daemon: Daemon, barcode: str) -> list[str]:
    """The outcomes audited for the card, once every guess has its line."""
    await wait_until(lambda: len(audit_for(daemon, barcode)) >= GUESSES, "every guess audited")
    return [e["outcome"] for e in audit_for(daemon, barcode)]


def check(outcomes: list[str], accepted: list[bool]) -> None:
    assert not any(accepted), "a guess got in"
    assert outcomes.count("bad_pin") == LOCK_AFTER, outcomes
    assert "accepted" not in outcomes
    assert set(outcomes) <= {"bad_pin", "card_locked", "busy"}


async def test_sip2_many_connections(daemon: Daemon) -> None:
    barcode = CARDS["sip2"]
    server = daemon.address("sip2")
    sessions = await asyncio.gather(
        *(
            Sip2.login(server, ADDRESSES[i % len(ADDRESSES)], "selfcheck", "sc-secret-1")
            for i in range(GUESSES)
        )
    )

    async def guess(i: int, pin: str) -> bool:
        return await sessions[i].patron(barcode, pin)

    try:
        accepted = await burst(daemon, barcode, guess)
    finally:
        await asyncio.gather(*(s.close() for s in sessions))
    check(await settled_audit(daemon, barcode), accepted)


async def test_ldap_anonymous_binds_over_many_connections(daemon: Daemon) -> None:
    barcode = CARDS["ldap"]
    server = daemon.address("ldap")
    dn = f"uid={barcode},ou=patrons,{BASE_DN}"
    conns = await asyncio.gather(
        *(Ldap.open(server, ADDRESSES[i % len(ADDRESSES)]) for i in range(GUESSES))
    )
    codes: dict[int, int] = {}

    async def guess(i: int, pin: str) -> bool:
        codes[i] = await conns[i].bind(dn, pin)
        return codes[i] == 0

    try:
        accepted = await burst(daemon, barcode, guess)
    finally:
        await asyncio.gather(*(c.close() for c in conns))
    assert codes[RIGHT_AT] in (49, 51)  # invalidCredentials (locked) or busy
    check(await settled_audit(daemon, barcode), accepted)


async def test_radius_packets(daemon: Daemon) -> None:
    barcode = CARDS["radius"]
    server = daemon.address("radius")
    nases = [await Nas(server, SECRET.encode()).open(a) for a in ADDRESSES]

    async def guess(i: int, pin: str) -> bool:
        reply = await nases[i % len(nases)].ask(barcode, pin)
        return reply.code == rp.ACCESS_ACCEPT

    try:
        accepted = await burst(daemon, barcode, guess)
    finally:
        for nas in nases:
            nas.close()
    check(await settled_audit(daemon, barcode), accepted)


async def test_pin_pages_login_form(daemon: Daemon) -> None:
    barcode = CARDS["portal"]
    host, port = daemon.address("portal")
    clients = [
        httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            transport=httpx.AsyncHTTPTransport(local_address=a),
            limits=httpx.Limits(max_connections=GUESSES),
            timeout=PATIENCE,
        )
        for a in ADDRESSES
    ]
    tokens = []
    for client in clients:
        page = await client.get("/login")
        start = page.text.index('name="csrf" value="') + len('name="csrf" value="')
        tokens.append(page.text[start : page.text.index('"', start)])

    async def guess(i: int, pin: str) -> bool:
        k = i % len(clients)
        data = {"csrf": tokens[k], "barcode": barcode, "pin": pin}
        response = await clients[k].post("/login", data=data)
        return login_accepted(response.status_code, response.headers.get("location"))

    try:
        accepted = await burst(daemon, barcode, guess)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    check(await settled_audit(daemon, barcode), accepted)
