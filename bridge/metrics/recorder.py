"""Decision counts and latency histograms, fed from the audit's decision call.

Every authentication on every protocol passes `Audit.decision` exactly once, so this is the one
hook (no front end counts anything). The work per decision is two dict updates and a bisect:
plain integers, no locks, no label lookups; prometheus-client objects are built only when
Prometheus scrapes (`collectors.py`). The event loop is the only writer, and a scrape runs on
the same loop, so no lock is needed either.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from bridge.core.patron import Context, Decision, Outcome

#: Histogram bounds in seconds: a cached answer takes microseconds, a KDF check milliseconds, an
#: ILS over SIP2 up to its timeout.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

CACHED = "cached"  # answered before the store: a cache hit, a card in its lock, bad input
STORE = "store"  # the store (KDF or ILS) was asked


@dataclass(slots=True)
class Histogram:
    """Counts per bucket (not cumulative; the last slot is +Inf) and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BOUNDS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """`(le, count)` pairs as Prometheus wants them, +Inf last."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*LATENCY_BOUNDS, float("inf")), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return out


# Outcomes a decision settled before the store can only have with a right PIN, i.e. from the
# verified cache (a locked card or bad input are the other settled outcomes).
_PIN_OK = frozenset(
    {Outcome.ACCEPTED, Outcome.CARD_BLOCKED, Outcome.CARD_EXPIRED, Outcome.FINES_OVER_LIMIT}
)
_OUTCOMES = {id(outcome): outcome for outcome in Outcome}  # members are immortal singletons
_SLOTS = len(LATENCY_BOUNDS) + 1


@dataclass(slots=True)
class Recorder:
    """What the collectors read: decisions with their latency, and each store call's latency
    and errors.

    Per decision: one dict lookup keyed by (protocol, client, outcome, path), then a bucket
    increment. The outcome enters the key by `id()`: an Enum member hashes through Python code,
    an int in C. Counts per outcome, latency per protocol and path, cache hits and misses are
    all sums over these slots, done at scrape time."""

    slots: dict[tuple[str, str, int, str], list[float]] = field(default_factory=dict)
    store_calls: dict[str, Histogram] = field(default_factory=dict)
    store_errors: dict[str, int] = field(default_factory=dict)

    def observe(self, ctx: Context, decision: Decision, latency: float, path: str) -> None:
        """Called by `Audit.decision` for every authentication decision."""
        key = (ctx.protocol, ctx.client, id(decision.outcome), path)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = [0.0] * (_SLOTS + 1)  # bucket counts, then the sum
        slot[bisect_left(LATENCY_BOUNDS, latency)] += 1
        slot[_SLOTS] += latency

    # -- read at scrape time ----------------------------------------------------------------
    def decisions(self) -> dict[tuple[str, str, Outcome], int]:
        out: dict[tuple[str, str, Outcome], int] = {}
        for (protocol, client, outcome, _), slot in list(self.slots.items()):
            key = (protocol, client, _OUTCOMES[outcome])
            out[key] = out.get(key, 0) + int(sum(slot[:_SLOTS]))
        return out

    def latency(self) -> dict[tuple[str, str], Histogram]:
        out: dict[tuple[str, str], Histogram] = {}
        for (protocol, _, _, path), slot in list(self.slots.items()):
            histogram = out.setdefault((protocol, path), Histogram())
            for i in range(_SLOTS):
                histogram.counts[i] += int(slot[i])
            histogram.total += slot[_SLOTS]
        return out

    def cache(self) -> tuple[int, int]:
        """(hits, misses): right PINs settled before the store; decisions that reached it."""
        hits = misses = 0
        for (_, _, outcome, path), slot in list(self.slots.items()):
            count = int(sum(slot[:_SLOTS]))
            if path == STORE:
                misses += count
            elif _OUTCOMES[outcome] in _PIN_OK:
                hits += count
        return hits, misses

    def timed(
        self, name: str, call: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        """`call` (a store coroutine method) wrapped to record its latency and failures."""
        histogram = self.store_calls.setdefault(name, Histogram())
        self.store_errors.setdefault(name, 0)

        @wraps(call)
        async def timed_call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await call(*args, **kwargs)
            except Exception:
                self.store_errors[name] += 1
                raise
            finally:
                histogram.observe(time.perf_counter() - started)

        return timed_call


#: The store calls timed per call (the ones every store has).
STORE_CALLS = ("lookup", "verify_pin", "change_pin", "health")


def instrument_store(store: object, recorder: Recorder) -> list[str]:
    """Replace the store's own call methods on the instance with timed ones, so no plugin has to
    know about metrics. Returns the calls instrumented (none for a store that forbids it)."""
    done = []
    for name in STORE_CALLS:
        call = getattr(store, name, None)
        if call is None or getattr(call, "__wrapped__", None) is not None:
            continue
        try:
            setattr(store, name, recorder.timed(name, call))
        except AttributeError:  # __slots__: leave it untimed
            continue
        done.append(name)
    return done
