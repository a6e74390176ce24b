"""The real daemon: starts from a config, reports readiness, stops on SIGTERM; throttle locks
seen by the CLI, cleared by `patron-bridge lockout clear` through the control socket, and kept
across a restart."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from bridge.control import notify
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN

SIP2 = """
[sip2]
listen = ["127.0.0.1:0"]

[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
"""

# Locks at the third wrong PIN, with no growing delays first, until staff clear it.
LOCK_AT_THREE = """
card_free_failures = 3
card_lock_after = 3
card_lock_seconds = 0
"""


class Sip2:
    """A minimal raw SIP2 client: a login, then patron information requests."""

    def __init__(self, daemon: Daemon) -> None:
        self.sock = socket.create_connection(daemon.address("sip2"), timeout=30)
        self.buf = b""
        assert self.ask("9300CNselfcheck|COsc-secret-1|CPdesk|").startswith("941")

    def ask(self, message: str) -> str:
        self.sock.sendall(message.encode() + b"\r")
        while b"\r" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "server closed"
            self.buf += chunk
        frame, _, self.buf = self.buf.partition(b"\r")
        return frame.decode("cp850")

    def check(self, barcode: str, pin: str) -> str:
        return self.ask(f"63001{'20240101    101010'}{' ' * 10}AOMAIN|AA{barcode}|AC|AD{pin}|")

    def close(self) -> None:
        self.sock.close()


def test_daemon_starts_and_stops(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        shown = daemon.cli("patron", "show", DEMO["active"])
        assert shown.returncode == 0, shown.stderr
        assert '"name": "Rivera, Ana"' in shown.stdout
        assert (tmp_path / "bridge.sock").exists()
        assert (tmp_path / "bridge.sock").stat().st_mode & 0o777 == 0o600
        assert notify(tmp_path / "bridge.sock", "ping", "")
    finally:
        assert daemon.stop() == 0
    assert (tmp_path / "pepper.key").stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "bridge.sock").exists()
    assert not notify(tmp_path / "bridge.sock", "ping", "")  # nobody listening: False


def test_lockout_clear_reaches_the_running_daemon(tmp_path: Path) -> None:
    card = DEMO["active"]
    with Daemon(tmp_path, SIP2, throttle=LOCK_AT_THREE) as daemon:
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(card, DEMO_PIN)
            for _ in range(3):
                assert "|CQN|" in sip.check(card, WRONG_PIN)
            locked = sip.check(card, DEMO_PIN)
            assert "|CQN|" in locked and "temporarily locked" in locked
            shown = daemon.cli("patron", "show", card)
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["locked"] is True  # the CLI sees the daemon's lock

            cleared = daemon.cli("lockout", "clear", card)
            assert cleared.returncode == 0, cleared.stderr
            assert "(daemon told)" in cleared.stdout
            answer = sip.check(card, DEMO_PIN)
            assert "|CQY|" in answer and "locked" not in answer
            assert json.loads(daemon.cli("patron", "show", card).stdout)["locked"] is False
        finally:
            sip.close()
    events = [e for e in daemon.audit_events() if e.get("event") == "lock_cleared"]
    assert events and events[0]["actor"] == "cli"


def test_lock_survives_a_daemon_restart(tmp_path: Path) -> None:
    card = DEMO["minor"]
    daemon = Daemon(tmp_path, SIP2, throttle=LOCK_AT_THREE).start()
    try:
        sip = Sip2(daemon)
        for _ in range(3):
            sip.check(card, WRONG_PIN)
        sip.close()
    finally:
        daemon.stop()
    with daemon:
        sip = Sip2(daemon)
        try:
            assert "temporarily locked" in sip.check(card, DEMO_PIN)
        finally:
            sip.close()
    cleared = daemon.cli("lockout", "clear", card)  # no daemon running: the file alone
    assert cleared.returncode == 0 and "(daemon told)" not in cleared.stdout
    with daemon:
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(card, DEMO_PIN)
        finally:
            sip.close()


def test_cli_block_and_pin_set_reach_the_running_daemon(tmp_path: Path) -> None:
    """A verified credential is cached in the daemon; a block or PIN reset from the CLI drops
    it at once through the control socket."""
    card = DEMO["active"]
    with Daemon(tmp_path, SIP2) as daemon:
        sip = Sip2(daemon)
        try:
            assert "|CQY|" in sip.check(card, DEMO_PIN)  # now cached
            blocked = daemon.cli("patron", "block", card, "Card reported stolen")
            assert blocked.returncode == 0, blocked.stderr
            assert "Card reported stolen" in sip.check(card, DEMO_PIN)
            assert daemon.cli("patron", "unblock", card).returncode == 0
            answer = sip.check(card, DEMO_PIN)
            assert "|CQY|" in answer and "stolen" not in answer
        finally:
            sip.close()


async def test_control_socket_requests(tmp_path: Path) -> None:
    """The control protocol in-process: each op, each refusal, and an oversized line."""
    import asyncio

    from bridge.control import ControlServer
    from tests.core.support import fast_hasher, make_auth

    hasher = fast_hasher()
    rig = make_auth(object(), hasher)
    rig.throttle.record_failure("21234000000001", "src", rig.clock.now)
    server = ControlServer(tmp_path / "ctl" / "bridge.sock", rig.auth)
    await server.start()
    try:
        path = tmp_path / "ctl" / "bridge.sock"
        assert path.stat().st_mode & 0o777 == 0o600

        async def ask(raw: bytes) -> bytes:
            reader, writer = await asyncio.open_unix_connection(str(path), limit=2**20)
            writer.write(raw)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer

        ok = await ask(b'{"op": "clear_lock", "barcode": "21234000000001"}\n')
        assert json.loads(ok) == {"ok": True}
        assert rig.throttle.failures("21234000000001", rig.clock.now) == 0
        assert json.loads(await ask(b'{"op": "ping"}\n')) == {"ok": True}
        for raw, error in [
            (b"not json\n", "bad request"),
            (b'{"barcode": "1"}\n', "bad request"),
            (b'{"op": "shutdown"}\n', "unknown op"),
            (b'{"op": "invalidate", "barcode": "two words"}\n', "bad barcode"),
            (b'{"op": "invalidate", "barcode": 5}\n', "bad barcode"),
        ]:
            assert json.loads(await ask(raw))["error"] == error
        assert await ask(b"x" * 200_000 + b"\n") == b""  # closed, no crash
        assert json.loads(await ask(b'{"op": "ping"}\n')) == {"ok": True}  # still serving
    finally:
        await server.aclose()
        hasher.close()
    assert not (tmp_path / "ctl" / "bridge.sock").exists()
