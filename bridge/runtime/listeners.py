"""The listen addresses every worker must share, with port 0 turned into one real port.

A worker binds its listeners with SO_REUSEPORT; for the workers to share a listener they must
bind the same port. A config that asks for port 0 (any free port: tests, trials) would give each
worker a port of its own, so the supervisor binds a placeholder socket with SO_REUSEPORT first,
reads the port the kernel chose, and hands every worker the same concrete address. The
placeholders are closed once every worker listens (a bound UDP placeholder would otherwise take
its share of the datagrams).
"""

from __future__ import annotations

import ctypes
import socket
import struct
from typing import Any

import msgspec

from bridge.config import Config
from bridge.radius import steering
from bridge.settings import parse_listen

# `--listen-map` key suffix: "radius.listen.0.fd": the descriptor of this worker's socket for
# that address, bound by the supervisor (`radius_sockets`) and inherited.
FD_SUFFIX = ".fd"

SO_ATTACH_REUSEPORT_CBPF = getattr(socket, "SO_ATTACH_REUSEPORT_CBPF", 51)  # Linux 4.5

# (section, key, transport); a str key holds one address, a list key several.
LISTEN_KEYS: tuple[tuple[str, str, int], ...] = (
    ("sip2", "listen", socket.SOCK_STREAM),
    ("sip2", "tls_listen", socket.SOCK_STREAM),
    ("ldap", "listen", socket.SOCK_STREAM),
    ("ldap", "listen_tls", socket.SOCK_STREAM),
    ("radius", "listen", socket.SOCK_DGRAM),
    ("portal", "listen", socket.SOCK_STREAM),
    ("staff", "listen", socket.SOCK_STREAM),
    ("oidc", "listen", socket.SOCK_STREAM),
)
# Not shared: `[metrics] listen` is bound by worker 0 alone, which answers a scrape for every
# worker (bridge.metrics.server), so a scrape never lands on one worker's numbers by chance.


def _addresses(config: Config) -> list[tuple[str, int, str, int]]:
    """(`section.key`, index in it, address, transport) for every configured address."""
    found: list[tuple[str, int, str, int]] = []
    for section, key, kind in LISTEN_KEYS:
        settings = getattr(config, section)
        if settings is None:
            continue
        value = getattr(settings, key)
        for i, address in enumerate([value] if isinstance(value, str) else value):
            found.append((f"{section}.{key}", i, address, kind))
    return found


def _format(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reserve(
    config: Config, skip: tuple[str, ...] = ()
) -> tuple[dict[str, str], list[socket.socket]]:
    """Concrete addresses for every `HOST:0` listener (`"sip2.listen.0": "127.0.0.1:40123"`),
    and the placeholder sockets holding those ports (close them when the workers listen).
    `skip`: listeners (`"radius.listen"`) whose sockets the supervisor binds itself."""
    mapping: dict[str, str] = {}
    held: list[socket.socket] = []
    try:
        for where, i, address, kind in _addresses(config):
            host, port = parse_listen(address)
            if port != 0 or where in skip:
                continue
            info = socket.getaddrinfo(host, 0, type=kind, flags=socket.AI_PASSIVE)[0]
            sock = socket.socket(info[0], kind)
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(info[4])
            mapping[f"{where}.{i}"] = _format(host, sock.getsockname()[1])
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return mapping, held


def inherited(mapping: dict[str, str]) -> dict[int, int]:
    """The inherited RADIUS sockets in a worker's `--listen-map`: listen index -> descriptor."""
    prefix = "radius.listen."
    return {
        int(key[len(prefix) : -len(FD_SUFFIX)]): int(value)
        for key, value in mapping.items()
        if key.startswith(prefix) and key.endswith(FD_SUFFIX)
    }


def apply(config: Config, mapping: dict[str, str]) -> Config:
    """The config with the reserved addresses in place of `HOST:0`."""
    if not mapping:
        return config
    sections: dict[str, Any] = {}
    for section, key, _kind in LISTEN_KEYS:
        settings = sections.get(section, getattr(config, section))
        if settings is None:
            continue
        value = getattr(settings, key)
        if isinstance(value, str):
            new: Any = mapping.get(f"{section}.{key}.0", value)
        else:
            new = [mapping.get(f"{section}.{key}.{i}", v) for i, v in enumerate(value)]
        if new != value:
            sections[section] = msgspec.structs.replace(settings, **{key: new})
    return msgspec.structs.replace(config, **sections)


def steer(sock: socket.socket, workers: int) -> None:
    """Attach `bridge.radius.steering`'s program to the SO_REUSEPORT group `sock` is in (it
    picks a socket by its index in the order they were bound). OSError where the kernel has no
    SO_ATTACH_REUSEPORT_CBPF."""
    code = steering.program(workers)
    filters = ctypes.create_string_buffer(steering.encode(code))
    fprog = struct.pack("@HP", len(code), ctypes.addressof(filters))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def radius_sockets(
    config: Config, workers: int
) -> tuple[dict[str, str], list[list[socket.socket]]]:
    """The RADIUS listeners' sockets for `workers` workers, bound here in worker order and kept
    open by the supervisor for its whole life (so a restarted worker gets its predecessor's
    socket and the order the steering program counts in never changes), steered: a request's
    copies and an EAP conversation's rounds reach one worker whatever port they come from.

    Returns the concrete addresses for `radius.listen.I` given as port 0 and, per address, the
    sockets (index = worker). A kernel without SO_ATTACH_REUSEPORT_CBPF refuses the start
    (OSError): silently spreading by port would re-decide retransmissions behind a balancer."""
    mapping: dict[str, str] = {}
    groups: list[list[socket.socket]] = []
    radius = config.radius
    if radius is None:
        return mapping, groups
    try:
        for i, address in enumerate(radius.listen):
            host, port = parse_listen(address)
            family, *_, bind_to = socket.getaddrinfo(
                host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )[0]
            group: list[socket.socket] = []
            groups.append(group)
            for _ in range(workers):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                group.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(bind_to)
                bind_to = sock.getsockname()  # port 0: the first chose it; the others join it
            if port == 0:
                mapping[f"radius.listen.{i}"] = _format(host, group[0].getsockname()[1])
            steer(group[0], workers)
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return mapping, groups
