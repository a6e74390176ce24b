"""Serve a test double (an ASGI app) for real: uvicorn on a free loopback port, in its own
thread and event loop, so a test can drive it from async code or from blocking clients
(pyrad, ldap3) while the daemon under test calls it over TCP.

Readiness is an event set by uvicorn's startup, never a sleep. The middleware counts TCP
connections (distinct client ports) so tests and the benchmark can see keep-alive at work.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectionCounter:
    """ASGI middleware: remembers every (host, port) a request came from."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.peers: set[tuple[str, int]] = set()
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            client = scope.get("client")
            if client:
                self.peers.add((client[0], client[1]))
            self.requests += 1
        await self.app(scope, receive, send)

    @property
    def connections(self) -> int:
        return len(self.peers)


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ready: threading.Event) -> None:
        super().__init__(config)
        self.ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


class Served:
    """A running double: `url`, `port`, `counter`; `stop()` ends it."""

    def __init__(
        self, app: App, host: str = "127.0.0.1", *, tls: tuple[str, str] | None = None
    ) -> None:
        """`tls`: (certificate file, key file) to serve HTTPS."""
        self.counter = ConnectionCounter(app)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this: uvicorn writes a response's head and body
        # separately, and with Nagle on the body waits for the client's delayed ACK (~40 ms).
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        config = uvicorn.Config(
            self.counter,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        self.ready = threading.Event()
        self.server = _Server(config, self.ready)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.run(self.server.serve(sockets=[self.sock]))

    def start(self) -> Served:
        self.thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("test double did not start")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()

    def __enter__(self) -> Served:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A loopback port nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
