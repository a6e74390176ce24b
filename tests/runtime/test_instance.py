"""One daemon per config: a second `serve` refuses in one line and leaves the first alone; the
CLI says when a running daemon could not be told of a change."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.control import notify
from bridge.runtime.instance import (
    AlreadyRunning,
    InstanceLock,
    _read_pid,
    lock_path,
    running_pid,
    tell,
)
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, NEW_PIN
from tests.test_daemon import SIP2, Sip2


def test_a_second_serve_refuses_and_leaves_the_first_alone(tmp_path: Path) -> None:
    with Daemon(tmp_path, SIP2) as daemon:
        assert daemon.proc is not None
        sock = tmp_path / "bridge.sock"
        before = sock.stat().st_ino
        second = daemon.cli("serve")
        assert second.returncode == 1
        assert second.stderr == (
            f"patron-bridge: already running, pid {daemon.proc.pid} (lock {sock}.pid)\n"
        )
        assert second.stdout == ""
        # The running daemon's control socket is the same file and still answers.
        assert sock.stat().st_ino == before
        assert notify(sock, "ping", "")
        # A PIN set with the CLI still reaches the daemon's cache.
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(DEMO["active"], DEMO_PIN)
            changed = daemon.cli("pin", "set", DEMO["active"], "--stdin", input=NEW_PIN + "\n")
            assert changed.returncode == 0, changed.stderr
            assert "|CQN|" in sip.check(DEMO["active"], DEMO_PIN)
            assert "|CQY|" in sip.check(DEMO["active"], NEW_PIN)
        finally:
            sip.close()
    assert running_pid(lock_path(tmp_path / "bridge.sock")) is None


def test_the_cli_says_when_the_running_daemon_was_not_told(tmp_path: Path) -> None:
    with Daemon(tmp_path, SIP2) as daemon:
        assert daemon.proc is not None
        sock = tmp_path / "bridge.sock"
        sock.unlink()  # what an old second `serve` used to do to it
        blocked = daemon.cli("patron", "block", DEMO["active"], "lost card")
        assert blocked.returncode == 1
        lines = blocked.stderr.splitlines()
        assert (
            f"patron-bridge: card {DEMO['active']} changed, but the daemon (pid "
            f"{daemon.proc.pid}) could not be told through {sock}: it keeps its cached answer "
            f"and lock counters for {DEMO['active']} until told; run the command again or "
            "restart it"
        ) in lines
        assert '"blocked": true' in blocked.stdout  # the change itself was made


def test_no_daemon_means_nothing_to_tell(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, SIP2)
    blocked = daemon.cli("patron", "block", DEMO["active"], "lost card")
    assert blocked.returncode == 0, blocked.stderr
    assert "could not be told" not in blocked.stderr
    told = tell(tmp_path / "bridge.sock", "invalidate", DEMO["active"])
    assert (told.running, told.told, told.failed) == (False, False, False)


def test_the_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    path = tmp_path / "run" / "bridge.sock.pid"
    first = InstanceLock(path)
    first.acquire()
    assert running_pid(path) == os.getpid()
    assert path.stat().st_mode & 0o777 == 0o600
    second = InstanceLock(path)
    try:
        second.acquire()
        raise AssertionError("acquired twice")
    except AlreadyRunning as exc:
        assert exc.pid == os.getpid()
        assert str(exc) == f"already running, pid {os.getpid()} (lock {path})"
    first.release()
    assert running_pid(path) is None
    second.acquire()  # free again
    second.release()


def test_a_lock_file_with_garbage_in_it_is_still_a_lock(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sock.pid"
    path.write_bytes(b"\xff\x00not a pid" * 100)
    assert running_pid(path) is None  # nobody holds it: the content does not matter
    lock = InstanceLock(path)
    lock.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    lock.release()


@settings(max_examples=200, deadline=None)
@given(content=st.binary(max_size=64))
def test_property_any_lock_file_content_reads_as_a_pid_or_none(content: bytes) -> None:
    fd = os.memfd_create("pid")
    try:
        os.write(fd, content)
        pid = _read_pid(fd)
    finally:
        os.close(fd)
    assert pid is None or (isinstance(pid, int) and pid >= 0)
