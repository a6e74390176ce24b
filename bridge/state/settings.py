"""`[state]`: where the hot state every worker and host must agree on is kept.

The guessing throttle (per card, per source, the global guard), cache invalidations and the PIN
pages' sessions. `memory` is one process only (tests, a single small daemon); `sqlite` is one file
shared by every worker on one host; `redis` is shared by every worker on every host.

`backend` defaults to the older `[throttle] state` key (`sqlite`, `memory` or `store`), so an
existing config keeps its meaning; `path` defaults to `[throttle] path`.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from bridge.settings import Section

Backend = Literal["memory", "sqlite", "redis", "store"]


class StateSettings(Section, frozen=True):
    backend: Literal["memory", "sqlite", "redis"] | None = None  # None: `throttle.state`
    path: str | None = None  # sqlite: None means `throttle.path`
    url: str = "redis://127.0.0.1:6379/0"  # redis://, rediss:// (TLS), unix:///path?db=0
    tls_ca_file: str | None = None  # rediss://: the CA that signed Redis's certificate
    username: str | None = None
    password: str | None = None  # or password_file / password_env
    # Redis Sentinel (high availability): "host:port" of each sentinel. The client asks them for
    # the primary of `sentinel_service` and asks again after a failover; `url` then gives only
    # the scheme (rediss:// for TLS) and the database number, its host is not used.
    sentinels: list[str] = msgspec.field(default_factory=list)
    sentinel_service: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "patron-bridge"
    sentinel_password: str | None = None  # the sentinels' own requirepass, if they have one
    key_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] = "patron-bridge:"
    connect_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0
    command_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 0.5
    # What the front ends answer while the shared state cannot be reached: "refuse" gives each
    # its store-unavailable answer; "local" counts in this process alone with the lock
    # threshold divided by `hosts` x this host's workers (never unlimited guessing).
    on_state_unavailable: Literal["refuse", "local"] = "refuse"
    hosts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 1
    retry_seconds: Annotated[float, msgspec.Meta(gt=0, le=60)] = 1.0  # reconnect attempts
    # Seconds between polls of the SQLite file for other workers' cache invalidations.
    poll_seconds: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.2


def sentinel_address(entry: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` of one sentinel; ValueError saying what is wrong."""
    if entry.startswith("["):
        host, sep, port = entry[1:].partition("]:")
    else:
        host, sep, port = entry.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"bad sentinel address {entry!r} (want HOST:PORT)")
    return host, int(port)
