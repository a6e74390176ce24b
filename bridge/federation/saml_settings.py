"""`[saml]` and `[[saml.service_providers]]`: the SAML 2.0 identity provider, served on the
`[oidc]` listener (it shares that listener's sign-in page and single sign-on session).

An SP's metadata comes from a file or from an HTTPS URL (fetched, optionally checked against a
signing certificate, cached on disk and refreshed; see `saml_metadata`)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

from bridge.settings import PolicySettings, Section

ATTRIBUTES = (
    "eduPersonScopedAffiliation",
    "eduPersonTargetedID",
    "pairwise-id",  # urn:oasis:names:tc:SAML:attribute:pairwise-id (SAML V2.0 Subject ID)
    "displayName",
    "mail",
)
# Data encryption for EncryptedAssertion (the key goes by RSA-OAEP to the SP's certificate).
ENCRYPTION = ("aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc")


class ServiceProvider(Section, frozen=True):
    metadata_file: str | None = None  # the SP's metadata (entityID, ACS, certificates)
    metadata_url: str | None = None  # or fetched over HTTPS (cached in [saml] metadata_cache_dir)
    metadata_ca_file: str | None = None  # CA bundle for metadata_url (default: the system's)
    metadata_signing_cert: str | None = None  # when set, the fetched metadata must be signed
    metadata_refresh_minutes: Annotated[int, msgspec.Meta(ge=1, le=10080)] = 60
    attributes: list[str] = msgspec.field(
        default_factory=lambda: ["eduPersonScopedAffiliation", "eduPersonTargetedID"]
    )
    name_id: Literal["persistent", "transient"] = "persistent"
    # None: encrypt when the SP's metadata has an encryption key; true: always (refused
    # without one); false: never.
    encrypt_assertions: bool | None = None
    # None: the first of ENCRYPTION the SP's metadata lists, else aes256-cbc.
    encryption_method: Literal["aes256-gcm", "aes128-gcm", "aes256-cbc", "aes128-cbc"] | None = None
    policy: PolicySettings | None = None


class SamlSettings(Section, frozen=True):
    scope: str  # the security domain in eduPersonScopedAffiliation, e.g. library.example.org
    key_file: str = "var/saml-key.pem"  # created 0600 on first start, with its certificate
    cert_file: str = "var/saml-cert.pem"
    # Key rollover: the next signing certificate, published in our metadata beside the current
    # one (created on start or reload when missing) until it is moved over key_file/cert_file.
    next_key_file: str | None = None
    next_cert_file: str | None = None
    assertion_minutes: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5
    # Every SP's AuthnRequests must be signed (WantAuthnRequestsSigned in our metadata); an
    # SP whose metadata says AuthnRequestsSigned="true" must sign in any case.
    want_signed_requests: bool = False
    metadata_cache_dir: str = "var/saml-metadata"  # last good copy of each metadata_url
    service_providers: list[ServiceProvider] = msgspec.field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for i, sp in enumerate(self.service_providers):
            where = f"service_providers[{i}]"
            unknown = [a for a in sp.attributes if a not in ATTRIBUTES]
            if unknown:
                found.append((f"{where}.attributes", f"choose from {', '.join(ATTRIBUTES)}"))
            if (sp.metadata_file is None) == (sp.metadata_url is None):
                found.append((f"{where}.metadata_file", "give metadata_file or metadata_url"))
            if sp.metadata_url is not None:
                parts = urlsplit(sp.metadata_url)
                if parts.scheme != "https" or not parts.hostname:
                    found.append((f"{where}.metadata_url", "must be an https:// URL"))
        if (self.next_key_file is None) != (self.next_cert_file is None):
            found.append(("next_key_file", "give both next_key_file and next_cert_file"))
        if not self.scope or "@" in self.scope:
            found.append(("scope", "a domain such as library.example.org"))
        return found
