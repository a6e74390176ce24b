"""A prometheus-client Collector that reads the daemon's live state when Prometheus scrapes.

Nothing here runs per request: the KDF pool, verified cache, throttle tables, connection sets,
RADIUS drop counts and the SIP2 upstream pool are read as they are at scrape time. Scrapes run
on the event loop (the metrics listener is served there), the same thread that changes that
state, so every read sees a consistent picture without a lock.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

from bridge.core.auth import Authenticator
from bridge.core.pin import PinHasher
from bridge.core.throttle import ThrottleSnapshot
from bridge.metrics.recorder import Histogram, Recorder
from bridge.services import Listener

PREFIX = "patron_bridge"


@dataclass(slots=True)
class StoreHealth:
    """The last store health probe (`server.py` refreshes it before a scrape or /readyz)."""

    ok: bool = False
    detail: str = "not probed yet"
    seconds: float = 0.0
    checked_at: float = 0.0  # monotonic; 0: never


def version() -> str:
    try:
        return metadata.version("patron-bridge")
    except metadata.PackageNotFoundError:
        return "unknown"


def _histogram(
    name: str, doc: str, labels: list[str], items: Iterable[tuple[list[str], Histogram]]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in items:
        family.add_metric(values, histogram.cumulative(), histogram.total)
    return family


class BridgeCollector(Collector):
    def __init__(
        self,
        *,
        recorder: Recorder,
        authenticator: Authenticator,
        hasher: PinHasher | None,
        listeners: list[Listener],
        health: StoreHealth,
        loop_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self.authenticator = authenticator
        self.hasher = hasher
        self.listeners = listeners
        self.health = health
        self.loop_name = loop_name
        self.clock = clock

    def collect(self) -> Iterator[Any]:
        yield from self._build()
        yield from self._decisions()
        yield from self._store()
        yield from self._kdf()
        yield from self._cache()
        yield from self._throttle()
        yield from self._connections()
        yield from self._radius()
        yield from self._upstream()

    # -- families ---------------------------------------------------------------------------
    def _build(self) -> Iterator[Any]:
        info = InfoMetricFamily(f"{PREFIX}_build", "Version of the running bridge.")
        info.add_metric(
            [],
            {
                "version": version(),
                "python": platform.python_version(),
                "loop": self.loop_name,
                "store": type(self.authenticator.store).__name__,
            },
        )
        yield info

    def _decisions(self) -> Iterator[Any]:
        rec = self.recorder
        decisions = CounterMetricFamily(
            f"{PREFIX}_decisions",
            "Authentication decisions by protocol, client (vendor account) and outcome.",
            labels=["protocol", "client", "outcome"],
        )
        for (protocol, client, outcome), count in rec.decisions().items():
            decisions.add_metric([protocol, client, outcome.value], count)
        yield decisions
        yield _histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from question to decision, by protocol and path (cached: answered before the "
            "store; store: the store or KDF was asked).",
            ["protocol", "path"],
            ((list(key), h) for key, h in rec.latency().items()),
        )

    def _store(self) -> Iterator[Any]:
        rec, health = self.recorder, self.health
        up = GaugeMetricFamily(f"{PREFIX}_store_up", "1 when the store's last health check passed.")
        up.add_metric([], 1.0 if health.ok else 0.0)
        yield up
        took = GaugeMetricFamily(
            f"{PREFIX}_store_health_check_seconds", "Duration of the last store health check."
        )
        took.add_metric([], health.seconds)
        yield took
        yield _histogram(
            f"{PREFIX}_store_call_duration_seconds",
            "Latency of each store call (lookup, verify_pin, change_pin, health).",
            ["call"],
            (([name], h) for name, h in list(rec.store_calls.items())),
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_store_call_errors", "Store calls that raised.", labels=["call"]
        )
        for name, count in list(rec.store_errors.items()):
            errors.add_metric([name], count)
        yield errors

    def _kdf(self) -> Iterator[Any]:
        hasher = self.hasher
        queued, busy, workers = (0, 0, 0) if hasher is None else hasher.load()
        for name, doc, value in (
            ("kdf_workers", "KDF worker threads.", workers),
            ("kdf_busy_workers", "KDF worker threads hashing now.", busy),
            ("kdf_queue_depth", "PIN hashes waiting for a free KDF worker.", queued),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
            gauge.add_metric([], value)
            yield gauge

    def _cache(self) -> Iterator[Any]:
        cache = self.authenticator.cache
        hit_count, miss_count = self.recorder.cache()
        hits = CounterMetricFamily(
            f"{PREFIX}_cache_hits", "Right PINs answered from the verified-credential cache."
        )
        hits.add_metric([], hit_count)
        yield hits
        misses = CounterMetricFamily(
            f"{PREFIX}_cache_misses", "Decisions that had to ask the store (not in the cache)."
        )
        misses.add_metric([], miss_count)
        yield misses
        entries = GaugeMetricFamily(f"{PREFIX}_cache_entries", "Verified-cache entries held.")
        entries.add_metric([], len(cache))
        yield entries

    def _throttle(self) -> Iterator[Any]:
        throttle = self.authenticator.throttle
        snapshot_of = getattr(throttle, "snapshot", None)
        if snapshot_of is None:  # a shared backend keeps these counts in Redis/SQLite
            return
        snap: ThrottleSnapshot = snapshot_of(self.clock())
        values = (
            (
                "throttle_cards_locked",
                "Cards in their hard lock (staff or time clears them).",
                snap.cards_locked,
            ),
            (
                "throttle_cards_delayed",
                "Cards in a growing delay after failed PINs (not yet locked).",
                snap.cards_delayed,
            ),
            (
                "throttle_sources_blocked",
                "Source addresses blocked for too many failures.",
                snap.sources_blocked,
            ),
            (
                "throttle_spray_guard_active",
                "1 while the global failure-rate guard (password spraying) refuses new attempts.",
                1 if snap.spray_guard_active else 0,
            ),
            (
                "throttle_global_failures",
                "Failed attempts within the global guard's window.",
                snap.global_failures,
            ),
            (
                "throttle_global_failures_limit",
                "Failures within the window at which the spray guard trips.",
                throttle.rules.global_max_failures,
            ),
            (
                "throttle_checks_in_flight",
                "PIN checks reserved against the guessing limits and not yet settled.",
                snap.inflight,
            ),
        )
        for name, doc, value in values:
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
            gauge.add_metric([], value)
            yield gauge

    def _connections(self) -> Iterator[Any]:
        gauge = GaugeMetricFamily(
            f"{PREFIX}_open_connections",
            "Open client connections per front end.",
            labels=["front_end"],
        )
        for listener in list(self.listeners):
            count = None if listener.name == "metrics" else open_connections(listener)
            if count is not None:
                gauge.add_metric([listener.name], count)
        yield gauge

    def _radius(self) -> Iterator[Any]:
        family = CounterMetricFamily(
            f"{PREFIX}_radius_dropped",
            "RADIUS datagrams dropped without an answer, by reason.",
            labels=["reason"],
        )
        for listener in list(self.listeners):
            server = getattr(listener, "server", None)
            drops = getattr(server, "drops", None)
            if listener.name == "radius" and drops is not None:
                for reason, count in list(drops.items()):
                    family.add_metric([drop_label(reason)], count)
        yield family

    def _upstream(self) -> Iterator[Any]:
        pool = getattr(self.authenticator.store, "pool", None)
        breaker = getattr(pool, "breaker", None)
        if pool is None or breaker is None:
            return
        for name, doc, value in (
            (
                "sip2_upstream_connections",
                "Connections open to the ILS's SIP2 server.",
                pool.open_connections,
            ),
            ("sip2_upstream_idle_connections", "Idle pooled ILS connections.", len(pool._idle)),
            ("sip2_upstream_in_flight", "Requests waiting on the ILS now.", pool._in_flight),
            (
                "sip2_upstream_waiting",
                "Requests waiting for a pooled connection.",
                len(pool._waiters),
            ),
        ):
            gauge = GaugeMetricFamily(f"{PREFIX}_{name}", doc)
            gauge.add_metric([], value)
            yield gauge
        for stat, count in dict(pool.stats).items():
            counter = CounterMetricFamily(
                f"{PREFIX}_sip2_upstream_{stat}", f"ILS SIP2 {stat} since start."
            )
            counter.add_metric([], count)
            yield counter
        state = GaugeMetricFamily(
            f"{PREFIX}_sip2_upstream_breaker_state",
            "Circuit breaker in front of the ILS: 1 for its current state.",
            labels=["state"],
        )
        for candidate in ("closed", "open", "half_open"):
            state.add_metric([candidate], 1.0 if breaker.state.value == candidate else 0.0)
        yield state


def open_connections(listener: Listener) -> int | None:
    """Connections a front end holds open now; None for one without connections (RADIUS)."""
    for attribute in ("connections", "_connections"):  # LDAP, SIP2
        held = getattr(listener, attribute, None)
        if held is not None:
            return len(held)
    server = getattr(listener, "server", None)  # the portal's uvicorn server
    state = getattr(server, "server_state", None)
    if state is not None:
        return len(state.connections)
    return None


def drop_label(reason: str) -> str:
    """A bounded label from a drop reason: the text before any detail, snake-cased."""
    head = reason.partition(":")[0].partition("(")[0].strip().lower()
    words = [w for w in head.replace("-", "_").split() if not w.isdigit()]
    return "_".join(words) or "other"
