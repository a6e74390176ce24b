"""`[store]` keys every HTTP ILS connector has; each connector's settings extend this struct.

Timeouts are short by default for the same reason as the SIP2 connector's: a patron at a
self-check or a Wi-Fi login page is waiting, and "the ILS did not answer" is turned into
"store unavailable", never into a wrong PIN. Plain `http://` is accepted only to a loopback
host (a test double, or a TLS-terminating proxy on the same machine): PINs travel in request
bodies and must not cross a network in clear.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

import msgspec

from bridge.settings import Section, is_loopback

Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]
CacheSeconds = Annotated[float, msgspec.Meta(ge=0, le=3600)]


class HttpStoreSettings(Section, frozen=True):
    base_url: str
    ca_file: str | None = None  # None: the system's CA store
    tls_verify: bool = True
    connect_timeout: Seconds = 3.0
    # The deadline of one store operation (a PIN check with its status read, a lookup), token
    # renewal included: past it the answer is "store unavailable".
    request_timeout: Seconds = 5.0
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=256)] = 8
    keepalive_expiry: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 60.0
    # How long a patron record read after a good PIN is reused for the same record.
    status_cache_seconds: CacheSeconds = 30.0
    # circuit breaker (plugins.breaker): after this many failures in a row stop asking
    breaker_failures: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    breaker_reset: Seconds = 1.0
    breaker_reset_max: Seconds = 60.0

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("base_url must be an http(s) URL with a host")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ValueError("base_url must use https unless the host is loopback")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("base_url must not carry a query, fragment or credentials")
        if self.breaker_reset_max < self.breaker_reset:
            raise ValueError("breaker_reset_max must be at least breaker_reset")
