"""Single sign-on sessions in the `[state]` backend, so a patron signed in through one host or
worker is signed in on all of them, and signing out (or a PIN change, block or lock anywhere)
ends the session everywhere.

The PIN pages already keep their sessions in shared state through `bridge.portal.
shared_sessions` (an ASGI wrapper that reads the cookie's session before a page runs and writes
back what the page changed); this is the same wrapper over `FederationState`, with its own keys
(`sso:<SHA-256 of the id>`) and each session tagged with the SHA-256 of the card number, so the
PIN pages' sessions and these never mix and the state names no card in a key.
"""

from __future__ import annotations

import hashlib
import secrets

import msgspec

from bridge.federation.state import FederationState
from bridge.portal.sessions import Session
from bridge.portal.shared_sessions import Change

CSRF_KEY_SECONDS = 10 * 365 * 86400.0
_SESSION = msgspec.json.Decoder(Session)
_encode = msgspec.json.Encoder().encode


def _key(sid: str) -> str:
    return "sso:" + hashlib.sha256(sid.encode()).hexdigest()


def _tag(barcode: str) -> str:
    return "patron:" + hashlib.sha256(barcode.encode()).hexdigest()


class SsoSessions:
    """`bridge.portal.shared_sessions.Shared` over a `FederationState`."""

    def __init__(self, state: FederationState) -> None:
        self.state = state

    async def load(self, sid: str) -> Session | None:
        value = await self.state.get(_key(sid))
        return None if value is None else _SESSION.decode(value)

    async def apply(self, changes: list[Change], ttl: float) -> None:
        for op, sid, session in changes:
            if op == "put" and session is not None:
                await self.state.put(
                    _key(sid), _encode(session).decode(), ttl, tag=_tag(session.barcode)
                )
            elif op == "end":
                await self.state.delete(_key(sid))

    async def end_patron(self, barcode: str) -> None:
        await self.state.delete_tagged(_tag(barcode))

    async def csrf_key(self) -> bytes:
        return bytes.fromhex(
            await self.state.put_new("csrf-key", secrets.token_hex(32), CSRF_KEY_SECONDS)
        )

    async def aclose(self) -> None:
        """The state is the provider's, closed with it."""
