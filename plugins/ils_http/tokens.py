"""OAuth2 client-credentials tokens (RFC 6749 §4.4), cached until shortly before they expire.

Koha (`POST /api/v1/oauth/token`, client id and secret in the form) and Sierra
(`POST /v6/token`, the key and secret as HTTP Basic) both hand out bearer tokens this way.
One token serves every request until `expires_in` is nearly over; concurrent requests that
find no token wait for one fetch instead of each fetching their own. A 401 on a request drops
the token it carried (not a newer one another request already fetched), and `HttpIls.call`
sends the request once more with a fresh token.

The secret and the token never appear in an exception or a log line.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Literal

import msgspec

from plugins.ils_http.client import HttpIls, IlsUnavailable

SKEW_MAX = 30.0  # renew this long before expiry at most (a tenth of the lifetime when shorter)


class TokenAnswer(msgspec.Struct, frozen=True):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int | float | None = None


class ClientCredentials:
    """An `Authorizer` for OAuth2 client-credentials."""

    def __init__(
        self,
        path: str,
        client_id: str,
        secret: str,
        *,
        style: Literal["form", "basic"] = "form",
        default_lifetime: float = 300.0,
    ) -> None:
        self.path = path
        self._client_id = client_id
        self._secret = secret
        self.style = style
        self.default_lifetime = default_lifetime
        self._header: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0  # how many tokens were fetched (tests and health read it)

    async def headers(self, http: HttpIls) -> dict[str, str]:
        if self._header is None or http.monotonic() >= self._expires:
            async with self._lock:
                if self._header is None or http.monotonic() >= self._expires:
                    await self._fetch(http)
        assert self._header is not None
        return {"Authorization": self._header}

    def rejected(self, sent: Mapping[str, str]) -> None:
        if sent.get("Authorization") == self._header:
            self._header = None

    async def _fetch(self, http: HttpIls) -> None:
        form = {"grant_type": "client_credentials"}
        headers: dict[str, str] = {}
        if self.style == "basic":
            raw = f"{self._client_id}:{self._secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode("ascii")
        else:
            form["client_id"] = self._client_id
            form["client_secret"] = self._secret
        started = http.monotonic()
        reply = await http.send("POST", self.path, what="token", data=form, headers=headers)
        if reply.status != 200:
            raise IlsUnavailable(f"{http.name}: token refused (status {reply.status})")
        answer = http.decode(reply, TokenAnswer, "token")
        if not answer.access_token or answer.token_type.lower() != "bearer":
            raise IlsUnavailable(f"{http.name}: token: unusable answer")
        lifetime = float(answer.expires_in or self.default_lifetime)
        if lifetime <= 0:
            raise IlsUnavailable(f"{http.name}: token: already expired")
        skew = min(SKEW_MAX, lifetime / 10)
        self._header = f"Bearer {answer.access_token}"
        self._expires = started + lifetime - skew
        self.fetched += 1
