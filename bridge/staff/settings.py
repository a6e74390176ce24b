"""`[staff]` config: the staff desk's listener, sign-in, branches and what counts as a minor.

Like `[portal]`, plain `http://` is accepted only for a loopback base URL: staff passwords and
patrons' new PINs cross this connection.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridge.portal.settings import Language
from bridge.settings import Section, is_loopback, parse_listen

RoleName = Literal["desk", "supervisor", "admin"]


class StaffDirectory(Section, frozen=True):
    """`[staff.ldap]`: sign staff in against the library's directory (OpenLDAP; Active
    Directory's shape, not run here). The user's DN comes from `user_dn` (`{name}` is the
    sign-in name, restricted to a-z 0-9 . _ -) or, search-then-bind, from one search under
    `user_base` with `user_filter` (e.g. `(uid={user})`, `(sAMAccountName={user})`), bound as
    `bind_dn` with the password in `bind_password_file`. The role from the groups: the user
    entry's `member_attribute` (`memberOf`) when set, else the groups (groupOfNames/group with
    `member`) under `group_base` that list the DN; mapped by `groups` (the highest role wins;
    no mapped group, no access)."""

    url: str
    user_dn: str | None = None
    group_base: str = ""
    user_base: str | None = None
    user_filter: str | None = None
    bind_dn: str | None = None
    bind_password_file: str | None = None
    member_attribute: str | None = None
    start_tls: bool = False
    ca_file: str | None = None
    group_filter: str = "(|(objectClass=groupOfNames)(objectClass=group))"
    groups: dict[str, RoleName] = msgspec.field(default_factory=dict)
    timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 10.0


class StaffSettings(Section, frozen=True):
    listen: str = "127.0.0.1:8081"
    base_url: str = "http://127.0.0.1:8081"
    # "local": accounts made with `patron-bridge staff add`, kept in `state_path`.
    # "ldap": bind to the directory in `[staff.ldap]`, role from its groups.
    auth: Literal["local", "ldap"] = "local"
    ldap: StaffDirectory | None = None
    # The bridge's own SQLite file: staff accounts and the per-card decision history.
    state_path: str = "staff.db"
    library_name: str = "Public Library"
    branches: list[str] = msgspec.field(default_factory=lambda: ["Main"])
    # Patron categories whose holders are minors (reset with the card alone, no photo ID).
    minor_categories: list[str] = msgspec.field(default_factory=list)
    default_language: Language = "en"
    session_idle_minutes: Annotated[int, msgspec.Meta(ge=1, le=120)] = 10  # shared desk PCs
    session_max_hours: Annotated[int, msgspec.Meta(ge=1, le=24)] = 10
    password_min_length: Annotated[int, msgspec.Meta(ge=8, le=128)] = 12
    history_days: Annotated[int, msgspec.Meta(ge=1, le=3650)] = 90
    history_shown: Annotated[int, msgspec.Meta(ge=1, le=200)] = 20
    search_results: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def secure(self) -> bool:
        return self.base_url.startswith("https://")

    def is_minor(self, category: str) -> bool:
        wanted = category.strip().casefold()
        return any(wanted == c.strip().casefold() for c in self.minor_categories)

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        try:
            parse_listen(self.listen)
        except ValueError as exc:
            found.append(("listen", str(exc)))
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(("base_url", "must be an absolute http(s) URL"))
        elif parts.scheme == "http" and not is_loopback(parts.hostname):
            found.append(("base_url", "must use https:// unless the host is loopback"))
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append(("tls_cert", "give both tls_cert and tls_key, or neither"))
        if self.auth == "ldap":
            found.extend(self._directory_problems())
        if not self.branches or any(not b.strip() or len(b) > 64 for b in self.branches):
            found.append(("branches", "give at least one branch name of 1-64 characters"))
        return found

    def _directory_problems(self) -> list[tuple[str, str]]:
        d = self.ldap
        if d is None:
            return [("ldap", 'auth = "ldap" needs a [staff.ldap] section')]
        found: list[tuple[str, str]] = []
        parts = urlsplit(d.url)
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname:
            found.append(("ldap.url", "must be an ldap:// or ldaps:// URL"))
        elif parts.scheme == "ldap" and not d.start_tls and not is_loopback(parts.hostname):
            found.append(("ldap.url", "use ldaps:// or start_tls unless the host is loopback"))
        if d.user_filter is not None:
            if d.user_dn is not None:
                found.append(("ldap.user_dn", "give user_dn or user_filter, not both"))
            if "{name}" not in d.user_filter and "{user}" not in d.user_filter:
                found.append(("ldap.user_filter", "must contain {user} (or {name})"))
            if not (d.user_filter.startswith("(") and d.user_filter.endswith(")")):
                found.append(("ldap.user_filter", "must be an LDAP filter in parentheses"))
            if not d.user_base:
                found.append(("ldap.user_base", "user_filter needs user_base"))
            if (d.bind_dn is None) != (d.bind_password_file is None):
                found.append(("ldap.bind_dn", "give bind_dn and bind_password_file together"))
        elif d.user_dn is None or "{name}" not in d.user_dn:
            found.append(("ldap.user_dn", "must contain {name} (or use user_filter)"))
        if d.member_attribute is None and not d.group_base:
            found.append(("ldap.group_base", "give group_base, or member_attribute"))
        if not d.groups:
            found.append(("ldap.groups", "map at least one group DN to a role"))
        return found
