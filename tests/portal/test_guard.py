"""The PIN pages' connection guard on the wire (the real daemon, raw sockets and httpx): a
half-sent request is answered 408 and closed at its deadline however it trickles, caps per
source and in total (evicting connections with no whole request header), trusted proxies exempt
from the per-source cap, uvicorn's header size limit, the HTTPS handshake deadline, and the
rate-limited refusal log. No sleeps: each test waits for the server's own answer or close."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.tls import generate_self_signed
from tests import limits
from tests.harness import Daemon
from tests.limits import LIVENESS, closed_by_server, stalled_handshakes

REQUEST = b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n"


def daemon(tmp_path: Path, limits: str = "") -> Daemon:
    return Daemon(tmp_path, f'[portal]\nlisten = "127.0.0.1:0"\n{limits}\n')


def connect(d: Daemon, source: str = "127.0.0.1") -> socket.socket:
    return limits.connect(d, "portal", source)


def page(d: Daemon) -> int:
    host, port = d.address("portal")
    return httpx.get(f"http://{host}:{port}/login", timeout=LIVENESS).status_code


def refusal_lines(d: Daemon, reason: str, source: str) -> list[dict[str, Any]]:
    return limits.refusal_lines(d, "portal_connection_refused", reason, source)


def test_a_trickled_request_header_gets_408_at_its_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, "request_timeout = 1") as d, connect(d, "127.0.0.2") as sock:
        sock.settimeout(0.2)  # one octet per 0.2 s, unless the server answers first
        answer = b""
        sent = 0
        while sent < len(REQUEST) - 2:  # never the blank line that ends the header
            sock.sendall(REQUEST[sent : sent + 1])
            sent += 1
            try:
                answer = sock.recv(65536)
            except TimeoutError:
                continue
            break
        assert sent < len(REQUEST) - 2
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert refusal_lines(d, "request_deadline", "127.0.0.2")
        assert page(d) == 200


def test_the_next_request_on_a_kept_alive_connection_has_a_deadline(tmp_path: Path) -> None:
    limits = "request_timeout = 1\nkeep_alive_timeout = 1"
    with daemon(tmp_path, limits) as d, connect(d, "127.0.0.3") as sock:
        sock.sendall(REQUEST)
        first = b""
        while b"</html>" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /log")  # half the next request, then silence
        assert closed_by_server(sock).startswith(b"HTTP/1.1 408 ")


def test_per_source_cap(tmp_path: Path) -> None:
    with daemon(tmp_path, "max_connections_per_source = 2") as d:
        held = [connect(d, "127.0.0.4"), connect(d, "127.0.0.4")]
        for sock in held:
            sock.sendall(b"GET /")
        for _ in range(3):
            with connect(d, "127.0.0.4") as extra:
                assert closed_by_server(extra) == b""
        assert len(refusal_lines(d, "per_source_cap", "127.0.0.4")) == 1
        assert page(d) == 200  # another address still gets its page
        for sock in held:
            sock.close()


def test_full_listener_evicts_half_sent_requests(tmp_path: Path) -> None:
    with daemon(tmp_path, "max_connections = 2") as d:
        held = [connect(d, "127.0.0.5"), connect(d, "127.0.0.6")]
        for sock in held:
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: x")
        assert page(d) == 200
        assert closed_by_server(held[0]) == b""  # the oldest made room
        assert refusal_lines(d, "evicted_connection_cap", "127.0.0.5")
        for sock in held:
            sock.close()


def test_trusted_proxy_is_exempt_from_the_per_source_cap(tmp_path: Path) -> None:
    limits = 'max_connections_per_source = 1\ntrusted_proxies = ["127.0.0.7"]'
    with daemon(tmp_path, limits) as d:
        first, second = connect(d, "127.0.0.7"), connect(d, "127.0.0.7")
        for sock in (first, second):
            sock.sendall(REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
            assert closed_by_server(sock).startswith(b"HTTP/1.1 200 ")
            sock.close()


def test_oversized_header_is_refused(tmp_path: Path) -> None:
    with daemon(tmp_path, "max_header_bytes = 4096") as d, connect(d) as sock:
        sock.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8192)  # no end
        assert closed_by_server(sock).startswith(b"HTTP/1.1 400 ")
        assert page(d) == 200


def test_https_handshake_deadline(tmp_path: Path) -> None:
    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    limits = (
        'base_url = "https://127.0.0.1"\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
        "tls_handshake_timeout = 1"
    )
    with daemon(tmp_path, limits) as d:
        with connect(d, "127.0.0.8") as sock:
            sock.sendall(b"\x16\x03\x01")
            assert closed_by_server(sock) == b""
        assert refusal_lines(d, "handshake_deadline", "127.0.0.8")
        host, port = d.address("portal")
        got = httpx.get(f"https://{host}:{port}/login", verify=False, timeout=LIVENESS)
        assert got.status_code == 200


def test_abandoned_connections_leave_nothing_behind(tmp_path: Path) -> None:
    """Half-sent requests evicted from a full listener and HTTPS handshakes evicted or dropped
    mid-way are forgotten by the gate and by uvicorn (on uvloop, as the daemon runs)."""
    import asyncio

    from bridge.app import open_core
    from bridge.loop import run
    from bridge.portal.guard import GuardedH11Protocol
    from bridge.portal.server import start
    from bridge.services import Services
    from tests.portal.support import make_config

    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    config = make_config(
        tmp_path,
        '[portal]\nlisten = "127.0.0.1:0"\nbase_url = "https://127.0.0.1"\n'
        'tls_cert = "cert.pem"\ntls_key = "key.pem"\nmax_tls_handshakes = 4\n'
        "max_connections = 8\n",
    )

    async def main() -> tuple[int, int, int]:
        core = await open_core(config)
        assert config.portal is not None
        listener = await start(config.portal, Services(config, core.authenticator, core.audit))
        protocol = listener.server.config.http_protocol_class
        assert issubclass(protocol, GuardedH11Protocol)
        gate = protocol.gate
        try:
            host, port = listener.addresses[0].rsplit(":", 1)
            await stalled_handshakes(host, int(port))
            loop = asyncio.get_running_loop()
            give_up = loop.time() + LIVENESS
            state = listener.server.server_state
            while (state.connections or len(gate)) and loop.time() < give_up:
                await asyncio.sleep(0.05)
            return len(state.connections), len(gate), len(gate.handshaking)
        finally:
            await listener.aclose()
            await core.aclose()

    assert run(main()) == (0, 0, 0)


def test_a_refused_request_still_being_sent_reads_its_answer(tmp_path: Path) -> None:
    """A client whose request is refused while it is still sending (a 60 KB URL) must read the
    400: closing with its unread bytes in our buffer would send a reset that can destroy the
    answer in the client's buffer. The server lingers (its answer, then FIN, then it reads and
    discards for a moment), as Apache and nginx do."""
    import threading

    with daemon(tmp_path, "max_header_bytes = 4096") as d:
        for _ in range(5):
            with connect(d) as sock:
                body = b"GET /login?q=" + b"a" * 262144 + b" HTTP/1.1\r\nHost: x\r\n\r\n"

                def send(sock: socket.socket = sock, body: bytes = body) -> None:
                    try:
                        sock.sendall(body)
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass

                sender = threading.Thread(target=send)
                sender.start()
                sock.settimeout(LIVENESS)
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
                sender.join()
                assert answer.startswith(b"HTTP/1.1 400 ")
        assert page(d) == 200


@pytest.mark.parametrize("listener", ["oidc", "staff"])
def test_every_web_listener_is_guarded(tmp_path: Path, listener: str) -> None:
    """The OpenID Connect/SAML listener and the staff desk share the daemon's descriptor table
    too: the same gate, deadline and lingering close as the PIN pages, with the `[portal]`
    limits (they have no keys of their own)."""
    from tests.federation.support import SECRET, sections
    from tests.portal.support import free_port
    from tests.staff.support import STAFF_SECTION

    (tmp_path / "vendor-secret").write_text(SECRET + "\n")
    portal_limits = "request_timeout = 1\nmax_connections_per_source = 2\nmax_header_bytes = 4096\n"
    if listener == "oidc":
        config = sections(free_port()).replace(
            'library_name = "Riverside Public Library"\n',
            'library_name = "Riverside Public Library"\n' + portal_limits,
            1,
        )
    else:
        config = f'[portal]\nlisten = "127.0.0.1:0"\n{portal_limits}\n{STAFF_SECTION}'
    with Daemon(tmp_path, config) as d:
        with limits.connect(d, listener, "127.0.0.9") as sock:
            sock.sendall(REQUEST[:20])  # half a request header, then silence
            assert closed_by_server(sock).startswith(b"HTTP/1.1 408 ")
        assert limits.refusal_lines(d, f"{listener}_connection_refused", "request_deadline")
        held = [limits.connect(d, listener, "127.0.0.10") for _ in range(2)]
        for sock in held:
            sock.sendall(b"GET /")
        with limits.connect(d, listener, "127.0.0.10") as extra:
            assert closed_by_server(extra) == b""
        assert limits.refusal_lines(d, f"{listener}_connection_refused", "per_source_cap")
        for sock in held:
            sock.close()
        with limits.connect(d, listener) as sock:
            sock.sendall(b"GET /" + b"a" * 8192)
            assert closed_by_server(sock).startswith(b"HTTP/1.1 400 ")
