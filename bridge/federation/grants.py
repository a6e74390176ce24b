"""Pending sign-ins, authorization codes, access tokens and remembered consents, kept in the
`[state]` backend (`bridge.federation.state`): a code issued by one host is redeemed at another,
and a restart loses nothing.

Codes, tokens and request ids are stored under their SHA-256 only, so the state (or a dump of
it) holds nothing that can be redeemed. A code is single-use and short-lived; redeeming it a
second time also revokes the access token the first redemption issued (RFC 6749 4.1.2), on
whichever host either redemption happened (`FederationState.redeem` is atomic on the server).
`Expiring` is the small in-process map the SAML side keeps its Single Logout sessions in.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from bridge.federation.state import FederationState, Taken

MAX_ENTRIES = 100_000
T = TypeVar("T")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Request:
    """A validated authorization request waiting for the patron to sign in."""

    client_id: str
    redirect_uri: str
    scopes: frozenset[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    consent: bool = False  # prompt=consent: ask even if the patron allowed it before


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code (and then its access token) stands for."""

    request: Request
    subject: str
    claims: dict[str, Any]
    auth_time: int
    expires: float  # the code's end (the token's is the state's expiry)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A signed-in patron's authorization waiting for their consent, bound to their session."""

    grant: Grant
    session: str  # SHA-256 of the single sign-on session id that may answer
    consent: str  # the key the answer is remembered under


class Expiring(Generic[T]):
    def __init__(self) -> None:
        self.items: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def put(self, key: str, until: float, value: T) -> None:
        self.items[key] = (until, value)
        while len(self.items) > MAX_ENTRIES:
            self.items.popitem(last=False)

    def get(self, key: str, now: float) -> T | None:
        entry = self.items.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.items[key]
            return None
        return entry[1]

    def sweep(self, now: float) -> None:
        for key in [k for k, (until, _) in self.items.items() if until <= now]:
            del self.items[key]


_REQUEST = msgspec.json.Decoder(Request)
_GRANT = msgspec.json.Decoder(Grant)
_WAITING = msgspec.json.Decoder(Waiting)
_encode = msgspec.json.Encoder().encode


def _text(value: object) -> str:
    return _encode(value).decode()


@dataclass(slots=True)
class Grants:
    state: FederationState
    clock: Callable[[], float]
    code_seconds: float
    token_seconds: float
    request_seconds: float

    async def park(self, request: Request) -> str:
        """Keep a request while the patron signs in; the id goes in the sign-in form."""
        rid = secrets.token_urlsafe(24)
        await self.state.put("req:" + digest(rid), _text(request), self.request_seconds)
        return rid

    async def parked(self, rid: str) -> Request | None:
        value = await self.state.get("req:" + digest(rid))
        return None if value is None else _REQUEST.decode(value)

    async def finish(self, rid: str) -> None:
        await self.state.delete("req:" + digest(rid))

    async def wait_for_consent(self, waiting: Waiting) -> str:
        rid = secrets.token_urlsafe(24)
        await self.state.put("wait:" + digest(rid), _text(waiting), self.request_seconds)
        return rid

    async def waiting(self, rid: str) -> Waiting | None:
        value = await self.state.get("wait:" + digest(rid))
        return None if value is None else _WAITING.decode(value)

    async def answered(self, rid: str) -> None:
        await self.state.delete("wait:" + digest(rid))

    async def remember_consent(self, key: str, seconds: float) -> None:
        await self.state.put("consent:" + key, "1", seconds)

    async def consented(self, key: str) -> bool:
        return await self.state.get("consent:" + key) is not None

    async def issue_code(
        self, request: Request, subject: str, claims: dict[str, Any], auth_time: int
    ) -> str:
        code = secrets.token_urlsafe(32)
        grant = Grant(request, subject, claims, auth_time, self.clock() + self.code_seconds)
        # Kept past its life (as "used" once redeemed) long enough to catch a replay.
        await self.state.put(
            "code:" + digest(code), _text(grant), self.code_seconds + self.token_seconds
        )
        return code

    async def redeem(self, code: str) -> tuple[Grant, str] | Taken:
        """A live, unused code's grant and the access token it now gives, or why not. A replay
        (on any host) deletes the token the first redemption gave."""
        token = secrets.token_urlsafe(32)
        taken = await self.state.redeem(
            "code:" + digest(code), "tok:" + digest(token), self.token_seconds
        )
        if taken.outcome is not Taken.TAKEN or taken.value is None:
            return taken.outcome
        grant = _GRANT.decode(taken.value)
        if grant.expires <= self.clock():
            await self.revoke(token)
            return Taken.UNKNOWN
        return grant, token

    async def revoke(self, token: str) -> None:
        await self.state.delete("tok:" + digest(token))

    async def token(self, token: str) -> Grant | None:
        value = await self.state.get("tok:" + digest(token))
        return None if value is None else _GRANT.decode(value)
