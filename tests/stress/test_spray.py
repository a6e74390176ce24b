"""Issue 20: one PIN sprayed over many barcodes, WAVE at a time, from a few addresses.

Through the real daemon over LDAP (anonymous patron binds, many connections): no card and no
address reaches its own limit (the addresses' limit is set out of reach), so the global guard is
what must stop it, at its threshold, counting checks in flight. The demo patrons (whose PIN is
the sprayed one) come after the threshold and must not be found. Meanwhile the guard must not
switch the library off: a patron from another address logs in, and a patron in the verified
cache logs in even from a spraying address.

`STRESS=full`: 500 barcodes, 400 at a time, threshold 300 (the default). Otherwise 120, 80, 40.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.stress.guess_clients import FULL, Ldap, masked, size, wait_until

pytestmark = pytest.mark.timeout(900 if FULL else 300)

BARCODES = size(500, 120)
WAVE = size(400, 80)
THRESHOLD = size(300, 40)
SPRAYERS = [f"127.0.0.{i}" for i in range(2, 6)]  # a few addresses
ELSEWHERE = "127.0.0.30"
BASE_DN = "dc=library,dc=example"

CACHED = "21234000009201"  # logs in from a spraying address before the spray
UNCACHED_THERE = "21234000009202"  # logs in from a spraying address after it
UNCACHED_ELSEWHERE = "21234000009203"  # logs in from another address after it

FOUND_AT = BARCODES - 10  # where the demo patrons sit in the spray: after the threshold
# Distinct cards whose masked form (last four digits) is never a test PIN nor a real card.
SPRAY = [f"2999{i:06d}0000" for i in range(BARCODES)]
SPRAY[FOUND_AT : FOUND_AT + len(DEMO)] = list(DEMO.values())

SECTIONS = f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"

[cache]
ttl = 3600
"""
THROTTLE = f"""
global_max_failures = {THRESHOLD}
global_window = 600
source_max_failures = 1000000
max_pending_checks = 100000
max_pending_per_source = 100000
"""


def dn(barcode: str) -> str:
    return f"uid={barcode},ou=patrons,{BASE_DN}"


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("spray"), SECTIONS, throttle=THROTTLE).start()
    try:
        for barcode in (CACHED, UNCACHED_THERE, UNCACHED_ELSEWHERE):
            added = d.cli(
                "patron", "add", barcode, "--pin-stdin", "--name", "Patron, Real", input=DEMO_PIN
            )
            assert added.returncode == 0, added.stderr
        yield d
    finally:
        d.stop()


async def bind_once(server: tuple[str, int], source: str, barcode: str) -> int:
    conn = await Ldap.open(server, source)
    try:
        return await conn.bind(dn(barcode), DEMO_PIN)
    finally:
        await conn.close()


async def test_spray_trips_the_guard_at_its_threshold_and_spares_the_rest(daemon: Daemon) -> None:
    server = daemon.address("ldap")
    assert await bind_once(server, SPRAYERS[0], CACHED) == 0  # in the verified cache now

    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(BARCODES):
        queue.put_nowait(i)
    codes: dict[int, int] = {}
    conns = await asyncio.gather(
        *(Ldap.open(server, SPRAYERS[k % len(SPRAYERS)]) for k in range(WAVE))
    )

    async def worker(conn: Ldap) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            codes[i] = await conn.bind(dn(SPRAY[i]), DEMO_PIN)

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        await asyncio.gather(*(c.close() for c in conns))

    assert len(codes) == BARCODES
    assert not any(code == 0 for code in codes.values()), "the spray found a card"
    assert {codes[i] for i in range(FOUND_AT, FOUND_AT + len(DEMO))} <= {49, 51}

    # The rest of the library works while the guard is up.
    assert await bind_once(server, ELSEWHERE, UNCACHED_ELSEWHERE) == 0
    assert await bind_once(server, SPRAYERS[1], CACHED) == 0
    assert await bind_once(server, SPRAYERS[2], UNCACHED_THERE) == 49

    total = BARCODES + 4

    def spray_lines() -> list[dict[str, object]]:
        return [e for e in daemon.audit_events() if e.get("event") == "auth"]

    await wait_until(lambda: len(spray_lines()) >= total, "every bind audited")
    events = spray_lines()
    sprayed = {masked(b) for b in SPRAY}
    evaluated = [
        e
        for e in events
        if e["barcode"] in sprayed and e["outcome"] in ("unknown_card", "bad_pin", "accepted")
    ]
    guarded = [e for e in events if e["reason"] == "failed-attempt rate too high"]
    assert len(evaluated) <= THRESHOLD
    assert all(e["outcome"] != "accepted" for e in evaluated)
    assert len(guarded) >= BARCODES - THRESHOLD  # every other spray bind met the guard
    by_card = {e["barcode"]: e for e in events if e["source"] in (ELSEWHERE,)}
    assert by_card[masked(UNCACHED_ELSEWHERE)]["outcome"] == "accepted"
