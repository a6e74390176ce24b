"""systemd integration: READY=1 / RELOADING=1 / STOPPING=1 over a fake $NOTIFY_SOCKET (a Unix
datagram socket this test owns), journald-style lines when $JOURNAL_STREAM names stderr, log
files reopened on SIGUSR1 and SIGHUP, and `systemd-analyze verify` on the shipped unit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.runtime import systemd
from tests.conftest import require_tool
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.test_daemon import SIP2, Sip2

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "patron-bridge.service"
DEADLINE = 20.0  # seconds to wait for an expected message: a liveness bound, not a timing test


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(DEADLINE)
    yield sock, path
    sock.close()


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_reloading_and_stopping_are_sent(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    daemon = Daemon(tmp_path, SIP2, env={"NOTIFY_SOCKET": str(path)}).start()
    try:
        assert daemon.proc is not None
        ready = receive(sock)
        assert ready["READY"] == "1"
        assert ready["STATUS"].startswith("serving sip2 127.0.0.1:")
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = receive(sock)
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) > 0
        assert receive(sock)["READY"] == "1"
        daemon.proc.send_signal(signal.SIGTERM)
        assert receive(sock)["STOPPING"] == "1"
    finally:
        assert daemon.stop() == 0


def test_abstract_notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"patron-bridge-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(DEADLINE)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready("serving")
        assert receive(sock) == {"READY": "1", "STATUS": "serving"}


def test_without_notify_socket_nothing_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not systemd.stopping()
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert not systemd.stopping()
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify.sock")
    assert not systemd.stopping()  # logged, never raised


def test_lines_to_the_journal_carry_a_priority_and_no_timestamp(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, SIP2)
    daemon.stderr_path.touch()
    st = daemon.stderr_path.stat()
    daemon.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    with daemon:
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)
        finally:
            sip.close()
    lines = [line for line in daemon.stderr_path.read_text().splitlines() if line]
    assert lines
    for line in lines:
        assert line[0] == "<" and line[2] == ">", line
        fields = json.loads(line[3:])
        assert "timestamp" not in fields
    assert any(line.startswith("<6>") and '"event":"ready"' in line for line in lines)
    # The audit file is not the journal: its lines keep their timestamp and no prefix.
    audit = [json.loads(line) for line in daemon.audit_path.read_text().splitlines()]
    assert all("timestamp" in event for event in audit)


def test_audit_to_the_journal_has_no_timestamp(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, SIP2)
    daemon.config.write_text(daemon.config.read_text().replace('"audit.log"', '"stderr"'))
    daemon.stderr_path.touch()
    st = daemon.stderr_path.stat()
    daemon.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
    with daemon:
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)
        finally:
            sip.close()
    auth = [line for line in daemon.stderr_path.read_text().splitlines() if '"auth"' in line]
    assert auth and all(line.startswith('<6>{"level":"info","event":"auth"') for line in auth)


def wait_for(check: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGHUP])
def test_audit_file_is_reopened_after_rotation(tmp_path: Path, sig: signal.Signals) -> None:
    with Daemon(tmp_path, SIP2) as daemon:
        assert daemon.proc is not None
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)
            wait_for(lambda: '"auth"' in daemon.audit_path.read_text(), "the first audit line")
            rotated = tmp_path / "audit.log.1"
            daemon.audit_path.rename(rotated)  # what logrotate does before its postrotate
            daemon.proc.send_signal(sig)
            wait_for(daemon.audit_path.exists, "the audit file to be created again")
            assert "|AFThis card has expired.|" in sip.check(DEMO["expired"], DEMO_PIN)
            wait_for(lambda: "card_expired" in daemon.audit_path.read_text(), "the new line")
        finally:
            sip.close()
    assert "card_expired" not in rotated.read_text()
    assert '"outcome":"accepted"' in rotated.read_text()
    name = signal.Signals(sig).name
    assert f'"event":"logs_reopened","signal":"{name}"' in daemon.stderr_path.read_text()


#: Where installed packages keep their units (verify loads them all).
OTHER_UNITS = ("/lib/systemd/", "/usr/lib/systemd/", "/etc/systemd/")


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """The shipped unit, with ExecStart pointed at this checkout's entry point (verify checks
    that the executable exists)."""
    tool = require_tool("systemd-analyze")
    entry = Path(sys.executable).parent / "patron-bridge"
    unit = tmp_path / "patron-bridge.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/patron-bridge", str(entry)))
    result = subprocess.run(
        [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    # verify also loads every installed unit; warnings about other packages' units (e.g.
    # Debian's freeradius.service) say nothing about ours
    ours = [line for line in result.stderr.splitlines() if not line.startswith(OTHER_UNITS)]
    assert ours == [], result.stderr
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "User=patron-bridge",
        "StateDirectory=patron-bridge",
        "ConfigurationDirectory=patron-bridge",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines(), line
    assert shutil.which(tool)
