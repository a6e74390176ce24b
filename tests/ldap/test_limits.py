"""The LDAP listener's connection limits on the wire: per-source and total caps (with eviction of
connections that never bound), the descriptor reserve, deadlines a trickle cannot extend (first
bind, whole PDU, TLS handshake on LDAPS and after StartTLS), the handshake cap, and the refusal
log (at most one line per reason and source per interval). No test sleeps: each waits for the
server's own disconnect, with a socket timeout as the liveness bound."""

from __future__ import annotations

import json
import socket
import ssl
from pathlib import Path
from typing import Any

from ldap3 import Connection

from bridge.ldap import messages as m
from tests import limits
from tests.harness import DEMO, Daemon
from tests.ldap import oracle
from tests.ldap.test_server import EZPROXY, EZPROXY_SECRET, SECTIONS, dn, server
from tests.limits import LIVENESS, closed_by_server, stalled_handshakes
from tests.pins import DEMO_PIN


def daemon(tmp_path: Path, **limits: object) -> Daemon:
    extra = "\n".join(f"{k} = {json.dumps(v)}" for k, v in limits.items())
    sections = SECTIONS.replace("idle_timeout = 2.0", f"idle_timeout = 60.0\n{extra}")
    return Daemon(tmp_path, sections, env={"DESK_SECRET": "desk-token-77a2b9"})


def connect(d: Daemon, source: str = "127.0.0.1", *, tls: bool = False) -> socket.socket:
    return limits.connect(d, "ldap", source, 1 if tls else 0)


def bind(sock: socket.socket) -> int:
    sock.sendall(oracle.bind(1, EZPROXY, EZPROXY_SECRET.encode()))
    code: int = oracle.decode(sock.recv(65536))["payload"][0][3]
    return code


def refusal_lines(d: Daemon, reason: str, source: str | None = None) -> list[dict[str, Any]]:
    """The daemon's `ldap_connection_refused` lines for a reason, waiting (bounded) for one."""
    return limits.refusal_lines(d, "ldap_connection_refused", reason, source)


def patron_bind_works(d: Daemon, *, tls: bool = False) -> bool:
    c = Connection(server(d, tls=tls), dn(DEMO["active"]), DEMO_PIN, raise_exceptions=False)
    ok = bool(c.bind())
    c.unbind()
    return ok


def test_per_source_cap(tmp_path: Path) -> None:
    with daemon(tmp_path, max_connections_per_source=2) as d:
        held = [connect(d), connect(d)]
        for sock in held:
            assert bind(sock) == 0
        for _ in range(5):
            with connect(d) as third:
                notice = oracle.decode(closed_by_server(third))
            assert notice["protocolOp"] == 24 and notice["payload"][0][3] == 51  # busy
        with connect(d, "127.0.0.2") as other:  # another address is not affected
            assert bind(other) == 0
        lines = refusal_lines(d, "per_source_cap", "127.0.0.1")
        assert len(lines) == 1  # five refusals, one line per interval
        for sock in held:
            sock.close()


def test_full_listener_evicts_a_connection_that_never_bound(tmp_path: Path) -> None:
    with daemon(tmp_path, max_connections=2) as d:
        idle = connect(d, "127.0.0.2")
        bound = connect(d, "127.0.0.3")
        assert bind(bound) == 0
        assert patron_bind_works(d)  # takes the idle one's place
        assert closed_by_server(idle) == b""
        assert refusal_lines(d, "evicted_connection_cap", "127.0.0.2")
        bound.sendall(oracle.extended(2, m.OID_WHOAMI))  # the bound one is still served
        assert oracle.decode(bound.recv(65536))["payload"][0][3] == 0
        idle.close()
        bound.close()


def test_first_bind_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, bind_timeout=1.0) as d, connect(d, "127.0.0.4") as sock:
        sock.sendall(oracle.extended(1, m.OID_WHOAMI))  # a request, but not a bind
        assert oracle.decode(sock.recv(65536))["messageID"] == 1
        notice = oracle.decode(closed_by_server(sock))
        assert notice["messageID"] == 0 and notice["payload"][0][3] == 52  # unavailable
        assert refusal_lines(d, "bind_deadline", "127.0.0.4")


def test_a_trickled_pdu_does_not_extend_its_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, pdu_timeout=1.0) as d, connect(d, "127.0.0.5") as sock:
        assert bind(sock) == 0
        pdu = oracle.search(2, "dc=library,dc=example", "(uid=21234000000001)") * 20
        sock.settimeout(0.2)  # the pace of the trickle: one octet per 0.2 s unless it closes
        sent = 0
        reply = b""
        while sent < len(pdu):
            sock.sendall(pdu[sent : sent + 1])
            sent += 1
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                continue
            break
        assert sent < len(oracle.search(2, "dc=library,dc=example", "(uid=21234000000001)"))
        notice = oracle.decode(reply)
        assert notice["protocolOp"] == 24 and notice["payload"][0][3] == 52
        assert refusal_lines(d, "pdu_deadline", "127.0.0.5")


def test_ldaps_handshake_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, tls_handshake_timeout=1.0) as d:
        with connect(d, "127.0.0.6", tls=True) as sock:
            sock.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
            assert closed_by_server(sock) == b""
        assert refusal_lines(d, "handshake_deadline", "127.0.0.6")
        assert patron_bind_works(d, tls=True)


def test_starttls_handshake_deadline(tmp_path: Path) -> None:
    with daemon(tmp_path, tls_handshake_timeout=1.0) as d, connect(d, "127.0.0.7") as sock:
        sock.sendall(oracle.extended(1, m.OID_STARTTLS))
        assert oracle.decode(sock.recv(65536))["payload"][0][3] == 0
        assert closed_by_server(sock) == b""  # no handshake follows: closed at the deadline
        assert refusal_lines(d, "handshake_deadline", "127.0.0.7")


def test_handshake_cap_evicts_the_oldest_pending_handshake(tmp_path: Path) -> None:
    with daemon(tmp_path, max_tls_handshakes=2) as d:
        first = connect(d, "127.0.0.8", tls=True)
        second = connect(d, "127.0.0.9", tls=True)
        assert patron_bind_works(d, tls=True)  # its handshake took the first one's slot
        assert closed_by_server(first) == b""
        assert refusal_lines(d, "evicted_handshake_cap", "127.0.0.8")
        ctx = ssl.create_default_context(cafile=str(d.dir / "ldap.crt"))
        with ctx.wrap_socket(connect(d, tls=True), server_hostname="127.0.0.1") as tls:
            assert bind(tls) == 0
        first.close()
        second.close()


# -- in process: what the listener holds after a flood of abandoned handshakes -----------------


def test_handshakes_that_never_finish_leave_nothing_behind(tmp_path: Path) -> None:
    """A connection lost or evicted during its TLS handshake is never reported by the TLS layer
    (`connection_lost` is not called): the listener must still forget it, or it keeps the
    connection and its buffers for ever (the 140 -> 808 MB of issue 20)."""
    import asyncio

    from bridge.app import open_core
    from bridge.config import loads
    from bridge.ldap.server import start
    from bridge.loop import run
    from bridge.services import Services
    from tests.harness import base_config

    ldap = SECTIONS.replace("idle_timeout = 2.0", "max_tls_handshakes = 4").replace(
        'password_env = "DESK_SECRET"', 'password = "desk-token-77a2b9"'
    )
    config = loads(
        base_config(tmp_path, throttle='state = "memory"') + ldap,
        source=str(tmp_path / "bridge.toml"),
        base_dir=tmp_path,
    )

    async def main() -> tuple[int, int, int]:
        core = await open_core(config)
        assert config.ldap is not None
        listener = await start(config.ldap, Services(config, core.authenticator, core.audit))
        try:
            host, port = listener.addresses[1].rsplit(":", 1)
            await stalled_handshakes(host, int(port))
            loop = asyncio.get_running_loop()
            give_up = loop.time() + LIVENESS
            while (listener.connections or len(listener.gate)) and loop.time() < give_up:
                await asyncio.sleep(0.05)
            return len(listener.connections), len(listener.gate), len(listener.gate.handshaking)
        finally:
            await listener.aclose()
            await core.aclose()

    assert run(main()) == (0, 0, 0)  # uvloop when installed, as the daemon runs
