"""Which NAS is asking: the client table, plus the small time-based helpers the server needs.

Pure: addresses and `now` in, values out. A source address is matched against every configured
network and the most specific one wins (FreeRADIUS's rule: "the entry from the smallest possible
network"), so a /32 for one controller can carry its own secret inside a /16 for the rest.
Results are memoised per address (bounded), because parsing an address costs more than the rest
of the lookup and a NAS sends many packets.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from bridge.core.patron import ClientPolicy
from bridge.radius.packet import SharedSecret
from bridge.ratelog import LogLimiter

__all__ = ["Client", "ClientTable", "HealthCache", "LogLimiter"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    network: IPNetwork
    secret: SharedSecret = field(repr=False)
    require_message_authenticator: bool | Literal["auto"]
    limit_proxy_state: bool
    policy: ClientPolicy
    accept_attributes: bytes = b""  # pre-encoded, for every Access-Accept
    category_attributes: dict[str, bytes] = field(default_factory=dict)

    def attributes_for(self, category: str) -> bytes:
        return self.category_attributes.get(category, self.accept_attributes)


class ClientTable:
    def __init__(self, clients: Iterable[Client], memo_size: int = 4096) -> None:
        # Longest prefix first; IPv4 and IPv6 never match each other.
        self._clients = sorted(clients, key=lambda c: c.network.prefixlen, reverse=True)
        self._memo: dict[str, Client | None] = {}
        self._memo_size = memo_size

    def __len__(self) -> int:
        return len(self._clients)

    def match(self, address: str) -> Client | None:
        try:
            return self._memo[address]
        except KeyError:
            pass
        found = self._lookup(address)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()
        self._memo[address] = found
        return found

    def _lookup(self, address: str) -> Client | None:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports ::ffff:a.b.c.d
        for client in self._clients:
            if ip.version == client.network.version and ip in client.network:
                return client
        return None


class HealthCache:
    """The store's health, remembered `ttl` seconds so Status-Server never hits the store per
    packet (controllers probe every few seconds, and RFC 5997 asks servers to rate-limit)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._ok: bool | None = None
        self._at = 0.0

    def get(self, now: float) -> bool | None:
        """The remembered answer, or None when it is missing or stale."""
        if self._ok is None or now - self._at >= self.ttl:
            return None
        return self._ok

    def put(self, ok: bool, now: float) -> None:
        self._ok = ok
        self._at = now


class AuthenticatorPolicy:
    """Whether an Access-Request without Message-Authenticator is dropped (BlastRADIUS).

    `true`: always; `false`: never; `"auto"`: once that NAS has sent one, as FreeRADIUS 3.2.5+
    does: a NAS that signs its requests is expected to keep signing them, so a later unsigned
    request from its address is dropped. Learned per (client, source address), so one
    `network` client can cover NASes of both kinds; kept in memory only (relearned after a
    restart, like FreeRADIUS). Only packets whose Message-Authenticator verified with the
    client's secret teach it, so the table holds real NASes only; it stops learning when full
    rather than forgetting (forgetting would lift the requirement)."""

    def __init__(self, max_entries: int = 65536) -> None:
        self.max_entries = max_entries
        self._signed: set[tuple[str, str]] = set()

    def learn(self, client: str, source: str) -> None:
        if len(self._signed) < self.max_entries:
            self._signed.add((client, source))

    def required(self, client: Client, source: str) -> bool:
        mode = client.require_message_authenticator
        if mode == "auto":
            return (client.name, source) in self._signed
        return mode
