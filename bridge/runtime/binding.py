"""Turn "address already in use" into one line naming the config key and the address.

A front end's `start` fails with the OSError of whichever bind failed, and the error names no
key. The listener that failed is found afterwards by binding each address of that section
again (nothing is bound at that point: the failing `start` closed what it had opened), so the
front ends need no error handling of their own for it.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from bridge.config import Config, ConfigError
from bridge.settings import parse_listen

# What a bind fails with when the address is taken, privileged or not this host's.
BIND_ERRORS = frozenset({errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL})

# Section → its keys holding listen addresses (a string or a list of strings).
LISTEN_KEYS: dict[str, tuple[str, ...]] = {
    "sip2": ("listen", "tls_listen"),
    "ldap": ("listen", "listen_tls"),
    "radius": ("listen",),
    "portal": ("listen",),
    "metrics": ("listen",),
}


def _addresses(settings: Any, section: str) -> list[tuple[str, str]]:
    """(dotted key, address) for every listen address of the section, in config order."""
    out = []
    for key in LISTEN_KEYS.get(section, ("listen",)):
        value = getattr(settings, key, None)
        if isinstance(value, str):
            out.append((f"{section}.{key}", value))
        elif isinstance(value, list | tuple):
            out.extend((f"{section}.{key}[{i}]", v) for i, v in enumerate(value))
    return out


def _try_bind(address: str, udp: bool) -> OSError | None:
    host, port = parse_listen(address)
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        with socket.socket(family, kind) as sock:
            if not udp:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return exc
    return None


def bind_error(config: Config, section: str, settings: Any, exc: OSError) -> ConfigError | None:
    """The one-line error for a listener of `section` that could not bind, or None when `exc`
    is not about binding (it is then raised as it is). uvloop's UDP endpoint raises an OSError
    without an errno, so the addresses are tried whatever the errno says."""
    if exc.errno is not None and exc.errno not in BIND_ERRORS:
        return None
    udp = section == "radius"
    for key, address in _addresses(settings, section):
        failed = _try_bind(address, udp)
        if failed is not None:
            reason = failed.strerror or str(failed)
            return ConfigError(f"{config.source}: {key}: cannot listen on {address}: {reason}")
    if exc.errno is None:
        return None
    reason = exc.strerror or str(exc)
    return ConfigError(f"{config.source}: {section}.listen: cannot listen: {reason}")
