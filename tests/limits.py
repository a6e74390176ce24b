"""What the listeners' connection-limit tests share: raw sockets from a chosen loopback
source, waiting for the server's own disconnect, reading the rate-limited refusal log, and a
flood of TLS handshakes that never finish. No sleeps decide an outcome: a socket timeout and a
bounded wait for a log line are the liveness bounds."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

from tests.harness import Daemon

LIVENESS = 20.0  # seconds a deadline of 1-2 s gets before the test calls it broken


def connect(d: Daemon, listener: str, source: str = "127.0.0.1", index: int = 0) -> socket.socket:
    """A TCP connection to a daemon listener from a loopback source (127.x.y.z is a "client")."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(LIVENESS)
    sock.connect(d.address(listener, index))
    return sock


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed (a reset counts as closed)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def refusal_lines(
    d: Daemon, event: str, reason: str, source: str | None = None
) -> list[dict[str, Any]]:
    """The daemon's `event` lines for a reason (and source), waiting (bounded) for one."""
    deadline = time.monotonic() + LIVENESS
    while True:
        lines = [json.loads(x) for x in d.stderr_path.read_text().splitlines() if x.startswith("{")]
        found = [
            x
            for x in lines
            if x.get("event") == event
            and x.get("reason") == reason
            and (source is None or x.get("source") == source)
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


async def stalled_handshakes(host: str, port: int) -> None:
    """Forty connections that send the first bytes of a TLS record and stop, then close."""
    writers = []
    for i in range(40):  # ten times the handshake slots: most are evicted
        _, writer = await asyncio.open_connection(host, port)
        writer.write(b"\x16\x03\x01")
        writers.append(writer)
        if i % 10 == 9:
            await asyncio.sleep(0)  # let the server accept (no time is asserted)
    for writer in writers:
        writer.close()
