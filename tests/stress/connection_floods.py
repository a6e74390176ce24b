"""Clients for the connection-level floods of issue 20: many loopback source addresses, slow or
idle connections, and checks that a legitimate client of every front end is still served.

Sizes follow `STRESS`: `STRESS=full` (`make stress`) uses the issue's numbers; otherwise a short
version with the same assertions runs in `make test`. Loopback only: other 127.x addresses are
the attackers' "sources"."""

from __future__ import annotations

import itertools
import json
import os
import resource
import selectors
import socket
import time
from collections import defaultdict
from datetime import datetime
from typing import Any

import httpx
from ldap3 import Connection, Server, Tls

from bridge.radius import packet as rp
from bridge.ratelog import REFUSAL_LOG_INTERVAL
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.radius.udp import Nas
from tests.sip2.wire import login_msg

FULL = os.environ.get("STRESS", "") == "full"
SOURCES = [f"127.0.0.{i}" for i in range(2, 255)]  # 127.0.0.1 is the legitimate client
LIVENESS = 90.0  # seconds for every deadline-driven close to have happened (liveness only)
BASE_DN = "dc=library,dc=example"
RADIUS_SECRET = "testing123"


def size(full: int, short: int) -> int:
    return full if FULL else short


def sections(*, ldap: str = "", portal: str = "") -> str:
    """Every front end, so each can be shown still serving while one is flooded."""
    return f"""
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"

[ldap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
tls_certificate = "ldap.crt"
tls_key = "ldap.key"
tls_generate = true
{ldap}

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "loopback"
network = "127.0.0.1/32"
secret = "{RADIUS_SECRET}"

[portal]
listen = "127.0.0.1:0"
{portal}
"""


def raise_own_file_limit(need: int) -> int:
    """The test process holds every flood socket: raise its own soft limit (to the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need + 256
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def open_many(address: tuple[str, int], count: int, first: bytes) -> list[socket.socket]:
    """`count` connections from the other loopback sources in turn, each sending `first`.
    Connections the server refuses at once are kept too (they read as closed)."""
    socks = []
    for i in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((SOURCES[i % len(SOURCES)], 0))
        sock.settimeout(10)
        try:
            sock.connect(address)
            if first:
                sock.sendall(first)
        except OSError:
            pass  # refused or reset already: the server decided at once
        sock.setblocking(False)
        socks.append(sock)
    return socks


def close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


def trickle_until_closed(socks: list[socket.socket], byte: bytes, every: float = 1.0) -> int:
    """Send one octet to every open connection each `every` seconds (the selector's timeout
    paces it) until the server has closed them all, or LIVENESS; how many are still open."""
    selector = selectors.DefaultSelector()
    open_: set[socket.socket] = set()
    for sock in socks:
        try:
            selector.register(sock, selectors.EVENT_READ)
            open_.add(sock)
        except (ValueError, OSError):
            pass
    give_up = time.monotonic() + LIVENESS
    next_trickle = 0.0

    def gone(sock: socket.socket) -> None:
        selector.unregister(sock)
        open_.discard(sock)

    while open_ and time.monotonic() < give_up:
        for key, _ in selector.select(timeout=every):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                if sock.recv(65536) == b"":
                    gone(sock)
            except BlockingIOError:
                pass
            except OSError:
                gone(sock)
        if time.monotonic() >= next_trickle:
            next_trickle = time.monotonic() + every
            for sock in list(open_):
                try:
                    sock.send(byte)
                except BlockingIOError:
                    pass
                except OSError:
                    gone(sock)
    selector.close()
    return len(open_)


# -- the legitimate clients -----------------------------------------------------------------


def ldap_bind(d: Daemon, *, tls: bool = False) -> bool:
    host, port = d.address("ldap", 1 if tls else 0)
    ca = Tls(ca_certs_file=str(d.dir / "ldap.crt"))
    server = Server(host, port, use_ssl=tls, tls=ca, get_info="NO_INFO", connect_timeout=30)
    user = f"uid={DEMO['active']},ou=patrons,{BASE_DN}"
    conn = Connection(server, user, DEMO_PIN, raise_exceptions=False, receive_timeout=30)
    ok = bool(conn.bind())
    conn.unbind()
    return ok


def sip2_login(d: Daemon) -> bool:
    with socket.create_connection(d.address("sip2"), timeout=30) as sock:
        sock.sendall(login_msg() + b"\r")
        return sock.recv(64) == b"941\r"


def page(d: Daemon) -> int:
    host, port = d.address("portal")
    return httpx.get(f"http://{host}:{port}/login", timeout=30).status_code


def radius_accepts(d: Daemon) -> bool:
    nas = Nas(d.address("radius"), RADIUS_SECRET.encode())
    try:
        reply = nas.ask(nas.access(DEMO["active"].encode(), DEMO_PIN.encode()))
    finally:
        nas.close()
    return reply.code == rp.ACCESS_ACCEPT


def everyone_served(d: Daemon) -> dict[str, Any]:
    """One legitimate request to every front end, from 127.0.0.1."""
    return {
        "ldap": ldap_bind(d),
        "ldaps": ldap_bind(d, tls=True),
        "sip2": sip2_login(d),
        "pages": page(d),
        "radius": radius_accepts(d),
    }


SERVED = {"ldap": True, "ldaps": True, "sip2": True, "pages": 200, "radius": True}


# -- the daemon's log -------------------------------------------------------------------------


def log_lines(d: Daemon) -> list[dict[str, Any]]:
    return [json.loads(x) for x in d.stderr_path.read_text().splitlines() if x.startswith("{")]


def refusals(d: Daemon) -> list[dict[str, Any]]:
    return [x for x in log_lines(d) if str(x.get("event", "")).endswith("_connection_refused")]


def assert_refusals_rate_limited(d: Daemon) -> None:
    """At most one line per (listener, reason, source) per interval."""
    times: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)
    for line in refusals(d):
        key = (line["event"], line["reason"], line["source"])
        times[key].append(datetime.fromisoformat(line["timestamp"].rstrip("Z")))
    for key, stamps in times.items():
        stamps.sort()
        for a, b in itertools.pairwise(stamps):
            gap = (b - a).total_seconds()
            assert gap >= REFUSAL_LOG_INTERVAL - 0.5, f"{key} logged {gap:.2f} s apart"


def assert_never_out_of_descriptors(d: Daemon) -> None:
    text = d.stderr_path.read_text()
    assert "Too many open files" not in text and "out of system resource" not in text
