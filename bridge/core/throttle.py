"""Guessing limits: per card, per source address, and a global failure-rate guard.

Three layers, because a four-digit PIN has only 9,900 allowed values:
- per card: a few free failures, then growing delays (attempts inside the delay are refused
  without checking the PIN), then a lock for a configured time (0 = until staff clear it);
- per source: too many failures from one address within a window blocks that address a while;
- global: one PIN sprayed over sequential barcodes defeats per-card limits, so when failures
  across all cards exceed a rate, new attempts are refused until the window drains (patrons
  whose credentials are in the verified cache still get in).

This module is pure: the clock is passed in. Counters live in memory for speed and are written
behind to a `ThrottleBackend` so locks survive a restart.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    card_free_failures: int = 5
    card_delay_base: float = 1.0
    card_delay_max: float = 60.0
    card_lock_after: int = 10
    card_lock_seconds: float = 900.0  # 0: locked until staff clear it
    card_forget_after: float = 3600.0
    source_max_failures: int = 30
    source_window: float = 300.0
    source_block_seconds: float = 300.0
    global_max_failures: int = 300
    global_window: float = 60.0


@dataclass(slots=True)
class Counter:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0  # delay or lock end; math.inf = until cleared
    locked: bool = False  # True once the hard lock was reached


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # "card", "source", "global"
    reason: str
    retry_after: float | None  # None: until staff clear it


class ThrottleBackend(Protocol):
    """Where counters persist. Keys are `card:<barcode>` or `source:<address>`."""

    def load(self) -> dict[str, Counter]: ...

    def save(self, key: str, counter: Counter | None) -> None:
        """Persist (or delete, with None) without blocking the caller."""
        ...

    def close(self) -> None: ...


class MemoryBackend:
    def load(self) -> dict[str, Counter]:
        return {}

    def save(self, key: str, counter: Counter | None) -> None:
        return None

    def close(self) -> None:
        return None


CARD = "card:"
SOURCE = "source:"


class Throttle:
    def __init__(self, rules: ThrottleRules, backend: ThrottleBackend | None = None) -> None:
        self.rules = rules
        self.backend: ThrottleBackend = backend or MemoryBackend()
        # Two tables keyed by the bare barcode and address (no key string is built per check:
        # every authentication looks both up); the backend's keys carry the prefix.
        self._cards: dict[str, Counter] = {}
        self._sources: dict[str, Counter] = {}
        for key, counter in self.backend.load().items():
            if key.startswith(CARD):
                self._cards[key[len(CARD) :]] = counter
            elif key.startswith(SOURCE):
                self._sources[key[len(SOURCE) :]] = counter
        self._global: deque[float] = deque()
        self._since_sweep = 0

    def __len__(self) -> int:
        """How many counters are kept (cards and sources)."""
        return len(self._cards) + len(self._sources)

    # -- queries ----------------------------------------------------------------------------
    def check(self, barcode: str, source: str, now: float) -> Refusal | None:
        """Why this attempt must be refused before any PIN work, or None."""
        card = self._card(barcode, now)
        if card is not None and card.blocked_until > now:
            if card.locked:
                retry = None if math.isinf(card.blocked_until) else card.blocked_until - now
                return Refusal("card", "card locked after too many failed PINs", retry)
            return Refusal("card", "too many failed PINs, wait", card.blocked_until - now)
        return self.check_source(source, now)

    def check_source(self, source: str, now: float) -> Refusal | None:
        """The source and global guards alone (secrets that are not a card's PIN)."""
        src = self._source(source, now)
        if src is not None and src.blocked_until > now:
            return Refusal("source", "too many failures from this address", src.blocked_until - now)
        if self._global and self.global_pressure(now):
            oldest = self._global[0]
            return Refusal(
                "global", "failed-attempt rate too high", oldest + self.rules.global_window - now
            )
        return None

    def card_locked(self, barcode: str, now: float) -> bool:
        card = self._card(barcode, now)
        return card is not None and card.locked and card.blocked_until > now

    def failures(self, barcode: str, now: float) -> int:
        card = self._card(barcode, now)
        return 0 if card is None else card.failures

    def card_counter(self, barcode: str, now: float) -> Counter | None:
        """A copy of the card's live counter (the staff desk shows failures and lock end)."""
        card = self._card(barcode, now)
        return None if card is None else dataclasses.replace(card)

    def global_pressure(self, now: float) -> bool:
        self._drain(now)
        return len(self._global) >= self.rules.global_max_failures

    # -- updates ----------------------------------------------------------------------------
    def record_failure(self, barcode: str | None, source: str, now: float) -> None:
        r = self.rules
        if barcode is not None:
            card = self._card(barcode, now) or Counter()
            card.failures += 1
            card.last_failure = now
            if card.failures >= r.card_lock_after:
                card.locked = True
                card.blocked_until = now + r.card_lock_seconds if r.card_lock_seconds else math.inf
            elif card.failures > r.card_free_failures:
                extra = card.failures - r.card_free_failures - 1
                card.blocked_until = now + min(r.card_delay_base * 2**extra, r.card_delay_max)
            self._cards[barcode] = card
            self.backend.save(CARD + barcode, card)
        src = self._source(source, now) or Counter()
        src.failures += 1
        src.last_failure = now
        if src.failures >= r.source_max_failures:
            src.blocked_until = now + r.source_block_seconds
            src.failures = 0
        self._sources[source] = src
        self.backend.save(SOURCE + source, src)
        self._drain(now)
        self._global.append(now)
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self.sweep(now)

    SWEEP_EVERY = 1000

    def sweep(self, now: float) -> int:
        """Forget every counter whose delay is over and whose last failure is old, so a spray
        over a million barcodes cannot grow memory without bound. Returns how many went."""
        self._since_sweep = 0
        before = len(self)
        for barcode in list(self._cards):
            self._card(barcode, now)
        for source in list(self._sources):
            self._source(source, now)
        return before - len(self)

    def record_success(self, barcode: str, now: float) -> None:
        """A right PIN resets the card's counter."""
        if self._cards.pop(barcode, None) is not None:
            self.backend.save(CARD + barcode, None)

    def clear(self, barcode: str) -> bool:
        """Staff clear a card's lock. True when there was something to clear."""
        existed = self._cards.pop(barcode, None) is not None
        self.backend.save(CARD + barcode, None)
        return existed

    # -- internals --------------------------------------------------------------------------
    def _card(self, barcode: str, now: float) -> Counter | None:
        counter = self._cards.get(barcode)
        if counter is None:
            return None
        return self._alive(self._cards, CARD, barcode, counter, now, self.rules.card_forget_after)

    def _source(self, source: str, now: float) -> Counter | None:
        counter = self._sources.get(source)
        if counter is None:
            return None
        return self._alive(self._sources, SOURCE, source, counter, now, self.rules.source_window)

    def _alive(
        self,
        table: dict[str, Counter],
        prefix: str,
        name: str,
        counter: Counter,
        now: float,
        quiet: float,
    ) -> Counter | None:
        """The counter, or None after forgetting it when its delay is over and it has been
        quiet long enough."""
        if counter.blocked_until <= now and now - counter.last_failure > quiet:
            del table[name]
            self.backend.save(prefix + name, None)
            return None
        return counter

    def _drain(self, now: float) -> None:
        horizon = now - self.rules.global_window
        while self._global and self._global[0] <= horizon:
            self._global.popleft()

    def close(self) -> None:
        self.backend.close()
