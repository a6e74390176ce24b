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


class StaffSettings(Section, frozen=True):
    listen: str = "127.0.0.1:8081"
    base_url: str = "http://127.0.0.1:8081"
    # "local": accounts made with `patron-bridge staff add`, kept in `state_path`.
    auth: Literal["local"] = "local"
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
        if not self.branches or any(not b.strip() or len(b) > 64 for b in self.branches):
            found.append(("branches", "give at least one branch name of 1-64 characters"))
        return found
