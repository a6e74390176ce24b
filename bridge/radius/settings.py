"""`[radius]` config: listeners and clients (NAS)."""

from __future__ import annotations

import msgspec

from bridge.settings import PolicySettings, Section


class RadiusClient(Section, frozen=True):
    name: str
    network: str
    secret: str
    require_message_authenticator: bool = True
    policy: PolicySettings | None = None  # None: the global [policy]


class RadiusSettings(Section, frozen=True):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:1812"])
    clients: list[RadiusClient] = msgspec.field(default_factory=list)
