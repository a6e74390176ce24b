"""Issue 20: bounded work. FLOOD uncached RADIUS requests at once (unknown cards, so each would
cost a KDF run) from a few NAS addresses; a patron at another NAS must still be answered within
the configured deadline for a check slot (`throttle.check_wait_deadline`), retrying like a NAS.

Before, all 6,000 were hashed and a legitimate login waited 94 s. Now at most
`max_pending_per_source` per address wait, the rest are shed at once (no answer: the NAS retries
elsewhere), and slots go round robin by address.

`STRESS=full`: 6,000 requests. Otherwise 600.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bridge.radius import packet as rp
from tests.harness import Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.stress.guess_clients import FULL, Nas, audit_for, size, wait_until

pytestmark = pytest.mark.timeout(900 if FULL else 300)

FLOOD = size(6000, 600)
FLOODERS = [f"127.0.0.{i}" for i in range(2, 5)]  # a few addresses
SOCKETS_PER_ADDRESS = 8  # distinct (port, Identifier) keys for every flood request
ELSEWHERE = "127.0.0.40"
DEADLINE = 5
SECRET = "testing123"
PATRON = "21234000009301"

SECTIONS = f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "loopback"
network = "127.0.0.0/8"
secret = "{SECRET}"
"""
THROTTLE = f"""
source_max_failures = 1000000
global_max_failures = 1000000
check_wait_deadline = {DEADLINE}
"""


@pytest.fixture
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("flood"), SECTIONS, throttle=THROTTLE).start()
    try:
        added = d.cli(
            "patron", "add", PATRON, "--pin-stdin", "--name", "Patron, Real", input=DEMO_PIN
        )
        assert added.returncode == 0, added.stderr
        yield d
    finally:
        d.stop()


async def test_flood_leaves_a_legitimate_login_answered_within_the_deadline(
    daemon: Daemon,
) -> None:
    server = daemon.address("radius")
    flooders = [
        await Nas(server, SECRET.encode()).open(address)
        for address in FLOODERS
        for _ in range(SOCKETS_PER_ADDRESS)
    ]
    patron_nas = await Nas(server, SECRET.encode()).open(ELSEWHERE)
    try:
        for i in range(FLOOD):  # fired at once, answers ignored
            flooders[i % len(flooders)].send(f"2998{i:06d}0000", WRONG_PIN)  # masked: ...0000
        # One try a second, DEADLINE tries: answered within the deadline or the test fails.
        reply = await patron_nas.ask(PATRON, DEMO_PIN, retry=1.0, tries=DEADLINE)
        assert reply.code == rp.ACCESS_ACCEPT
    finally:
        for nas in [*flooders, patron_nas]:
            nas.close()
    await wait_until(lambda: bool(audit_for(daemon, PATRON)), "the patron's login audited")
    assert [e["outcome"] for e in audit_for(daemon, PATRON)] == ["accepted"]
    if FULL:  # 6,000 at once: most were shed unchecked rather than hashed
        flood = [e for e in daemon.audit_events() if e.get("source") in FLOODERS]
        hashed = sum(1 for e in flood if e["outcome"] == "unknown_card")
        shed = sum(1 for e in flood if e["outcome"] == "busy")
        assert shed > hashed
