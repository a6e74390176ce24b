"""PIN reset by emailed link: issue a single-use token, check it, redeem it for a new PIN.

Front ends never touch the store, so the portal asks this module, which reaches the store only
through the authenticator it wraps. The token is 256 random bits (`secrets.token_urlsafe(32)`);
the store keeps only its SHA-256, so a copy of the database opens no accounts, and a guess has no
chance worth rate-limiting beyond the front end's own limits. A new token voids the card's older
ones (the store does that), a token works once, and only until it expires.

The new PIN is checked against the policy *before* the token is taken, so a typo does not burn
the link. The change itself is the core's `set_pin`: it audits `pin_reset`, clears the card's
guessing lock and invalidates cached verifications and sessions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from bridge.core.auth import Authenticator, ChangeResult
from bridge.core.patron import Outcome, Patron
from bridge.core.secret import Secret
from bridge.core.store import Capability, StoreUnavailable, TokenStore

TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 128
ACTOR = "reset-link"


def token_hash(token: str) -> bytes:
    return hashlib.sha256(b"patron-bridge reset v1|" + token.encode("ascii")).digest()


def plausible_token(token: str | None) -> bool:
    return (
        token is not None
        and 0 < len(token) <= MAX_TOKEN_LENGTH
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
    )


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A fresh token for a patron who has an email address. `token` goes only into the email."""

    patron: Patron
    email: str
    token: str
    expires_at: dt.datetime


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ResetTokens:
    def __init__(
        self,
        authenticator: Authenticator,
        *,
        ttl: dt.timedelta = dt.timedelta(minutes=30),
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self.authenticator = authenticator
        self.ttl = ttl
        self.clock = clock

    def _tokens(self) -> TokenStore | None:
        store = self.authenticator.store
        caps = store.capabilities
        wanted = Capability.RESET_TOKENS in caps and Capability.CHANGE_PIN in caps
        return store if wanted and isinstance(store, TokenStore) else None

    @property
    def available(self) -> bool:
        """Whether this store can keep reset tokens and change PINs."""
        return self._tokens() is not None

    async def issue(
        self, barcode: str, *, source: str, allow: Callable[[Patron], bool] | None = None
    ) -> IssuedToken | None:
        """A token for this card when it exists and has an email, else None. Audited either way
        (`reset_requested` with the result; the page shows the same answer in every case).
        `allow` can still refuse once the patron is known (a cap per email address)."""
        tokens = self._tokens()
        audit = self.authenticator.audit
        if tokens is None:
            audit.event("reset_requested", barcode=barcode, source=source, result="unsupported")
            return None
        try:
            patron = await self.authenticator.lookup(barcode)
        except StoreUnavailable:
            audit.event("reset_requested", barcode=barcode, source=source, result="unavailable")
            return None
        if patron is None or not patron.email:
            result = "unknown_card" if patron is None else "no_email"
            audit.event("reset_requested", barcode=barcode, source=source, result=result)
            return None
        if allow is not None and not allow(patron):
            audit.event("reset_requested", barcode=barcode, source=source, result="rate_limited")
            return None
        token = secrets.token_urlsafe(TOKEN_BYTES)
        expires_at = self.clock() + self.ttl
        try:
            await tokens.put_token(token_hash(token), patron.barcode, expires_at)
        except StoreUnavailable:
            audit.event("reset_requested", barcode=barcode, source=source, result="unavailable")
            return None
        audit.event("reset_requested", barcode=barcode, source=source, result="token_issued")
        return IssuedToken(patron, patron.email, token, expires_at)

    async def check(self, token: str) -> bool:
        """Whether the token is live (shows the form; does not use it)."""
        tokens = self._tokens()
        if tokens is None or not plausible_token(token):
            return False
        try:
            return await tokens.peek_token(token_hash(token), self.clock()) is not None
        except StoreUnavailable:
            return False

    async def redeem(
        self, token: str, new_pin: Secret, new_again: Secret, *, source: str
    ) -> tuple[ChangeResult, Patron | None]:
        """Set the new PIN if the token is live; the token is used up only when the PINs pass."""
        if not new_pin.matches(new_again):
            return ChangeResult(False, reason="The two new PINs do not match."), None
        verdict = self.authenticator.pin_policy.check(new_pin)
        if not verdict.ok:
            return ChangeResult(False, policy=verdict, reason=verdict.reason), None
        tokens = self._tokens()
        barcode: str | None = None
        if tokens is not None and plausible_token(token):
            try:
                barcode = await tokens.take_token(token_hash(token), self.clock())
            except StoreUnavailable as exc:
                return ChangeResult(False, outcome=Outcome.STORE_UNAVAILABLE, reason=str(exc)), None
        if barcode is None:
            self.authenticator.audit.event("reset_token_rejected", source=source)
            return ChangeResult(False, outcome=Outcome.BAD_INPUT, reason="invalid reset link"), None
        result = await self.authenticator.set_pin(barcode, new_pin, actor=ACTOR)
        if not result.ok:
            return result, None
        try:  # the patron record, for the "your PIN was changed" notice
            return result, await self.authenticator.lookup(barcode)
        except StoreUnavailable:
            return result, None
