"""`[sip2]` config: listeners and SIP accounts."""

from __future__ import annotations

import msgspec

from bridge.settings import PolicySettings, Section


class Sip2Account(Section, frozen=True):
    login: str
    password: str
    institution: str = ""
    networks: list[str] = msgspec.field(default_factory=lambda: ["0.0.0.0/0", "::/0"])
    policy: PolicySettings | None = None  # None: the global [policy]


class Sip2Settings(Section, frozen=True):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:6001"])
    accounts: list[Sip2Account] = msgspec.field(default_factory=list)
