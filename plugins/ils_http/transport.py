"""The connection pool under `HttpIls`: httpcore's, with each request sent in one write.

httpcore's HTTP/1.1 connection writes a request's head and its body separately. With
TCP_NODELAY (which the pool sets, else the body waits ~40 ms for a delayed ACK) that is two
system calls and two TCP segments per POST, and two wake-ups of the server: one to read a head
and wait, one for the body. Every PIN check is a POST, so `Corked` streams keep what httpcore
writes until it next reads (the request is then complete: HTTP/1.1 sends it all before reading
the answer) and send it in one write. Request bodies here are a few hundred bytes.

The pool is httpcore's (`AsyncConnectionPool`: keep-alive, a cap, idle expiry, per-phase
timeouts from the request's `timeout` extension), used directly rather than through httpx's
client and transport: their auth flow, redirects, hooks, cookie jar and exception wrappers are
machinery the bridge does not use, and they cost more instructions per login than the pool.
"""

# The `timeout` parameters are httpcore's stream and backend interface, not ours to change.
# ruff: noqa: ASYNC109

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class Corked(httpcore.AsyncNetworkStream):
    """A stream whose writes wait for the next read (or close) and then go out together."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._pending: list[bytes] = []
        self._timeout: float | None = None

    async def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            await self._stream.write(data, self._timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if buffer:
            self._pending.append(buffer)
            self._timeout = timeout

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush()
        return await self._stream.read(max_bytes, timeout)

    async def aclose(self) -> None:
        self._pending.clear()  # a request never completed: nothing of it is sent
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        await self._flush()
        return Corked(await self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class CorkedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default (anyio) backend, with `Corked` streams."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return Corked(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return Corked(await self._backend.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)
