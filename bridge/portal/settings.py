"""`[portal]` and `[smtp]` config: the patron PIN pages and the mail they send.

The reset link is built from `base_url` only (never from a request's Host header), so the base
URL is the one thing an attacker cannot steer. Plain `http://` is accepted only for a loopback
base URL (development, or a TLS proxy on the same host); anywhere else cookies and PINs would
cross the network in clear.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridge.settings import PolicySettings, Port, Section, is_loopback, parse_listen

Language = Literal["en", "es"]
LANGUAGES: tuple[Language, ...] = ("en", "es")


class HelpLink(Section, frozen=True):
    """A link shown in every page's footer; `lang` limits it to one language."""

    label: str
    url: str
    lang: Language | None = None


class PortalPolicy(PolicySettings, frozen=True):
    """Which patron states may still sign in to manage their PIN. An expired card or one with
    fines can still change its PIN (the patron may need it at the desk to renew or pay); a
    blocked card (e.g. reported lost) cannot. Keys left out keep these defaults."""

    allow_expired: bool = True
    allow_blocked: bool = False
    fines_limit: Annotated[float, msgspec.Meta(ge=0)] | None = None


class PortalSettings(Section, frozen=True):
    listen: str = "127.0.0.1:8080"
    base_url: str = "http://127.0.0.1:8080"
    library_name: str = "Public Library"
    logo_file: str | None = None  # served from /logo, so pages load nothing from elsewhere
    logo_alt: str = ""
    help_links: list[HelpLink] = msgspec.field(default_factory=list)
    # Where patrons change their PIN when the store cannot (shown instead of the forms).
    external_pin_url: str | None = None
    default_language: Language = "en"
    session_idle_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 15
    session_max_hours: Annotated[int, msgspec.Meta(ge=1, le=168)] = 8
    max_sessions: Annotated[int, msgspec.Meta(ge=1)] = 100_000
    reset_token_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 30
    reset_requests_per_card: Annotated[int, msgspec.Meta(ge=1)] = 3
    reset_requests_per_source: Annotated[int, msgspec.Meta(ge=1)] = 10
    reset_requests_per_email: Annotated[int, msgspec.Meta(ge=1)] = 5  # families share one
    reset_window_minutes: Annotated[int, msgspec.Meta(ge=1)] = 60
    # Dead or unknown reset links one address may open per window before it gets HTTP 429
    # (tokens have 256 bits; this keeps a scanner from costing store lookups).
    bad_links_per_source: Annotated[int, msgspec.Meta(ge=1)] = 20
    # Proxies whose X-Forwarded-For is believed (else every patron would share the proxy's
    # address, and the per-source limits would lock everyone out together).
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    tls_cert: str | None = None  # serve HTTPS directly (else put a TLS proxy in front)
    tls_key: str | None = None
    policy: PortalPolicy = PortalPolicy()
    # Denial of service (bridge.portal.guard): open connections in all and per source address
    # (a branch's public Wi-Fi sits behind one address; trusted proxies are exempt), the time a
    # whole request may take to arrive, the idle keep-alive, the largest request header, and TLS
    # handshakes in progress when the pages serve HTTPS themselves.
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024
    max_connections_per_source: Annotated[int, msgspec.Meta(ge=1)] = 128
    request_timeout: Annotated[float, msgspec.Meta(gt=0, le=600)] = 20.0
    keep_alive_timeout: Annotated[int, msgspec.Meta(ge=1, le=600)] = 5
    max_header_bytes: Annotated[int, msgspec.Meta(ge=4096, le=1 << 20)] = 16384
    max_tls_handshakes: Annotated[int, msgspec.Meta(ge=1)] = 64
    tls_handshake_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0

    @property
    def secure(self) -> bool:
        """Whether browsers reach the pages over HTTPS (cookies then carry `Secure`)."""
        return self.base_url.startswith("https://")

    def problems(self) -> list[tuple[str, str]]:
        """(key, message) for every cross-key rule this section breaks."""
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
        elif parts.query or parts.fragment:
            found.append(("base_url", "must not have a query or fragment"))
        if (self.tls_cert is None) != (self.tls_key is None):
            found.append(("tls_cert", "give both tls_cert and tls_key, or neither"))
        for proxy in self.trusted_proxies:
            if proxy != "*" and not _is_network(proxy):
                found.append(("trusted_proxies", f"{proxy!r} is not an address or network"))
        return found


def _is_network(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


class SmtpSettings(Section, frozen=True):
    host: str = "127.0.0.1"
    port: Port = 25
    security: Literal["none", "starttls", "tls"] = "none"  # tls: implicit TLS (port 465)
    username: str | None = None
    password: str | None = None
    sender: str = "library@localhost"
    ca_file: str | None = None  # a private CA for the mail server's certificate
    verify: bool = True
    timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 20.0

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if (self.username is None) != (self.password is None):
            found.append(("username", "give both username and password, or neither"))
        if self.username is not None and self.security == "none" and not is_loopback(self.host):
            found.append(("security", "a login needs starttls or tls unless the host is loopback"))
        return found
