"""The steering program in the kernel: three SO_REUSEPORT sockets bound in order, the program
attached (`bridge.runtime.listeners.steer`); every datagram, each from a new source port,
arrives at the socket `expected_worker` names (by State, Calling-Station-Id, User-Name or
Request Authenticator)."""

from __future__ import annotations

import os
import select
import socket

from bridge.radius import steering
from bridge.runtime import listeners


def packet(
    authenticator: bytes, state: bytes | None, station: bytes = b"", user: bytes = b""
) -> bytes:
    attributes = b"\x4f\x08" + os.urandom(6)
    if user:
        attributes += bytes((1, len(user) + 2)) + user
    if station:
        attributes += bytes((31, len(station) + 2)) + station
    if state is not None:
        attributes += bytes((steering.STATE, len(state) + 2)) + state
    attributes += b"\x50\x12" + bytes(16)
    return b"\x01\x07" + (20 + len(attributes)).to_bytes(2, "big") + authenticator + attributes


def test_the_kernel_steers_by_state_and_authenticator() -> None:
    workers = 3
    group = []
    for _ in range(workers):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", group[0].getsockname()[1] if group else 0))
        sock.setblocking(False)
        group.append(sock)
    listeners.steer(group[0], workers)
    address = group[0].getsockname()
    try:
        arrived = [0] * workers
        for n in range(90):
            state = None if n % 3 == 0 else bytes([n % 4]) + os.urandom(16)  # 3: no worker
            station = b"" if n % 2 else f"02-00-00-00-{n:02X}-{n * 7 % 256:02X}".encode()
            user = b"" if n % 5 == 0 else b"2123400000%04d" % n
            data = packet(os.urandom(16), state, station, user)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as nas:  # a new port each
                nas.sendto(data, address)
            readable, _, _ = select.select(group, [], [], 5)
            assert len(readable) == 1
            index = group.index(readable[0])
            assert readable[0].recv(4096) == data
            assert index == steering.expected_worker(data, workers), (n, state)
            arrived[index] += 1
        assert all(arrived), arrived
    finally:
        for sock in group:
            sock.close()
