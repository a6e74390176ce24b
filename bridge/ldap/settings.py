"""`[ldap]` config: listeners, base DN and service accounts."""

from __future__ import annotations

import msgspec

from bridge.settings import PolicySettings, Section


class LdapServiceAccount(Section, frozen=True):
    dn: str
    password: str
    policy: PolicySettings | None = None  # None: the global [policy]


class LdapSettings(Section, frozen=True):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:3389"])
    base_dn: str = "dc=library,dc=example"
    service_accounts: list[LdapServiceAccount] = msgspec.field(default_factory=list)
