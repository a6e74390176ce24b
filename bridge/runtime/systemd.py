"""The few lines of systemd's notify protocol, and whether stderr is the journal.

`Type=notify` units wait for `READY=1` before they count as started (and before units ordered
after them start); `STOPPING=1` and `RELOADING=1` show in `systemctl status`. The protocol is
one datagram of `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or an
abstract name written with a leading `@`); see sd_notify(3). Without `$NOTIFY_SOCKET` (not
under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import sys
import time

import structlog

log = structlog.get_logger("bridge.systemd")


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=...") to the service manager. True when sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("systemd_notify_socket_unusable", reason="not a path or abstract name")
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode("utf-8"))
    except OSError as exc:
        log.warning("systemd_notify_failed", error=exc.strerror or type(exc).__name__)
        return False
    return True


def ready(status: str) -> bool:
    return notify("READY=1", f"STATUS={status}")


def stopping() -> bool:
    return notify("STOPPING=1", "STATUS=stopping")


def reloading() -> bool:
    """`RELOADING=1` with the monotonic time systemd asks for since v253 (older ones ignore
    it); `ready` must follow when the reload is done."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")


def stderr_is_journal() -> bool:
    """True when stderr is connected to journald (`$JOURNAL_STREAM` names its device and inode,
    see systemd.exec(5)): the journal stamps every line itself, so ours would be doubled."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):  # ValueError: stderr replaced by an object without a fd
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"
