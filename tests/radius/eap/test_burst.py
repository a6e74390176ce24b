"""One card's right PIN in a burst of EAP-TTLS/PAP conversations on a cold cache, on the real
daemon: a patron's phone, tablet and laptop joining the Wi-Fi at once, or a controller that
re-authenticates every client after a restart.

Before identical checks waited for the one in flight, the inner PAPs that arrived while the
first was still in the KDF took a reservation each, and once they filled the card's free
failures (5) the rest were rejected, "PIN checks for this card are in progress" (this failed
the memory test in CI, right after the daemon started)."""

from __future__ import annotations

from pathlib import Path

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.eap.nas import run
from tests.radius.eap.peer import client_context
from tests.radius.eap.supplicant import RADIUS_EAP, SECRET, make_certificates


def test_a_burst_for_one_card_on_a_cold_cache_is_all_accepted(tmp_path: Path) -> None:
    d = Daemon(tmp_path, RADIUS_EAP)
    make_certificates(d)
    d.start()
    try:
        ca = d.dir / "tls" / "ca.pem"
        accepted, *_ = run(
            d.address("radius"),
            ca,
            [(DEMO["active"], DEMO_PIN)],
            40,
            client_context(ca),
            secret=SECRET.encode(),
            window=16,
        )
    finally:
        d.stop()
    assert accepted == 40
    audits = [a for a in d.audit_events() if a.get("event") == "auth"]
    assert [a["outcome"] for a in audits] == ["accepted"] * 40
    assert sum(a["reason"] == "verified" for a in audits) == 1  # one KDF: the rest waited
