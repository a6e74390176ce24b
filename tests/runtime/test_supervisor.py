"""`[server] workers = N` with the real daemon: one ready line, listeners shared by the workers
(SO_REUSEPORT), RADIUS retransmissions meeting their first copy, a worker killed and restarted,
SIGTERM losing no audit line, SIGHUP reloading every worker in place, one scrape for every worker,
and a config that would give each worker its own counters refused."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.radius import packet as rp
from bridge.radius import steering
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.udp import Nas
from tests.state import scenario

SECRET = "radius-secret-9f2"
SECTIONS = (
    scenario.LDAP
    + f"""
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0

[[radius.clients]]
name = "loopback"
network = "127.0.0.0/8"
secret = "{SECRET}"

[server]
workers = 2

[state]
backend = "sqlite"
"""
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, SECTIONS).start()
    yield d
    d.stop()


def pids(daemon: Daemon) -> list[int]:
    """The worker pids the supervisor's ready line named (read back from its stdout line)."""
    assert daemon.proc is not None
    return [int(p) for p in daemon.workers]


def owners(port: int) -> set[int]:
    """Pids holding established TCP connections on this local port (ss, our own processes)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {int(p) for p in re.findall(r"pid=(\d+)", out)}


def test_one_ready_line_and_connections_spread(daemon: Daemon) -> None:
    workers = pids(daemon)
    assert len(workers) == 2 and daemon.proc is not None and daemon.proc.pid not in workers
    port = daemon.address("ldap")[1]
    conns = []
    try:
        for _ in range(24):  # the kernel hashes each new connection to one of the workers
            conns.append(scenario.open_ldap(daemon))
        assert owners(port) == set(workers)
    finally:
        for conn in conns:
            conn.unbind()


def test_radius_retransmissions_reach_one_worker(daemon: Daemon) -> None:
    nas = Nas(daemon.address("radius"), SECRET.encode())
    try:
        for n in range(6):
            nas.sock.close()
            nas.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a new source port
            nas.sock.bind(("127.0.0.1", 0))
            nas.sock.settimeout(10)
            raw, _auth = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
            replies = set()
            for _ in range(4):  # the NAS retransmits the same packet from the same port
                nas.sock.sendto(raw, daemon.address("radius"))
                replies.add(nas.sock.recvfrom(4096)[0])
            assert len(replies) == 1 and replies.pop()[0] == rp.ACCESS_ACCEPT, n
    finally:
        nas.close()
    daemon.stop()  # every line on disk
    radius = [e for e in scenario.auth_lines([daemon]) if e["protocol"] == "radius"]
    assert len(radius) == 6  # one decision per request, whichever worker; duplicates replayed


def test_killed_worker_is_restarted_and_service_keeps_answering(daemon: Daemon) -> None:
    first, _second = pids(daemon)
    os.kill(first, signal.SIGKILL)
    # Connections the kernel had already queued on the killed worker's socket are reset (the
    # SO_REUSEPORT trade-off, docs/scale-out.md); once it is gone the other worker answers all.
    assert scenario.within(30, lambda: "worker_died" in daemon.stderr_path.read_text())
    answered = [scenario.bind(daemon, DEMO["active"], DEMO_PIN) for _ in range(10)]
    assert answered == [0] * 10
    assert scenario.within(30, lambda: "worker_restarted" in daemon.stderr_path.read_text())
    answered = [scenario.bind(daemon, DEMO["active"], DEMO_PIN) for _ in range(10)]
    assert answered == [0] * 10
    # RADIUS is steered by the card (User-Name) over the sockets the supervisor holds: the
    # restarted worker has its predecessor's, so requests for worker 0 and 1 are all answered.
    steered = {0: 0, 1: 0}
    while min(steered.values()) < 3:
        assert sum(steered.values()) < 60, steered
        nas = Nas(daemon.address("radius"), SECRET.encode())
        try:
            card = DEMO["active"] if sum(steered.values()) % 2 else DEMO["minor"]
            request = nas.access(card.encode(), DEMO_PIN.encode())
            assert nas.ask(request).code == rp.ACCESS_ACCEPT
            steered[steering.expected_worker(request[0], 2)] += 1
        finally:
            nas.close()
    log = daemon.stderr_path.read_text()
    assert '"event":"worker_died"' in log and '"how":"signal 9"' in log
    assert daemon.stop() == 0


def test_sigterm_loses_no_audit_line(daemon: Daemon) -> None:
    n = 40
    for i in range(n):
        scenario.bind(daemon, DEMO["active"], DEMO_PIN if i % 2 else "0000")
    assert daemon.stop() == 0  # SIGTERM to the supervisor, passed on to both workers
    assert len(scenario.auth_lines([daemon])) == n
    log = daemon.stderr_path.read_text()
    assert "Traceback" not in log and "worker_died" not in log  # each worker stopped cleanly


def test_sighup_reloads_every_worker_in_place(daemon: Daemon) -> None:
    before = pids(daemon)
    conn = scenario.open_ldap(daemon)  # an open connection survives the reload
    try:
        assert conn.bind() is True
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)

        def reloaded() -> bool:
            audit = daemon.audit_path.read_text() if daemon.audit_path.exists() else ""
            return audit.count('"event":"config_reloaded"') >= 2  # one line per worker

        assert scenario.within(60, reloaded)
        assert pids(daemon) == before  # reloaded, not replaced
        assert conn.rebind() is True
    finally:
        conn.unbind()
    assert scenario.bind(daemon, DEMO["active"], DEMO_PIN) == 0
    cleared = daemon.cli("lockout", "clear", DEMO["active"])
    assert cleared.returncode == 0 and "daemon told" in cleared.stdout


def test_workers_die_with_the_supervisor(daemon: Daemon) -> None:
    workers = pids(daemon)
    daemon.kill()  # SIGKILL: no chance to pass anything on

    def gone() -> bool:
        return all(not Path(f"/proc/{p}").exists() or _zombie(p) for p in workers)

    assert scenario.within(30, gone)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.parametrize("state", ['backend = "memory"', ""])
def test_per_worker_counters_are_refused(tmp_path: Path, state: str) -> None:
    config = tmp_path / "bridge.toml"
    throttle = 'state = "memory"' if not state else ""
    config.write_text(
        f'[store]\nplugin = "sqlite"\npath = "p.db"\n[throttle]\n{throttle}\n'
        f"[server]\nworkers = 2\n[state]\n{state}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "server.workers" in lines[0] and "per worker" in lines[0]


def test_one_scrape_sees_every_worker(tmp_path: Path) -> None:
    """Worker 0 serves /metrics for both workers: their decisions appear under a `worker`
    label, whichever worker answered the bind."""
    import httpx

    sections = SECTIONS + '\n[metrics]\nlisten = "127.0.0.1:0"\n'
    with Daemon(tmp_path, sections) as daemon:
        for _ in range(8):  # new connections: the kernel spreads them over both workers
            assert scenario.bind(daemon, DEMO["active"], DEMO_PIN) == 0
        host, port = daemon.address("metrics")
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=30).text
        assert 'worker="0"' in text and 'worker="1"' in text
        ready = httpx.get(f"http://{host}:{port}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
