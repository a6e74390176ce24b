"""`[saml]` and `[[saml.service_providers]]`: the SAML 2.0 identity provider, served on the
`[oidc]` listener (it shares that listener's sign-in page and single sign-on session)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bridge.settings import PolicySettings, Section

ATTRIBUTES = ("eduPersonScopedAffiliation", "eduPersonTargetedID", "displayName", "mail")


class ServiceProvider(Section, frozen=True):
    metadata_file: str  # the SP's metadata (entityID, ACS, certificate)
    attributes: list[str] = msgspec.field(
        default_factory=lambda: ["eduPersonScopedAffiliation", "eduPersonTargetedID"]
    )
    name_id: Literal["persistent", "transient"] = "persistent"
    encrypt: bool = False
    policy: PolicySettings | None = None


class SamlSettings(Section, frozen=True):
    scope: str  # the security domain in eduPersonScopedAffiliation, e.g. library.example.org
    key_file: str = "var/saml-key.pem"  # created 0600 on first start, with its certificate
    cert_file: str = "var/saml-cert.pem"
    assertion_minutes: Annotated[int, msgspec.Meta(ge=1, le=60)] = 5
    service_providers: list[ServiceProvider] = msgspec.field(default_factory=list)

    def problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for i, sp in enumerate(self.service_providers):
            unknown = [a for a in sp.attributes if a not in ATTRIBUTES]
            if unknown:
                found.append(
                    (f"service_providers[{i}].attributes", f"choose from {', '.join(ATTRIBUTES)}")
                )
        if not self.scope or "@" in self.scope:
            found.append(("scope", "a domain such as library.example.org"))
        return found
