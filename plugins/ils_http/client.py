"""One pooled HTTP client per connector, with a deadline per operation and the circuit breaker.

Why httpx: it is async on asyncio with a real connection pool (keep-alive, a cap on
connections, idle expiry), per-phase timeouts (connect, read, pool wait), TLS from an
`ssl.SSLContext` we build in `bridge.tls`, and a typed API mypy checks. The test suite already
used it. `HttpIls` builds each request with `httpx.Request` (URL, query, JSON or form body) and
hands it to httpx's own pool, httpcore's, directly (`plugins.ils_http.transport` says why).
aiohttp would do the pooling too but brings its own event-loop helpers, cookie jar and
multidicts to learn, and no typed request API of the same quality.

What a connector gets from `HttpIls`:
- `call()`: one request. Transport errors (refused, reset, TLS), 5xx, 429 and a circuit that
  is open become `IlsUnavailable` (a `StoreUnavailable`) with a message naming the call, never
  its URL, body or headers (a barcode is personal data; a PIN or token would be worse). 4xx
  other than 401/429 is returned for the connector to read: it is the ILS's answer.
- a 401 with an `Authorizer` (OAuth2 token, FOLIO login): the token is dropped, renewed and the
  request sent once more; a second 401 is "unavailable" (the bridge's own credentials are bad).
  Retrying is safe even for a PIN check: a 401 means the ILS refused *the bridge*, before it
  looked at the patron. Nothing else is retried: a PIN check that timed out may have been
  counted by the ILS as a failed login, and sending it again could lock the patron out.
- 429 or 503 with Retry-After: the breaker is held open that long (capped), so the bridge
  answers "unavailable" at once instead of spending the ILS's rate limit.
- `deadline()`: the whole operation (token renewal, PIN check, status read) under one timeout.
- `decode()`: JSON into a msgspec type; malformed or mistyped bodies are "unavailable".
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import httpcore
import httpx
import msgspec

from bridge import tls
from bridge.core.store import Health, StoreUnavailable
from plugins.breaker import Breaker
from plugins.ils_http.settings import HttpStoreSettings
from plugins.ils_http.transport import CorkedBackend

T = TypeVar("T")

# httpx logs every request line at INFO (URLs carry barcodes); the bridge's own lines say what
# happened without them.
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).setLevel(logging.WARNING)

# Query parameters (a key may repeat as pairs) and a form (a key may carry several values).
Params = Mapping[str, str] | tuple[tuple[str, str], ...]
Form = Mapping[str, str | list[str]]

RETRY_AFTER_MAX = 300.0  # seconds; a longer Retry-After is read as this


class IlsUnavailable(StoreUnavailable):
    """The ILS could not answer this operation now (down, slow, refusing, unreadable)."""


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes


class Authorizer(Protocol):
    """Adds the bridge's own credentials to a request (a bearer token, a session header)."""

    async def headers(self, http: HttpIls) -> dict[str, str]: ...

    def rejected(self, sent: Mapping[str, str]) -> None:
        """The ILS answered 401 to a request carrying `sent`: forget that credential."""
        ...


def retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit() and len(value) <= 9:  # not "²": isdigit says yes
        return min(float(value), RETRY_AFTER_MAX)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        return min(max(when.timestamp() - now_wall, 0.0), RETRY_AFTER_MAX)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class HttpIls:
    """The connector's client: pool, breaker, deadline. One per open store."""

    def __init__(
        self,
        settings: HttpStoreSettings,
        *,
        name: str,
        base_dir: str = ".",
        monotonic: Callable[[], float] = time.monotonic,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name
        self.monotonic = monotonic
        self.breaker = Breaker(
            failures=settings.breaker_failures,
            reset=settings.breaker_reset,
            reset_max=settings.breaker_reset_max,
            probe_timeout=max(settings.request_timeout * 2, 1.0),
        )
        context: ssl.SSLContext | None = None
        if settings.base_url.startswith("https:"):
            ca = None
            if settings.ca_file:
                ca = Path(settings.ca_file)
                if not ca.is_absolute():
                    ca = Path(base_dir) / ca
            context = tls.client_context(ca, verify=settings.tls_verify)
        self.timeouts = httpx.Timeout(
            settings.request_timeout,
            connect=settings.connect_timeout,
            pool=settings.request_timeout,
        ).as_dict()
        # TCP_NODELAY: a request goes out as soon as it is written (`transport` writes each in
        # one piece). No proxy or netrc from the environment: the config says where.
        self.pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=settings.pool_size,
            max_keepalive_connections=settings.pool_size,
            keepalive_expiry=settings.keepalive_expiry or None,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            network_backend=CorkedBackend(),
        )
        self.base_url = settings.base_url.rstrip("/")
        self.headers = {
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            "User-Agent": "patron-bridge",
            **(headers or {}),
        }

    # -- one operation ----------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def deadline(self, what: str) -> AsyncIterator[None]:
        """Everything inside finishes within request_timeout, or the ILS is "unavailable"."""
        try:
            async with asyncio.timeout(self.settings.request_timeout):
                yield
        except TimeoutError:
            self.breaker.failure(self.monotonic())
            raise IlsUnavailable(f"{self.name}: {what} timed out") from None

    async def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        auth: Authorizer | None = None,
        params: Params | None = None,
        json: Any = None,
        data: Form | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """Send one request (and once more after a 401 with fresh credentials)."""
        for attempt in (1, 2):
            sent = dict(await auth.headers(self)) if auth is not None else {}
            if headers:
                sent.update(headers)
            reply = await self.send(
                method, url, what=what, params=params, json=json, data=data, headers=sent
            )
            if reply.status != 401 or auth is None:
                return reply
            auth.rejected(sent)
            if attempt == 2:
                break
        raise IlsUnavailable(f"{self.name}: {what}: the ILS refused the bridge's credentials")

    async def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Params | None = None,
        json: Any = None,
        data: Form | None = None,
        headers: Mapping[str, str] | None = None,
        sign: Callable[[httpx.Request], None] | None = None,
    ) -> Reply:
        """One request under the breaker; no credentials, no retry. `sign` sees the request
        exactly as it will be sent (Polaris signs the URL) and adds its headers."""
        now = self.monotonic()
        if not self.breaker.allow(now):
            raise IlsUnavailable(f"{self.name}: circuit {self.breaker.describe(now)}")
        content = None if json is None else msgspec.json.encode(json)
        sent_headers = self._headers(headers, json=content is not None)
        try:
            request = httpx.Request(
                method,
                url if "://" in url else f"{self.base_url}/{url.lstrip('/')}",
                params=params,
                content=content,
                data=data,
                headers=sent_headers,
                extensions={"timeout": self.timeouts},
            )
            if sign is not None:
                sign(request)
            response = await self.pool.handle_async_request(
                httpcore.Request(
                    request.method,
                    httpcore.URL(
                        scheme=request.url.raw_scheme,
                        host=request.url.raw_host,
                        port=request.url.port,
                        target=request.url.raw_path,
                    ),
                    headers=request.headers.raw,
                    content=request.content,
                    extensions=request.extensions,
                )
            )
            try:
                body = await response.aread()
            finally:
                await response.aclose()
            got = httpx.Headers(response.headers)
            if "content-encoding" in got:  # what `Accept-Encoding` offered, undone by httpx
                body = httpx.Response(response.status, headers=got, content=body).content
        except httpcore.TimeoutException:
            self.breaker.failure(self.monotonic())
            raise IlsUnavailable(f"{self.name}: {what} timed out") from None
        except httpcore.ConnectError:
            self.breaker.failure(self.monotonic())
            raise IlsUnavailable(f"{self.name}: cannot connect") from None
        except (
            httpcore.NetworkError,
            httpcore.ProtocolError,
            httpcore.UnsupportedProtocol,
            httpx.DecodingError,
        ) as exc:
            self.breaker.failure(self.monotonic())
            raise IlsUnavailable(f"{self.name}: {what}: {type(exc).__name__}") from None
        # Set-Cookie is read from the reply by the connector that wants it (FOLIO's token);
        # with no cookie jar none is ever sent back on a later call.
        reply = Reply(response.status, got, body)
        now = self.monotonic()
        if reply.status == 429 or reply.status >= 500:
            wait = retry_after(reply.headers.get("retry-after"), time.time())
            if wait is not None and reply.status in (429, 503):
                self.breaker.hold(now, wait)
            else:
                self.breaker.failure(now)
            if reply.status == 429:
                raise IlsUnavailable(f"{self.name}: {what}: rate limited by the ILS")
            raise IlsUnavailable(f"{self.name}: {what}: ILS error {reply.status}")
        self.breaker.success(now)
        return reply

    def _headers(self, extra: Mapping[str, str] | None, *, json: bool) -> dict[str, str]:
        """The client's headers, overridden (whatever the case of the name) by `extra`."""
        if not extra and not json:
            return self.headers
        mine = {k.lower() for k in extra or ()}
        if json:
            mine.add("content-type")
        merged = {k: v for k, v in self.headers.items() if k.lower() not in mine}
        merged.update(extra or {})
        if json:
            merged["Content-Type"] = "application/json"
        return merged

    def decode(self, reply: Reply, type_: type[T], what: str) -> T:
        """The body as `type_`; anything else is the ILS misbehaving, not a wrong PIN."""
        try:
            return msgspec.json.decode(reply.body, type=type_)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.breaker.failure(self.monotonic())
            raise IlsUnavailable(f"{self.name}: {what}: unreadable answer") from None

    def unexpected(self, reply: Reply, what: str) -> IlsUnavailable:
        """A status the API does not document for this call."""
        self.breaker.failure(self.monotonic())
        return IlsUnavailable(f"{self.name}: {what}: unexpected status {reply.status}")

    # -- health and life --------------------------------------------------------------------
    def circuit_health(self) -> Health | None:
        """An open breaker answers health at once (do not ask an ILS we know is away)."""
        now = self.monotonic()
        if self.breaker.retry_after(now) > 0:
            return Health(False, f"{self.name}: circuit {self.breaker.describe(now)}")
        return None

    async def aclose(self) -> None:
        await self.pool.aclose()
