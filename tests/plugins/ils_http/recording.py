"""What every vendor double shares: the record of requests and answers, queued faults, and the
latch a "slow" fault waits on.

A double subclasses `RecordingDouble` and says only what is its vendor's: the routes, and the
body each fault kind has in that API (`fault_response`). Every answer goes through `answer`, so
the fixtures can check all of them against the schemas written from the vendor's contract;
faults are recorded as such and skipped by that check.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Sent = tuple[str, str, bytes, dict[str, str]]  # method, path, body, {"query": ..., ...}


# Random record ids (FOLIO's UUIDs) may spell a test PIN's digits by chance: not a leak.
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass
class Recorded:
    route: str
    status: int
    body: Any
    fault: bool


@dataclass(kw_only=True)
class RecordingDouble:
    slow_seconds: float = 3.0
    requests: list[Sent] = field(default_factory=list)
    responses: list[Recorded] = field(default_factory=list)
    faults: dict[str, deque[str]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)

    # -- test controls ----------------------------------------------------------------------
    def fail(self, route: str, *kinds: str) -> None:
        """Queue faults for a route ("any" for every route): 429, 500, 503, slow, malformed,
        wrongtype and whatever else the vendor's `fault_response` knows."""
        self.faults.setdefault(route, deque()).extend(kinds)

    def count(self, suffix: str) -> int:
        """Requests whose path (or recorded route) ends with `suffix`."""
        return sum(1 for r in self.requests if r[1].endswith(suffix) or r[3].get("route") == suffix)

    def assert_no_pin_in_urls(self) -> None:
        """No test PIN in any path or query string this double was sent (decoded)."""
        from tests.pins import ALL

        for _method, path, _body, meta in self.requests:
            seen = _UUID.sub("", unquote_plus(path + "?" + meta.get("query", "")))
            assert not [
                pin
                for pin in ALL
                if re.search(rf"(?<![0-9A-Za-z]){re.escape(pin)}(?![0-9A-Za-z])", seen)
            ], path

    # -- plumbing for the routes --------------------------------------------------------------
    async def record(self, request: Request, **meta: str) -> bytes:
        body = await request.body()
        self.requests.append(
            (request.method, request.url.path, body, {"query": request.url.query, **meta})
        )
        return body

    def answer(
        self, route: str, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> Response:
        """A documented answer: recorded for the schema check, sent as JSON (or empty)."""
        self.responses.append(Recorded(route, status, body, False))
        if body is None:
            return Response(status_code=status, headers=headers)
        return JSONResponse(body, status_code=status, headers=headers)

    async def take_fault(self, route: str) -> Response | None:
        """The next queued fault for `route` as a response; None for none (or after "slow")."""
        for key in (route, "any"):
            queue = self.faults.get(key)
            if not queue:
                continue
            kind = queue.popleft()
            self.responses.append(Recorded(route, 0, kind, True))
            if kind == "slow":
                await asyncio.get_running_loop().run_in_executor(
                    None, self.release.wait, self.slow_seconds
                )
                return None
            return self.fault_response(kind, route)
        return None

    def fault_response(self, kind: str, route: str) -> Response:
        """The vendor's body for a fault kind; a double overrides this."""
        raise AssertionError(kind)


@dataclass(kw_only=True)
class BearerTokens:
    """OAuth2 client-credentials tokens as an ILS keeps them (the Koha and Sierra doubles):
    each lives `token_lifetime` seconds; `expire_tokens` is what a restart of the ILS does."""

    token_lifetime: int = 3600
    tokens: dict[str, float] = field(default_factory=dict)
    tokens_issued: int = 0

    def expire_tokens(self) -> None:
        self.tokens.clear()

    def issue_token(self, token_type: str) -> dict[str, Any]:
        """A new token, as the token endpoint's answer body."""
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.token_lifetime
        self.tokens_issued += 1
        return {"access_token": token, "token_type": token_type, "expires_in": self.token_lifetime}

    def bearer_ok(self, request: Request) -> bool:
        """The request carries `Authorization: Bearer <a token still alive>`."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token)
        return scheme.lower() == "bearer" and expires is not None and time.monotonic() < expires
