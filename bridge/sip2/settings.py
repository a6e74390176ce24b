"""`[sip2]` config: listeners, limits, TLS and the SIP accounts vendors log in with.

Every per-client behaviour that real SIP2 clients disagree about is an account option rather
than a global switch, because one library serves a self-check that wants CRLF and cp850 next to
a PC-booking system that wants UTF-8 and a bare CR.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

import msgspec

from bridge.settings import PolicySettings, Section, parse_listen

Seconds = Annotated[float, msgspec.Meta(ge=0)]
Limit = Annotated[int, msgspec.Meta(ge=0, le=9999)]


class Sip2Account(Section, frozen=True):
    """One SIP login (93 CN/CO) and how that client likes to be answered."""

    login: str
    password: str
    institution: str = ""  # AO we answer with; empty: echo the request's AO
    networks: list[str] = msgspec.field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    policy: PolicySettings | None = None  # None: the global [policy]
    # wire dialect
    charset: Literal["cp850", "utf-8", "ascii"] = "cp850"
    terminator: Literal["CR", "CRLF"] = "CR"
    error_detection: Literal["auto", "required"] = "auto"
    # answers
    wrong_pin_as_unknown: bool = False  # hide that a card exists when its PIN is wrong
    policy_refusal_cqn: bool = False  # CQN (not CQY + flags) when [policy] refuses the patron
    currency: str = "USD"
    library_name: str = ""
    hold_items_limit: Limit | None = None
    overdue_items_limit: Limit | None = None
    charged_items_limit: Limit | None = None
    # timing: self-checks sit connected for days sending 99 every few minutes
    idle_timeout: Seconds = 900.0  # 0: never

    def __post_init__(self) -> None:
        if not self.login or "|" in self.login:
            raise ValueError("login must be non-empty and contain no '|'")
        if not self.password:
            raise ValueError("password must not be empty")
        for net in self.networks:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"bad network {net!r}") from None
        if len(self.currency) != 3:
            raise ValueError("currency must be a 3-letter code")


class Sip2Settings(Section, frozen=True):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:6001"])
    tls_listen: list[str] = msgspec.field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    accounts: list[Sip2Account] = msgspec.field(default_factory=list)
    sc_status_before_login: bool = False  # answer 99 before 93 (Relais-type clients)
    login_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 3
    login_timeout: Seconds = 30.0  # 0: never
    max_message_length: Annotated[int, msgspec.Meta(ge=256, le=1 << 20)] = 4096
    max_connections_per_source: Annotated[int, msgspec.Meta(ge=1)] = 64
    # Denial of service (bridge.admission): open connections in all, TLS handshakes in progress,
    # and deadlines a trickle cannot extend (0: none).
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 2048
    max_tls_handshakes: Annotated[int, msgspec.Meta(ge=1)] = 64
    tls_handshake_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    message_timeout: Seconds = 30.0  # first byte of a message → its terminator
    health_cache_seconds: Seconds = 5.0  # how long a 98's online status is reused
    # circulation pass-through: the configured store's plugin name (e.g. "sip2"); "" = refuse
    upstream: str = ""

    def __post_init__(self) -> None:
        if self.tls_listen and (not self.tls_cert or not self.tls_key):
            raise ValueError("tls_listen needs tls_cert and tls_key")
        for addr in self.tls_listen:
            parse_listen(addr)
        logins = [a.login for a in self.accounts]
        if len(set(logins)) != len(logins):
            raise ValueError("two accounts share a login")
