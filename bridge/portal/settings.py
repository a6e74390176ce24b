"""`[portal]` and `[smtp]` config: the patron PIN pages and the mail they send."""

from __future__ import annotations

from bridge.settings import Section


class PortalSettings(Section, frozen=True):
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"


class SmtpSettings(Section, frozen=True):
    host: str = "127.0.0.1"
    port: int = 25
