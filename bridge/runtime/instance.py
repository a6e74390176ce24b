"""One daemon per config: a lock file beside the control socket, and telling that daemon.

`serve` takes an exclusive `flock` on `<control socket>.pid` (the socket's name with `.pid`) and
writes its pid there before it opens the store or binds anything. A second `serve` with the same
config finds the lock held and stops with one line naming the pid, without touching the running
daemon's socket or files. The kernel drops the lock when the process dies however it dies, so a
crashed daemon never leaves a stale lock behind (the file stays; only the lock counts).

The CLI uses the same lock to tell "no daemon is running" (nothing to tell) from "a daemon runs
but did not answer" (its cache and throttle counters may be stale: said loudly).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from bridge.control import notify


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, path: Path) -> None:
        self.pid = pid
        self.path = path
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"already running, {who} (lock {path})")


def lock_path(control_socket: Path) -> Path:
    control_socket = control_socket.resolve()  # messages name the real path, not conf/../var
    return control_socket.with_name(control_socket.name + ".pid")


def _read_pid(handle: int) -> int | None:
    os.lseek(handle, 0, os.SEEK_SET)
    text = os.read(handle, 32).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


class InstanceLock:
    """Held for the daemon's life; `acquire` raises AlreadyRunning when another process has it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise AlreadyRunning(pid, self.path) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def running_pid(path: Path) -> int | None:
    """The pid of the daemon holding the lock at `path`, or None when no daemon holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Told:
    """What became of telling the daemon about a change."""

    running: bool  # a daemon holds the lock
    told: bool  # it answered ok
    pid: int | None = None

    @property
    def failed(self) -> bool:
        return self.running and not self.told


def tell(control_socket: Path, op: str, barcode: str) -> Told:
    """Tell the running daemon (if any) through its control socket."""
    pid = running_pid(lock_path(control_socket))
    if pid is None:
        # No lock holder. A daemon from before the lock existed may still listen: try anyway.
        return Told(running=False, told=notify(control_socket, op, barcode))
    told = notify(control_socket, op, barcode)
    return Told(running=True, told=told, pid=pid if pid > 0 else None)
