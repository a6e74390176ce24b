"""The SIP2 listener's connection limits on the wire: the total cap (evicting a connection that
has not logged in), deadlines a trickle cannot extend (login, a whole message, the TLS
handshake), the handshake cap on a TLS listener, and the rate-limited refusal log. No sleeps:
each test waits for the server's own disconnect, with a socket timeout as the liveness bound."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from tests import limits
from tests.harness import DEMO, Daemon
from tests.limits import LIVENESS, closed_by_server, stalled_handshakes
from tests.pins import DEMO_PIN
from tests.sip2.wire import login_msg, patron_msg

ACCOUNT = """
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
"""


def daemon(tmp_path: Path, limits: str = "", *, tls: bool = False) -> Daemon:
    sections = '[sip2]\nlisten = ["127.0.0.1:0"]\n' + limits + "\n"
    if tls:
        sections += 'tls_listen = ["127.0.0.1:0"]\ntls_cert = "cert.pem"\ntls_key = "key.pem"\n'
    d = Daemon(tmp_path, sections + ACCOUNT)
    if tls:
        made = d.cli("cert", "generate", "--cert", "cert.pem", "--key", "key.pem")
        assert made.returncode == 0, made.stderr
    return d


def connect(d: Daemon, source: str = "127.0.0.1", *, tls: bool = False) -> socket.socket:
    return limits.connect(d, "sip2", source, 1 if tls else 0)


def login(sock: socket.socket) -> None:
    sock.sendall(login_msg() + b"\r")
    assert sock.recv(64) == b"941\r"


def refusal_lines(d: Daemon, reason: str, source: str) -> list[dict[str, Any]]:
    return limits.refusal_lines(d, "sip2_connection_refused", reason, source)


def test_full_listener_evicts_a_connection_that_never_logged_in(tmp_path: Path) -> None:
    with daemon(tmp_path, "max_connections = 2") as d:
        idle = connect(d, "127.0.0.2")
        held = connect(d, "127.0.0.3")
        login(held)
        with connect(d) as newcomer:
            login(newcomer)
        assert closed_by_server(idle) == b""
        assert refusal_lines(d, "evicted_connection_cap", "127.0.0.2")
        held.sendall(b"9900302.00\r")  # the logged-in one is still served
        assert held.recv(64).startswith(b"98")
        idle.close()
        held.close()


def test_full_of_logged_in_connections_refuses(tmp_path: Path) -> None:
    with daemon(tmp_path, "max_connections = 1") as d:
        held = connect(d, "127.0.0.2")
        login(held)
        for _ in range(5):
            with connect(d, "127.0.0.4") as refused:
                assert closed_by_server(refused) == b""
        assert len(refusal_lines(d, "connection_cap", "127.0.0.4")) == 1  # once per interval
        held.close()


def test_login_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, "login_timeout = 1") as d, connect(d, "127.0.0.5") as sock:
        assert closed_by_server(sock) == b""
        assert refusal_lines(d, "login_deadline", "127.0.0.5")


def test_a_trickled_message_does_not_extend_its_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, "message_timeout = 1") as d, connect(d, "127.0.0.6") as sock:
        login(sock)
        message = patron_msg("63", DEMO["active"], DEMO_PIN) + b"\r"
        sock.settimeout(0.2)  # one octet per 0.2 s, unless the server closes first
        sent = 0
        while sent < len(message) - 1:  # never the terminator
            sock.sendall(message[sent : sent + 1])
            sent += 1
            try:
                if sock.recv(64) == b"":
                    break
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
        assert sent < len(message) - 1
        assert refusal_lines(d, "message_deadline", "127.0.0.6")


def test_tls_handshake_deadline_and_cap(tmp_path: Path) -> None:
    limits = "tls_handshake_timeout = 1\nmax_tls_handshakes = 1"
    with daemon(tmp_path, limits, tls=True) as d:
        with connect(d, "127.0.0.7", tls=True) as stalled:
            stalled.sendall(b"\x16\x03\x01")
            assert closed_by_server(stalled) == b""
        assert refusal_lines(d, "handshake_deadline", "127.0.0.7")
        pending = connect(d, "127.0.0.8", tls=True)  # holds the one handshake slot
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with ctx.wrap_socket(connect(d, tls=True)) as client:  # evicts it, and is served
            login(client)
        assert closed_by_server(pending) == b""
        assert refusal_lines(d, "evicted_handshake_cap", "127.0.0.8")
        pending.close()


def test_handshakes_that_never_finish_leave_nothing_behind(tmp_path: Path) -> None:
    """As for LDAPS: a connection lost or evicted during its TLS handshake is forgotten by the
    listener even though the TLS layer never reports it (run on uvloop, as the daemon is)."""
    import asyncio

    from bridge.app import open_core
    from bridge.config import loads
    from bridge.loop import run
    from bridge.services import Services
    from bridge.sip2.server import start
    from bridge.tls import generate_self_signed
    from tests.harness import base_config

    generate_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", ["127.0.0.1"])
    sections = (
        '[sip2]\nlisten = ["127.0.0.1:0"]\ntls_listen = ["127.0.0.1:0"]\n'
        'tls_cert = "cert.pem"\ntls_key = "key.pem"\nmax_tls_handshakes = 4\n' + ACCOUNT
    )
    config = loads(
        base_config(tmp_path, throttle='state = "memory"') + sections,
        source=str(tmp_path / "bridge.toml"),
        base_dir=tmp_path,
    )

    async def main() -> tuple[int, int, int]:
        core = await open_core(config)
        assert config.sip2 is not None
        listener = await start(config.sip2, Services(config, core.authenticator, core.audit))
        try:
            host, port = listener.tls_addresses[0].rsplit(":", 1)
            await stalled_handshakes(host, int(port))
            loop = asyncio.get_running_loop()
            give_up = loop.time() + LIVENESS
            gate = listener.gate
            while (listener._connections or len(gate)) and loop.time() < give_up:
                await asyncio.sleep(0.05)
            return len(listener._connections), len(gate), len(gate.handshaking)
        finally:
            await listener.aclose()
            await core.aclose()

    assert run(main()) == (0, 0, 0)
