"""`[ldap]` config: listeners, TLS, the directory's names, service accounts and limits."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bridge.settings import PolicySettings, Section


class LdapServiceAccount(Section, frozen=True):
    """A vendor's bind identity (EZproxy, OpenAthens, Apache...): what it may search and read."""

    dn: str
    password: str
    policy: PolicySettings | None = None  # None: the global [policy]
    # The subtree it may search (a DN under base_dn); None: the whole base DN.
    search_base: str | None = None
    # Attributes it may read from patron entries (names, case-insensitive); None: all of them.
    attributes: list[str] | None = None
    # May reset a patron's PIN through Password Modify without the old PIN.
    can_set_pin: bool = False


class LdapSettings(Section, frozen=True):
    listen: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1:3389"])
    # LDAPS (TLS from the first byte) listeners; need tls_certificate/tls_key.
    listen_tls: list[str] = msgspec.field(default_factory=list)
    base_dn: str = "dc=library,dc=example"
    # `barcode@<domain>` binds (AD-style clients); None: not accepted.
    bind_domain: str | None = None
    # Accept a bare barcode as a bind name (Alexandria-style clients).
    bind_barcode: bool = True
    service_accounts: list[LdapServiceAccount] = msgspec.field(default_factory=list)

    # TLS: PEM paths, relative to the config file. StartTLS is offered when both are set.
    tls_certificate: str | None = None
    tls_key: str | None = None
    tls_generate: bool = False  # write a self-signed pair at those paths when missing
    # None: required on non-loopback listeners, not on loopback ones.
    require_tls_for_bind: bool | None = None

    allow_anonymous_bind: bool = True
    anonymous_search: Literal["rootdse", "directory"] = "rootdse"
    # A search that would enumerate patrons: sizeLimitExceeded (4) or unwillingToPerform (53).
    enumeration: Literal["size_limit", "unwilling"] = "size_limit"
    # Attribute holding the ILS record id (the stable id that survives a card replacement).
    record_id_attribute: str = "uniqueIdentifier"
    # Patron categories published as groups under ou=groups (compare works for any category).
    groups: list[str] = msgspec.field(default_factory=list)
    # diagnosticMessage for a locked card (e.g. "data 775" for AD-aware clients).
    locked_message: str = "account locked"

    # Optional posix view (SSSD, nslcd): patrons as posixAccount, categories as posixGroup.
    posix: bool = False
    # uidNumber = this + the ILS record id (patrons whose record id is not a number get none).
    posix_uid_base: Annotated[int, msgspec.Meta(ge=1000, le=2**31 - 1)] = 1_000_000
    # gidNumber per patron category; categories not listed get posix_default_gid.
    posix_gids: dict[str, Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]] = msgspec.field(
        default_factory=dict
    )
    posix_default_gid: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] = 100
    # Templates; {uid} the barcode, {record_id}, {category} (lower case), {uid_number}.
    posix_home: str = "/home/patrons/{uid}"
    posix_shell: str = "/bin/sh"

    size_limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 100
    time_limit: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0
    max_connections: Annotated[int, msgspec.Meta(ge=1)] = 1024
    max_pdu: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    max_pending: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 64
    idle_timeout: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    # Denial of service (bridge.admission): open connections one source address may hold
    # (EZproxy or a campus NAT sends every patron's login from one address), TLS handshakes in
    # progress (each holds tens of KB until it ends), and deadlines a trickle cannot extend.
    max_connections_per_source: Annotated[int, msgspec.Meta(ge=1)] = 256
    max_tls_handshakes: Annotated[int, msgspec.Meta(ge=1)] = 128
    tls_handshake_timeout: Annotated[float, msgspec.Meta(gt=0, le=300)] = 10.0
    bind_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 30.0  # connect → first bind
    pdu_timeout: Annotated[float, msgspec.Meta(gt=0, le=3600)] = 10.0  # first byte → whole PDU

    def __post_init__(self) -> None:
        """Cross-key rules, so `check-config` reports them with the key's path."""
        from bridge.ldap.dn import DNError, parse
        from bridge.settings import parse_listen

        for addr in self.listen_tls:
            parse_listen(addr)  # ValueError → reported at ldap
        for key, template in (("posix_home", self.posix_home), ("posix_shell", self.posix_shell)):
            try:
                template.format(uid="u", record_id="1", category="c", uid_number=1)
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"{key}: bad template ({exc!r})") from None
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ValueError("tls_certificate and tls_key go together")
        if self.listen_tls and self.tls_certificate is None:
            raise ValueError("listen_tls needs tls_certificate and tls_key")
        try:
            if not parse(self.base_dn):
                raise ValueError("base_dn is empty")
            for account in self.service_accounts:
                parse(account.dn)
                if account.search_base is not None:
                    parse(account.search_base)
        except DNError as exc:
            raise ValueError(f"bad DN: {exc}") from None
