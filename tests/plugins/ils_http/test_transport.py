"""The pool's `Corked` streams: a request's pieces go out in one write, at the first read."""

from __future__ import annotations

import ssl
from typing import Any

import httpcore

from plugins.ils_http.transport import Corked


class Recording(httpcore.AsyncNetworkStream):
    def __init__(self) -> None:
        self.writes: list[tuple[bytes, float | None]] = []
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return b"HTTP/1.1 204 No Content\r\n\r\n"

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writes.append((buffer, timeout))

    async def aclose(self) -> None:
        self.closed = True

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return Recording()

    def get_extra_info(self, info: str) -> Any:
        return "readable" if info == "is_readable" else None


async def test_head_and_body_go_out_together_at_the_first_read() -> None:
    raw = Recording()
    stream = Corked(raw)
    await stream.write(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n", 5.0)
    await stream.write(b"{}", 5.0)
    await stream.write(b"", 5.0)  # h11's end of a Content-Length body
    assert raw.writes == []
    assert (await stream.read(65536, 5.0)).startswith(b"HTTP/1.1 204")
    assert raw.writes == [(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 5.0)]
    await stream.read(65536, 5.0)  # nothing more to send
    assert len(raw.writes) == 1
    assert stream.get_extra_info("is_readable") == "readable"


async def test_a_request_never_completed_is_never_sent() -> None:
    raw = Recording()
    stream = Corked(raw)
    await stream.write(b"POST / HTTP/1.1\r\n", 5.0)
    await stream.aclose()
    assert raw.closed and raw.writes == []


async def test_tls_starts_after_what_was_written_and_stays_corked() -> None:
    raw = Recording()
    stream = Corked(raw)
    await stream.write(b"CONNECT", 1.0)
    tls = await stream.start_tls(ssl.create_default_context(), "ils.example")
    assert raw.writes == [(b"CONNECT", 1.0)] and isinstance(tls, Corked)
