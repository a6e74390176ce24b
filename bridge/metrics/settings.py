"""`[metrics]`: where Prometheus scrapes the daemon. Absent: no metrics listener at all."""

from __future__ import annotations

from typing import Annotated

import msgspec

from bridge.settings import Section, parse_listen


class MetricsSettings(Section, frozen=True):
    # Loopback by default: the exposition names clients and counts failures, which is nobody's
    # business outside the monitoring host (put a firewall rule or a proxy in front otherwise).
    listen: str = "127.0.0.1:9108"
    # Seconds a store health probe's answer is reused by /readyz and /metrics, so a scrape every
    # few seconds from two Prometheus servers and a load balancer costs the store one query.
    health_ttl: Annotated[float, msgspec.Meta(ge=0, le=300)] = 2.0
    # Seconds /readyz and /metrics wait for the store's health answer before calling it down.
    health_timeout: Annotated[float, msgspec.Meta(gt=0, le=60)] = 3.0
    # HTTPS for the scrape (PEM files, relative to the config file): both or neither. A reload
    # loads rotated files in place; turning HTTPS on or off needs a restart.
    tls_cert: str | None = None
    tls_key: str | None = None

    def __post_init__(self) -> None:
        parse_listen(self.listen)  # ValueError → `metrics: bad listen address ...`
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
