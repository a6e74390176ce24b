"""Issue 12: one daemon with `[server] workers = 2` behind nginx's UDP balancing, round robin
(no `hash` line). nginx forwards every datagram from a new port of its own, so the kernel's
default SO_REUSEPORT choice (a hash of the source port) would send a retransmission, or the next
round of an EAP conversation, to either worker. The workers' RADIUS sockets are steered
(bridge.radius.steering) by the datagram itself: an EAP round by the worker index its State
starts with, a conversation's first packet by the device (Calling-Station-Id), PAP by the card
(User-Name). So copies are decided once and EAP-TTLS conversations
finish, through nginx, on two workers."""

from __future__ import annotations

from pathlib import Path

from bridge.radius import steering
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.eap.nas import run
from tests.radius.eap.peer import client_context
from tests.radius.eap.supplicant import RADIUS_EAP, SECRET, make_certificates
from tests.radius.udp import Nas
from tests.state import scenario
from tests.state.balancers import nginx_udp

WORKERS = '\n[server]\nworkers = 2\n\n[state]\nbackend = "sqlite"\n'


def test_copies_and_eap_rounds_through_nginx_reach_one_worker(tmp_path: Path) -> None:
    d = Daemon(tmp_path, RADIUS_EAP + WORKERS)
    make_certificates(d)
    d.start()
    try:
        (tmp_path / "nginx").mkdir()
        with nginx_udp(tmp_path / "nginx", [d.address("radius")]) as front:
            nases = [Nas(front, SECRET.encode()) for _ in range(16)]
            workers = set()
            try:
                for n, nas in enumerate(nases):
                    card = DEMO["active"] if n % 2 else DEMO["minor"]  # one per worker (User-Name)
                    raw, _ = request = nas.access(card.encode(), DEMO_PIN.encode())
                    workers.add(steering.expected_worker(raw, 2))
                    answers = {nas.ask(request).code for _ in range(3)}  # 3 copies, 3 ports
                    assert answers == {2}  # Access-Accept
            finally:
                for nas in nases:
                    nas.close()
            ca = d.dir / "tls" / "ca.pem"
            patrons = [(DEMO["active"], DEMO_PIN), (DEMO["minor"], DEMO_PIN)]
            accepted, *_ = run(front, ca, patrons, 12, client_context(ca), secret=SECRET.encode())
            assert accepted == 12
            # Four devices (Calling-Station-Id), a conversation each, then each resumes its TLS
            # session: its worker holds the session, whatever port nginx sent it from.
            devices = [f"02-00-5E-10-00-{n:02X}".encode() for n in (1, 2, 3, 4)]
            assert {steering.expected_worker(station_packet(s), 2) for s in devices} == {0, 1}
            ctx = client_context(ca)
            one = {"secret": SECRET.encode(), "stations": devices, "window": 1}  # kept in order
            first = run(front, ca, patrons, 4, ctx, **one)
            assert first[0] == 4
            again = run(front, ca, patrons, 4, ctx, first[2], **one)
            assert again[0] == 4 and again[3] == 4  # accepted, and every one resumed
    finally:
        d.stop()  # every line on disk
    radius = [e for e in scenario.auth_lines([d]) if e["protocol"] == "radius"]
    assert len(radius) == 16, len(radius)  # one decision per request: copies replayed
    assert workers == {0, 1}  # both workers had requests
    eap = [e for e in scenario.auth_lines([d]) if e["protocol"] == "radius-eap"]
    assert [e["outcome"] for e in eap] == ["accepted"] * 20


def station_packet(station: bytes) -> bytes:
    """An Access-Request with this Calling-Station-Id and no State (a conversation's first)."""
    attribute = bytes((31, len(station) + 2)) + station
    return b"\x01\x00" + (20 + len(attribute)).to_bytes(2, "big") + bytes(16) + attribute
