"""`[oidc]` and `[[oidc.clients]]`: the OpenID Connect provider and the relying parties it serves.

The issuer URL is the one thing every token and every redirect is built from (never a request's
Host header). A client without `secret` is public (a browser or mobile app): it must use PKCE
with S256. Each client carries the same patron policy table as every other front end's clients.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridge.settings import PolicySettings, Section, is_loopback, parse_listen

SCOPES = ("openid", "profile", "email", "library")


class OidcClient(Section, frozen=True):
    client_id: str
    redirect_uris: list[str]
    secret: str | None = None  # none: a public client (PKCE S256 required)
    name: str = ""
    scopes: list[str] = msgspec.field(default_factory=lambda: ["openid", "profile", "email"])
    post_logout_redirect_uris: list[str] = msgspec.field(default_factory=list)
    # pairwise: HMAC of the record id per sector; public: one HMAC for every client;
    # barcode: the card number itself (only for a client that must match existing accounts).
    subject: Literal["pairwise", "public", "barcode"] = "pairwise"
    sector: str | None = None  # default: the host of the first redirect URI
    policy: PolicySettings | None = None
    # Ask the patron before releasing claims to this client (remembered `consent_days`).
    consent: bool = False

    @property
    def public(self) -> bool:
        return self.secret is None

    @property
    def sector_id(self) -> str:
        return self.sector or (urlsplit(self.redirect_uris[0]).hostname or "")


class OidcSettings(Section, frozen=True):
    issuer: str
    listen: str = "127.0.0.1:8081"
    keys_file: str = "var/oidc-keys.json"  # signing keys, created 0600 on first start
    pairwise_key_file: str = "var/oidc-pairwise.key"  # per-install secret for `sub`
    sso_minutes: Annotated[int, msgspec.Meta(ge=1, le=10080)] = 480
    code_seconds: Annotated[int, msgspec.Meta(ge=10, le=600)] = 60
    id_token_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 60
    access_token_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 60
    sign_in_minutes: Annotated[int, msgspec.Meta(ge=1, le=120)] = 15  # an unfinished sign-in
    consent_days: Annotated[int, msgspec.Meta(ge=1, le=730)] = 180  # a consent is remembered
    clients: list[OidcClient] = msgspec.field(default_factory=list)

    def client(self, client_id: str) -> OidcClient | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        try:
            parse_listen(self.listen)
        except ValueError as exc:
            found.append(("listen", str(exc)))
        parts = urlsplit(self.issuer)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            found.append(("issuer", "must be an absolute http(s) URL"))
        elif parts.scheme == "http" and not is_loopback(parts.hostname):
            found.append(("issuer", "must use https:// unless the host is loopback"))
        elif parts.query or parts.fragment or self.issuer.endswith("/"):
            found.append(("issuer", "must not end in / or have a query or fragment"))
        seen: set[str] = set()
        for i, c in enumerate(self.clients):
            where = f"clients[{i}]"
            if c.client_id in seen:
                found.append((f"{where}.client_id", f"{c.client_id!r} is given twice"))
            seen.add(c.client_id)
            if not c.redirect_uris:
                found.append((f"{where}.redirect_uris", "give at least one"))
            for uri in [*c.redirect_uris, *c.post_logout_redirect_uris]:
                p = urlsplit(uri)
                if p.scheme not in ("http", "https") or not p.hostname or p.fragment:
                    found.append((f"{where}.redirect_uris", f"{uri!r} is not an absolute URL"))
            unknown = [s for s in c.scopes if s not in SCOPES]
            if unknown or "openid" not in c.scopes:
                found.append((f"{where}.scopes", f"must include openid, from {', '.join(SCOPES)}"))
        return found
