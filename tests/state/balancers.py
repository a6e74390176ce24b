"""Load-balancer software in front of bridge daemons, run for real: Debian's HAProxy for the TCP
front ends (LDAP, SIP2) and nginx's stream module for RADIUS over UDP. Each runs in the
foreground from a config written into the test's directory, on free loopback ports; the configs
are the ones docs/scale-out.md shows.

Readiness is an event (HAProxy: the frontend port accepts; nginx: its "start worker process"
line), checked at short spaced intervals with a deadline, never a fixed sleep."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require_tool

NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
Address = tuple[str, int]


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def haproxy_config(frontends: dict[str, tuple[int, Sequence[Address]]]) -> str:
    """TCP mode, round robin, one frontend per protocol: `name: (listen port, backends)`."""
    parts = [
        "global\n    maxconn 1000\n",
        "defaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 60s\n    timeout server 60s\n",
    ]
    for name, (port, backends) in frontends.items():
        servers = "".join(
            f"    server {name}{i} {host}:{bport}\n" for i, (host, bport) in enumerate(backends)
        )
        parts.append(
            f"frontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}_bridges\n"
            f"backend {name}_bridges\n    balance roundrobin\n{servers}"
        )
    return "\n".join(parts)


def nginx_config(
    directory: Path, port: int, backends: Sequence[Address], *, affinity: bool = False
) -> str:
    """nginx's stream module as a UDP balancer for RADIUS: one response per request closes the
    session (`proxy_responses 1`), so the next request is balanced again. `affinity`: choose
    the daemon by a hash of the source address and port, so a NAS's retransmission reaches the
    daemon whose duplicate cache holds the first copy."""
    servers = "".join(f"        server {host}:{bport};\n" for host, bport in backends)
    if affinity:
        servers = "        hash $remote_addr$remote_port;\n" + servers
    return f"""load_module {NGINX_STREAM_MODULE};
daemon off;
worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log notice;
events {{
    worker_connections 256;
}}
stream {{
    upstream radius_bridges {{
{servers}    }}
    server {{
        listen 127.0.0.1:{port} udp;
        proxy_pass radius_bridges;
        proxy_responses 1;
        proxy_timeout 10s;
    }}
}}
"""


def _wait(ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 20
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start (see its log in the test directory)")
        time.sleep(0.05)


def _accepts(port: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    return check


@contextmanager
def _running(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def haproxy(
    directory: Path, frontends: dict[str, Sequence[Address]]
) -> Iterator[dict[str, Address]]:
    """HAProxy balancing each named protocol over `backends`; yields each frontend's address."""
    binary = require_tool("haproxy")
    ports = {name: (free_port(), backends) for name, backends in frontends.items()}
    config = directory / "haproxy.cfg"
    config.write_text(haproxy_config(ports))
    checked = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with _running([binary, "-db", "-f", str(config)], directory / "haproxy.log") as proc:
        for port, _ in ports.values():
            _wait(_accepts(port), proc, "haproxy")
        yield {name: ("127.0.0.1", port) for name, (port, _) in ports.items()}


@contextmanager
def nginx_udp(
    directory: Path, backends: Sequence[Address], *, affinity: bool = False
) -> Iterator[Address]:
    """nginx (stream module) balancing RADIUS datagrams over `backends`."""
    binary = require_tool("nginx")
    if not NGINX_STREAM_MODULE.exists():
        require_tool("ngx_stream_module.so (libnginx-mod-stream)")
    port = free_port(socket.SOCK_DGRAM)
    config = directory / "nginx.conf"
    config.write_text(nginx_config(directory, port, backends, affinity=affinity))
    argv = [binary, "-p", str(directory), "-e", str(directory / "nginx-error.log"), "-c"]
    checked = subprocess.run([*argv, str(config), "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    error_log = directory / "nginx-error.log"

    def started() -> bool:
        return error_log.exists() and "start worker process" in error_log.read_text()

    with _running([*argv, str(config)], directory / "nginx.log") as proc:
        _wait(started, proc, "nginx")
        yield ("127.0.0.1", port)
