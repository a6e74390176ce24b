"""Everything the OpenID Connect endpoints share: settings, keys, grants, the sign-in pages.

The sign-in form is the PIN pages' own: a `Portal` built from `[portal]` (or its defaults)
supplies the templates, languages, CSRF tokens and the session store, which here is the single
sign-on session (its own lifetime, `sso_minutes`, and its own cookie name, so it never collides
with the PIN pages' session on a shared host name). A PIN change, reset, block or lock anywhere
ends the patron's SSO sessions too, through the authenticator's `on_invalidate`. Codes, tokens,
pending sign-ins, consents (and, with shared state, the SSO sessions) live in `state`.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from bridge.core.patron import ClientPolicy, Decision, Outcome, Patron
from bridge.federation.grants import Grants
from bridge.federation.keys import KeyRing
from bridge.federation.settings import OidcClient, OidcSettings
from bridge.federation.state import FederationState
from bridge.portal.sessions import SessionStore
from bridge.portal.state import Portal
from bridge.settings import PolicySettings

PROTOCOL = "oidc"
SSO_COOKIE = "bridge-sso"  # `__Host-bridge-sso` over HTTPS; the PIN pages' is `session`


@dataclass(slots=True)
class Provider:
    settings: OidcSettings
    portal: Portal
    keys: KeyRing
    grants: Grants
    state: FederationState
    pairwise_secret: bytes
    default_policy: PolicySettings
    forgot_url: str | None
    clock: Callable[[], float] = time.time

    @classmethod
    def build(
        cls,
        settings: OidcSettings,
        portal: Portal,
        keys: KeyRing,
        pairwise_secret: bytes,
        default_policy: PolicySettings,
        forgot_url: str | None,
        state: FederationState,
        clock: Callable[[], float] = time.time,
    ) -> Provider:
        sso = settings.sso_minutes * 60.0
        authenticator = portal.authenticator
        if portal.sessions.end_patron in authenticator.on_invalidate:
            authenticator.on_invalidate.remove(portal.sessions.end_patron)
        portal.sessions = SessionStore(clock, idle_seconds=sso, max_seconds=sso)
        portal.cookie = SSO_COOKIE
        authenticator.on_invalidate.append(portal.sessions.end_patron)
        grants = Grants(
            state,
            clock,
            code_seconds=float(settings.code_seconds),
            token_seconds=settings.access_token_minutes * 60.0,
            request_seconds=settings.sign_in_minutes * 60.0,
        )
        return cls(
            settings, portal, keys, grants, state, pairwise_secret, default_policy, forgot_url,
            clock,
        )  # fmt: skip

    def policy(self, client: OidcClient) -> ClientPolicy:
        return (client.policy or self.default_policy).client_policy()

    def standing(self, patron: Patron, client: OidcClient) -> Decision:
        """Whether this client accepts a patron already signed in (single sign-on): the same
        rules as the core's, for a patron whose PIN was checked earlier for another client."""
        return self.standing_for(patron, self.policy(client))

    def standing_for(self, patron: Patron, policy: ClientPolicy) -> Decision:
        if patron.blocked and not policy.allow_blocked:
            return Decision(Outcome.CARD_BLOCKED, patron, "card blocked", pin_ok=True)
        if patron.is_expired(self.portal.authenticator.today()) and not policy.allow_expired:
            return Decision(Outcome.CARD_EXPIRED, patron, "card expired", pin_ok=True)
        limit: Decimal | None = policy.fines_limit
        if limit is not None and patron.fines > limit:
            return Decision(Outcome.FINES_OVER_LIMIT, patron, "fines over limit", pin_ok=True)
        return Decision(Outcome.ACCEPTED, patron, "sso", pin_ok=True)

    def consent_key(self, patron: Patron, client: OidcClient, scopes: frozenset[str]) -> str:
        """Where a patron's consent to a client for one set of scopes is remembered: an HMAC
        under the per-install secret (names neither the patron nor the card)."""
        text = f"consent|{patron.record_id}|{client.client_id}|{' '.join(sorted(scopes))}"
        return hmac.new(self.pairwise_secret, text.encode(), hashlib.sha256).hexdigest()

    async def aclose(self) -> None:
        await self.portal.aclose()
        await self.state.aclose()
