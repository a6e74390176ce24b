"""A UDP relay between a NAS (eapol_test) and the daemon that can run a step of the test when the
daemon's first Access-Accept passes: "the card is blocked between two authentications" with a
real supplicant whose two runs (`eapol_test -r1`) otherwise follow each other at once."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

ACCESS_ACCEPT = 2


class Relay:
    def __init__(self, upstream: tuple[str, int], on_first_accept: Callable[[], None]) -> None:
        self.upstream = upstream
        self.on_first_accept = on_first_accept
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.front.settimeout(0.2)
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.settimeout(10)
        # Distinct Access-Accepts: a retransmission the server answers from its duplicate cache
        # is the same Accept again (byte for byte), not a second acceptance. Under load the
        # supplicant retransmits while `on_first_accept` (a CLI run) holds the first one here.
        self.accepted: set[bytes] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.front.getsockname()
        return str(host), int(port)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.front.recvfrom(65535)
            except TimeoutError:
                continue
            self.back.sendto(data, self.upstream)
            try:
                reply, _ = self.back.recvfrom(65535)
            except TimeoutError:
                continue
            if reply[0] == ACCESS_ACCEPT and reply not in self.accepted:
                self.accepted.add(reply)
                if len(self.accepted) == 1:
                    self.on_first_accept()
            self.front.sendto(reply, peer)

    @property
    def accepts(self) -> int:
        return len(self.accepted)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.front.close()
        self.back.close()
