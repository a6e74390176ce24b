"""The alternative to terminating 802.1X in the bridge: FreeRADIUS 3 in front terminates
EAP-TTLS and proxies the inner PAP to the bridge's RADIUS port. The sample files of
conf/freeradius (what docs/radius.md shows) run here for real with eapol_test against
FreeRADIUS; the bridge sees a plain PAP request from FreeRADIUS and audits it as "radius"."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import freeradius
from tests.conftest import require_tool
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.eap.supplicant import audited, eapol_test, make_certificates, ttls

SECTIONS = """
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[[radius.clients]]
name = "freeradius"
network = "127.0.0.1/32"
secret = "freeradius-to-bridge-secret"
reply = { Session-Timeout = 14400 }
"""


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, tuple[str, int]]]:
    require_tool("eapol_test")
    require_tool("freeradius")
    tmp = tmp_path_factory.mktemp("fr-front")
    bridge = Daemon(tmp, SECTIONS)
    make_certificates(bridge)
    bridge.start()
    tls = tmp / "tls"
    port = freeradius.free_udp_port()
    conf = freeradius.raddb(
        tmp / "freeradius",
        port=port,
        certificates={
            "ca": tls / "ca.pem",
            "cert": tls / "server.pem",
            "key": tls / "server-key.pem",
        },
        bridge=bridge.address("radius"),
    )
    try:
        with freeradius.running(conf, debug=True):
            freeradius.wait_answering(("127.0.0.1", port), b"access-point-secret")
            yield bridge, ("127.0.0.1", port)
    finally:
        bridge.stop()


def run(front: tuple[Daemon, tuple[str, int]], pin: str, name: str) -> str:
    bridge, address = front
    net = ttls(bridge, DEMO["active"], pin)
    result = eapol_test(bridge, net, name=name, address=address, secret="access-point-secret")
    Path(bridge.dir / f"{name}.out").write_text(result.stdout)
    return result.stdout


def test_ttls_pap_through_freeradius_to_the_bridge(front: tuple[Daemon, tuple[str, int]]) -> None:
    out = run(front, DEMO_PIN, "front-ok")
    assert "SUCCESS" in out.splitlines()[-1]
    assert "MPPE keys OK: 1  mismatch: 0" in out
    accept = out[out.index("code=2 (Access-Accept)") :]
    assert "Attribute 27 (Session-Timeout)" in accept  # the bridge's reply, through the tunnel
    bridge, _ = front
    events = audited(bridge, 1, "0001", "radius")
    assert events and events[-1]["client"] == "freeradius" and events[-1]["outcome"] == "accepted"


def test_wrong_pin_through_freeradius_fails(front: tuple[Daemon, tuple[str, int]]) -> None:
    out = run(front, WRONG_PIN, "front-wrong")
    assert "FAILURE" in out.splitlines()[-1]
