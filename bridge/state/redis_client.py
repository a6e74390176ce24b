"""The one Redis connection pool of a process, built from `[state]`, and its availability.

Every key this process writes starts with `key_prefix`, so several bridges (or tests) can share
one Redis. Commands carry a timeout (`command_timeout`): a Redis that hangs is a Redis that is
down. `Availability` remembers whether the last command worked, logs the change loudly once
each way, and lets callers decide quickly without waiting a timeout per request while Redis is
known to be down (a probe is let through every `retry_seconds`, so recovery needs no restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import structlog
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError

from bridge.state.settings import StateSettings, sentinel_address

log = structlog.get_logger("bridge.state")

# What a failed Redis call raises: its own errors, and the socket/timeout errors under them.
UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)


def connect(settings: StateSettings, ca_file: Path | None = None) -> aioredis.Redis:
    """A client (lazy: nothing is connected until the first command). With rediss:// the
    server's certificate is verified against `ca_file` (`state.tls_ca_file`), else the
    system's CAs."""
    tls: dict[str, Any] = {}
    if settings.url.startswith("rediss://") and ca_file is not None:
        tls["ssl_ca_certs"] = str(ca_file)
    if settings.sentinels:
        return _through_sentinels(settings, tls)
    return aioredis.Redis.from_url(
        settings.url,
        **tls,
        username=settings.username,
        password=settings.password,
        socket_connect_timeout=settings.connect_timeout,
        socket_timeout=settings.command_timeout,
        health_check_interval=30,
        decode_responses=False,
    )


def _through_sentinels(settings: StateSettings, tls: dict[str, Any]) -> aioredis.Redis:
    """A client whose connections go to the primary the sentinels name for
    `sentinel_service`; after a failover the next connection asks them again (and a command
    on the demoted primary, now read-only, drops its connection and asks again too). Scripts
    are loaded again on the new primary when it does not know them."""
    parsed = urlsplit(settings.url)
    db = int(parsed.path.strip("/") or 0)  # config.load checked it is a number
    common: dict[str, Any] = {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": settings.command_timeout,
    }
    if parsed.scheme == "rediss":
        common.update(ssl=True, **tls)
    sentinel = Sentinel(
        [sentinel_address(entry) for entry in settings.sentinels],
        sentinel_kwargs={**common, "password": settings.sentinel_password},
        **common,
    )
    client: aioredis.Redis = sentinel.master_for(
        settings.sentinel_service,
        redis_class=aioredis.Redis,
        db=db,
        username=settings.username,
        password=settings.password,
        health_check_interval=30,
        decode_responses=False,
    )
    return client


class Availability:
    """Up or down, as the last call found it; a probe is allowed every `retry_seconds`."""

    def __init__(
        self, retry_seconds: float, what: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.retry_seconds = retry_seconds
        self.what = what
        self.clock = clock
        self.up = True
        self._next_probe = 0.0
        self.on_change: list[Callable[[bool], None]] = []

    def worth_trying(self) -> bool:
        """True when up, or when a probe is due (then the next one waits `retry_seconds`)."""
        if self.up:
            return True
        now = self.clock()
        if now >= self._next_probe:
            self._next_probe = now + self.retry_seconds
            return True
        return False

    def failed(self, error: BaseException) -> None:
        if self.up:
            self.up = False
            self._next_probe = self.clock() + self.retry_seconds
            log.error(
                "state_unavailable",
                backend=self.what,
                error=type(error).__name__,
                detail=str(error)[:200],
            )
            for callback in self.on_change:
                callback(False)

    def worked(self) -> None:
        if not self.up:
            self.up = True
            log.warning("state_available", backend=self.what, detail="shared state reachable again")
            for callback in self.on_change:
                callback(True)
