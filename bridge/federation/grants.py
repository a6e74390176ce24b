"""Pending sign-ins, authorization codes and access tokens, in memory.

Codes and access tokens are kept under their SHA-256 only, so a memory dump or a debug print
holds nothing that can be redeemed. A code is single-use and short-lived; redeeming it a second
time also revokes the access token the first redemption issued (RFC 6749 4.1.2). The clock is
passed in; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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


@dataclass(slots=True)
class Grant:
    request: Request
    subject: str
    claims: dict[str, Any]
    auth_time: int
    expires: float
    used: bool = False
    token_digest: str | None = None


@dataclass(slots=True)
class Token:
    client_id: str
    scopes: frozenset[str]
    subject: str
    claims: dict[str, Any]
    expires: float


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


@dataclass(slots=True)
class Grants:
    clock: Callable[[], float]
    code_seconds: float
    token_seconds: float
    request_seconds: float
    _requests: Expiring[Request] = field(default_factory=Expiring)
    _codes: Expiring[Grant] = field(default_factory=Expiring)
    _tokens: Expiring[Token] = field(default_factory=Expiring)

    def park(self, request: Request) -> str:
        """Keep a request while the patron signs in; the id goes in the sign-in form."""
        now = self.clock()
        self._requests.sweep(now)
        rid = secrets.token_urlsafe(24)
        self._requests.put(rid, now + self.request_seconds, request)
        return rid

    def parked(self, rid: str) -> Request | None:
        return self._requests.get(rid, self.clock())

    def finish(self, rid: str) -> None:
        self._requests.items.pop(rid, None)

    def issue_code(
        self, request: Request, subject: str, claims: dict[str, Any], auth_time: int
    ) -> str:
        now = self.clock()
        self._codes.sweep(now)
        code = secrets.token_urlsafe(32)
        grant = Grant(request, subject, claims, auth_time, now + self.code_seconds)
        # Kept past its life as "used" long enough to catch a replay.
        self._codes.put(digest(code), now + self.code_seconds + self.token_seconds, grant)
        return code

    def redeem(self, code: str) -> Grant | None:
        """The grant for a live, unused code; a replay revokes what the code gave."""
        now = self.clock()
        grant = self._codes.get(digest(code), now)
        if grant is None:
            return None
        if grant.used:
            if grant.token_digest is not None:
                self._tokens.items.pop(grant.token_digest, None)
            return None
        grant.used = True
        if grant.expires <= now:
            return None
        return grant

    def issue_token(self, grant: Grant) -> str:
        now = self.clock()
        self._tokens.sweep(now)
        token = secrets.token_urlsafe(32)
        grant.token_digest = digest(token)
        r = grant.request
        entry = Token(r.client_id, r.scopes, grant.subject, grant.claims, now + self.token_seconds)
        self._tokens.put(grant.token_digest, entry.expires, entry)
        return token

    def token(self, token: str) -> Token | None:
        return self._tokens.get(digest(token), self.clock())
