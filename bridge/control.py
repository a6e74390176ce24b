"""A local control socket so CLI changes reach a running daemon at once.

`patron-bridge pin set`, `patron block` and `lockout clear` change the store (or the throttle
file) directly, then tell the daemon, if one is running, to drop its cached verification and
in-memory throttle counters for that card. One JSON object per line over a Unix socket that only
the bridge's user can open (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

from bridge.core.auth import Authenticator, valid_barcode
from bridge.files import private_dir

log = structlog.get_logger("bridge.control")

OPS = frozenset({"invalidate", "clear_lock", "ping", "metrics", "reload", "forget_all"})


class ControlServer:
    def __init__(self, path: Path, authenticator: Authenticator) -> None:
        self.path = path
        self.authenticator = authenticator
        self._server: asyncio.AbstractServer | None = None
        # This process's Prometheus exposition, when `[metrics]` is on: the `metrics` op lets
        # a supervisor of several workers merge them into one scrape (bridge.metrics.aggregate).
        self.exposition: Callable[[], bytes] | None = None
        # Re-reads the config (bridge.reload), given who asked; its answer goes back as is.
        self.reloader: Callable[[str], dict[str, object]] | None = None
        # Awaited after a reload that applied, before the answer goes back (pepper rotation:
        # the host takes up an activation and records what it holds); an error line is added
        # to the answer as `pepper_error`.
        self.settle: Callable[[], Awaitable[str | None]] | None = None
        self._inode = -1

    async def start(self) -> None:
        private_dir(self.path.parent)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path))
        finally:
            os.umask(old)
        self._inode = self.path.stat().st_ino

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            reply = self.apply(line[:4096], peer=_peer(writer))
            if reply.get("applied") is not None and self.settle is not None:  # a reload
                error = await self.settle()
                if error is not None:
                    reply = {**reply, "pepper_error": error}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):  # ValueError: line over the limit
            pass
        finally:
            writer.close()

    def apply(self, line: bytes, peer: str = "unknown") -> dict[str, object]:
        try:
            request = json.loads(line)
            op, barcode = request["op"], request.get("barcode", "")
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": "bad request"}
        if op not in OPS:
            return {"ok": False, "error": "unknown op"}
        if op == "ping":
            return {"ok": True}
        if op == "reload":
            if self.reloader is None:
                return {"ok": False, "error": "reload is not available"}
            return self.reloader(f"control:{peer}")
        if op == "metrics":
            if self.exposition is None:
                return {"ok": False, "error": "metrics are off"}
            return {"ok": True, "text": self.exposition().decode("utf-8")}
        if op == "forget_all":
            # An import rewrote patrons: drop every verified credential (each patron's next
            # login is checked against the store again; sessions are left alone).
            self.authenticator.cache.clear()
            log.info("control", op=op)
            return {"ok": True}
        if not isinstance(barcode, str) or not valid_barcode(barcode):
            return {"ok": False, "error": "bad barcode"}
        if op == "invalidate":
            self.authenticator.invalidate(barcode)
        elif op == "clear_lock":
            # Clear through the daemon's own throttle: its delete is queued behind any write
            # still pending for that card, so a late write cannot bring the lock back.
            self.authenticator.throttle.clear(self.authenticator.canonical(barcode))
            self.authenticator.invalidate(barcode)
        log.info("control", op=op)
        return {"ok": True}

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Only our own socket file: a worker replacing this one (SIGHUP) already bound the path.
        with contextlib.suppress(FileNotFoundError):
            if self.path.stat().st_ino == self._inode:
                self.path.unlink()


def _peer(writer: asyncio.StreamWriter) -> str:
    """The user name of the process on the other end (SO_PEERCRED), for the audit."""
    sock = writer.get_extra_info("socket")
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        uid = struct.unpack("3i", creds)[1]
        return pwd.getpwuid(uid).pw_name
    except (OSError, KeyError, AttributeError, struct.error):
        return "unknown"


def request(
    path: Path, payload: dict[str, object], timeout: float = 60
) -> dict[str, object] | None:
    """One request to the daemon's control socket and its answer; None when none came."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(json.dumps(payload).encode() + b"\n")
            reply = sock.makefile("rb").readline()
    except OSError:
        return None
    try:
        answer = json.loads(reply)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def notify(path: Path, op: str, barcode: str) -> bool:
    """Tell a running daemon, and every worker of one (`path.N`, `[server] workers`); False when
    none is listening (then there is nothing to tell)."""
    told = _notify_one(path, op, barcode)
    for worker in sorted(path.parent.glob(f"{path.name}.*")):
        if worker.name[len(path.name) + 1 :].isdigit():
            told = _notify_one(worker, op, barcode) or told
    return told


def _notify_one(path: Path, op: str, barcode: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            sock.sendall(json.dumps({"op": op, "barcode": barcode}).encode() + b"\n")
            reply = sock.makefile("rb").readline()
    except OSError:
        return False
    try:
        return bool(json.loads(reply).get("ok"))
    except ValueError:
        return False


def reload_all(path: Path) -> dict[str, object] | None:
    """Ask the daemon to reload: its one control socket, or, under `[server] workers = N`
    (one socket per worker, `<socket>.<i>`), every worker's; the answers merged (refused if
    one refused, `pepper_error` if one had it). None when no socket answered."""
    sockets = (
        [path] if path.exists() else sorted(path.parent.glob(glob.escape(path.name) + ".[0-9]*"))
    )
    answers = [request(p, {"op": "reload"}) for p in sockets if p.suffix != ".pid"]
    if not answers or any(a is None for a in answers):
        return None
    first = answers[0]
    assert first is not None
    merged: dict[str, object] = dict(first)
    for answer in answers:
        assert answer is not None
        if not answer.get("ok"):
            return answer
        if answer.get("pepper_error"):
            merged["pepper_error"] = answer["pepper_error"]
    return merged
