"""Guessing limits: per card, per source address, and a global failure-rate guard.

Three layers, because a four-digit PIN has only 9,900 allowed values:
- per card: a few free failures, then growing delays (attempts inside the delay are refused
  without checking the PIN), then a lock for a configured time (0 = until staff clear it);
- per source: too many failures from one address within a window blocks that address a while;
- global: one PIN sprayed over sequential barcodes defeats per-card limits, so when failures
  across all cards reach a rate, sources that failed recently are refused until the window
  drains (see `GuessGuard` for the scope; patrons whose credentials are in the verified cache,
  and sources that have not failed, still get in).

Reserve before the check, settle after. Every PIN evaluation first takes a reservation
(`reserve`) that counts as a failure-to-be against the card, the source and the global guard;
the store is asked only with a ticket in hand, and the ticket is settled with what the store
said (`settle`). So requests that arrive together cannot all pass a check that only a recorded
failure would close: at most `card_lock_after` evaluations are ever made for one card before it
locks, whatever arrives at once. The full contract, written for other backends (Redis, a shared
SQLite file), is `GuessGuard` below and docs/throttle-api.md.

This module is pure: the clock is passed in. `Throttle` keeps counters in memory (a check is a
dict lookup) and is authoritative for one process; every change of a counter that must
outlive a restart is written behind to a `ThrottleBackend`, so locks survive a restart.
Reservations are never persisted: a restart releases them all.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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
    # A reservation not settled by then belongs to a dead process or a lost request: a shared
    # backend drops it (released, not counted). Longer than any check may take: the core
    # waits at most `throttle.check_wait_deadline` for a slot and `auth.STORE_DEADLINE` (60 s)
    # for the store.
    reservation_ttl: float = 120.0


@dataclass(slots=True)
class Counter:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0  # delay or lock end; math.inf = until cleared
    locked: bool = False  # True once the hard lock was reached
    inflight: int = 0  # reservations not yet settled (never persisted)


@dataclass(frozen=True, slots=True)
class Refusal:
    scope: str  # "card", "source", "global"
    reason: str
    retry_after: float | None  # None: until staff clear it
    # True when nothing is wrong with this request except that others like it are being
    # checked right now (a budget fully reserved by checks in flight): the core answers BUSY,
    # which every protocol maps to "try again", not to "locked".
    busy: bool = False


class Result(enum.Enum):
    """What a reserved evaluation turned out to be."""

    SUCCESS = "success"  # the PIN was right: the card's counter is reset
    FAILURE = "failure"  # a wrong PIN, or no such card: counted on card, source and global
    RELEASE = "release"  # nothing was evaluated (store unavailable, shed, cancelled, crashed)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One reserved PIN evaluation. `id` is unique among live reservations (a shared backend
    keys the reservation by it); `expires` is when a backend may drop it unsettled."""

    id: str
    barcode: str
    source: str
    expires: float


class GuardUnavailable(Exception):
    """A shared backend cannot reach its state: `reserve` raises it (nothing reserved) and the
    core answers STORE_UNAVAILABLE. The message must not contain a PIN or a secret."""


@dataclass(frozen=True, slots=True)
class Settled:
    """What settling changed: `card_locked` is True when this failure locked the card (the
    core then drops the card from the verified cache and audits `card_locked`)."""

    card_locked: bool = False


UNCHANGED = Settled(False)
LOCKED_NOW = Settled(True)


@runtime_checkable
class GuessGuard(Protocol):
    """The guessing limits as the Authenticator uses them. `Throttle` (memory, one process)
    implements it; a shared backend (Redis, SQLite file) implements the same rules atomically
    for several processes and hosts. docs/throttle-api.md states every rule in prose.

    Budgets (`committed` = failures counted + reservations in flight):
    - card: refused while its delay or lock runs; refused when committed >= card_lock_after
      (fully reserved); refused when committed >= card_free_failures and a reservation is
      already in flight (the delay stage checks one PIN at a time). Unknown barcodes have
      cards too (a spray over non-existent barcodes counts).
    - source: refused while blocked; BUSY when committed >= source_max_failures.
    - global: "up" when failures in the window + reservations in flight (all sources)
      >= global_max_failures. While up, a source that failed within global_window is refused
      (BUSY while the failures alone are under the threshold), a source with a reservation in
      flight gets BUSY, any other source is let through.
    """

    rules: ThrottleRules

    async def reserve(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        """Atomically: the refusal `check` would give, or a reservation against the card,
        the source and the global guard. Raises `GuardUnavailable` when a shared state
        cannot be reached. If cancelled, must not leave a reservation behind (or the TTL
        reclaims it)."""
        ...

    async def settle(self, ticket: Ticket, result: Result, now: float) -> Settled:
        """Return the reservation (at most once per ticket) and apply the result (a FAILURE
        counts even when the reservation had expired). Never raises; must complete even if
        the awaiting task is cancelled meanwhile (the core awaits it on the way out of a
        cancelled check)."""
        ...

    def check(self, barcode: str, source: str, now: float) -> Refusal | None:
        """Why an attempt would be refused now (sync, local, no I/O: the cached fast path asks
        it). May be stale for a shared backend; `reserve` is the authority."""
        ...

    def check_source(self, source: str, now: float) -> Refusal | None:
        """The source and global rules alone (secrets that are not a card's PIN)."""
        ...

    def record_failure(self, barcode: str | None, source: str, now: float) -> None:
        """Count a failure that was not reserved (a vendor's service secret, synchronous
        check): card (if given), source and global. Sync; a shared backend may write behind."""
        ...

    def record_bad_input(self, source: str, now: float) -> None:
        """A malformed barcode or PIN: counts on the source only (no card, not global)."""
        ...

    def card_locked(self, barcode: str, now: float) -> bool: ...

    def failures(self, barcode: str, now: float) -> int: ...

    def clear(self, barcode: str) -> bool:
        """Staff clear a card: failures, delay and lock go (reservations in flight stay)."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class ThrottleSnapshot:
    """Counts of the guessing limits' state at one moment (metrics; never per request)."""

    cards_locked: int
    cards_delayed: int
    sources_blocked: int
    global_failures: int
    spray_guard_active: bool
    inflight: int


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

_CARD_BUSY = "PIN checks for this card are in progress"
_SOURCE_BUSY = "this address's failure budget is taken by checks in progress"
_GLOBAL = "failed-attempt rate too high"


class Throttle:
    """In-memory `GuessGuard`, authoritative for one process, written behind to a backend."""

    def __init__(self, rules: ThrottleRules, backend: ThrottleBackend | None = None) -> None:
        self.rules = rules
        self.backend: ThrottleBackend = backend or MemoryBackend()
        # Two tables keyed by the bare barcode and address (no key string is built per check:
        # every authentication looks both up); the backend's keys carry the prefix.
        self._cards: dict[str, Counter] = {}
        self._sources: dict[str, Counter] = {}
        for key, counter in self.backend.load().items():
            counter.inflight = 0
            if key.startswith(CARD):
                self._cards[key[len(CARD) :]] = counter
            elif key.startswith(SOURCE):
                self._sources[key[len(SOURCE) :]] = counter
        self._global: deque[float] = deque()
        self._global_inflight = 0
        self._open: set[str] = set()  # ids of reservations not yet settled
        self._ids = itertools.count()
        self._since_sweep = 0

    def __len__(self) -> int:
        """How many counters are kept (cards and sources)."""
        return len(self._cards) + len(self._sources)

    @property
    def inflight(self) -> int:
        """Reservations not yet settled (all cards and sources)."""
        return self._global_inflight

    def snapshot(self, now: float) -> ThrottleSnapshot:
        """This process's view of the guessing limits, for the metrics scrape (read at scrape
        time, so the request path pays nothing for it)."""
        cards = list(self._cards.values())
        return ThrottleSnapshot(
            cards_locked=sum(1 for c in cards if c.locked and c.blocked_until > now),
            cards_delayed=sum(1 for c in cards if not c.locked and c.blocked_until > now),
            sources_blocked=sum(1 for s in list(self._sources.values()) if s.blocked_until > now),
            global_failures=len(self._global),
            spray_guard_active=self.global_pressure(now),
            inflight=self._global_inflight,
        )

    # -- queries ----------------------------------------------------------------------------
    def check(self, barcode: str, source: str, now: float) -> Refusal | None:
        """Why this attempt must be refused before any PIN work, or None."""
        # `_card` and `_source` with their lookups first: a card or address that never failed
        # (every cached answer) costs two dict misses here, not two calls.
        if barcode in self._cards and (card := self._card(barcode, now)) is not None:
            refusal = self._card_refusal(card, now)
            if refusal is not None:
                return refusal
        if source not in self._sources and not self._global and not self._global_inflight:
            return None  # what check_source would say: no counter and no global pressure
        return self.check_source(source, now)

    def _card_refusal(self, card: Counter, now: float) -> Refusal | None:
        r = self.rules
        if card.blocked_until > now:
            if card.locked:
                retry = None if math.isinf(card.blocked_until) else card.blocked_until - now
                return Refusal("card", "card locked after too many failed PINs", retry)
            return Refusal("card", "too many failed PINs, wait", card.blocked_until - now)
        # Fully reserved (committed >= card_lock_after), or in the delay stage (committed >=
        # card_free_failures) with a check already running: both need a reservation in flight.
        floor = min(r.card_lock_after, r.card_free_failures)
        if card.inflight and card.failures + card.inflight >= floor:
            return Refusal("card", _CARD_BUSY, max(r.card_delay_base, 1.0))
        return None

    def check_source(self, source: str, now: float) -> Refusal | None:
        """The source and global guards alone (secrets that are not a card's PIN)."""
        src = self._source(source, now) if source in self._sources else None
        if src is not None:
            if src.blocked_until > now:
                return Refusal(
                    "source", "too many failures from this address", src.blocked_until - now
                )
            if src.inflight and src.failures + src.inflight >= self.rules.source_max_failures:
                return Refusal("source", _SOURCE_BUSY, 1.0, busy=True)
        if (self._global or self._global_inflight) and self.global_pressure(now):
            if src is None:
                return None  # an address that never failed (nor has a check running) passes
            window = self.rules.global_window
            recent = src.last_failure > now - window
            if recent and len(self._global) >= self.rules.global_max_failures:
                return Refusal("global", _GLOBAL, self._global[0] + window - now)
            if recent or src.inflight:  # up only with checks in flight: try again
                return Refusal("global", _GLOBAL, 1.0, busy=True)
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
        """Whether the global guard is up: failures in the window plus checks in flight."""
        self._drain(now)
        return len(self._global) + self._global_inflight >= self.rules.global_max_failures

    # -- reservations -----------------------------------------------------------------------
    async def reserve(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        """A reservation against card, source and global, or the refusal. No suspension
        happens here, so check-and-take is atomic on the event loop."""
        return self.reserve_now(barcode, source, now)

    def reserve_now(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        refusal = self.check(barcode, source, now)
        if refusal is not None:
            return refusal
        card = self._cards.get(barcode)
        if card is None:
            card = self._cards[barcode] = Counter()
        card.inflight += 1
        src = self._sources.get(source)
        if src is None:
            src = self._sources[source] = Counter()
        src.inflight += 1
        self._global_inflight += 1
        ticket = Ticket(str(next(self._ids)), barcode, source, now + self.rules.reservation_ttl)
        self._open.add(ticket.id)
        return ticket

    async def settle(self, ticket: Ticket, result: Result, now: float) -> Settled:
        return self.settle_now(ticket, result, now)

    def settle_now(self, ticket: Ticket, result: Result, now: float) -> Settled:
        """Return the reservation (once) and apply the result."""
        if ticket.id in self._open:
            self._open.discard(ticket.id)
            self._global_inflight -= 1
            card = self._cards.get(ticket.barcode)
            if card is not None and card.inflight:
                card.inflight -= 1
            src = self._sources.get(ticket.source)
            if src is not None and src.inflight:
                src.inflight -= 1
        if result is Result.FAILURE:
            locked = self._count(ticket.barcode, ticket.source, now, count_global=True)
            return LOCKED_NOW if locked else UNCHANGED
        if result is Result.SUCCESS:
            self.record_success(ticket.barcode, now)
        self._tidy(ticket.barcode, ticket.source)
        return UNCHANGED

    def _tidy(self, barcode: str, source: str) -> None:
        """Drop counters that only existed to hold a reservation (nothing to persist)."""
        card = self._cards.get(barcode)
        if card is not None and not (card.inflight or card.failures or card.blocked_until):
            del self._cards[barcode]
        src = self._sources.get(source)
        if src is not None and not (src.inflight or src.failures or src.blocked_until):
            del self._sources[source]

    # -- updates ----------------------------------------------------------------------------
    def record_failure(self, barcode: str | None, source: str, now: float) -> None:
        """An unreserved failure (service secrets, tests): card, source and global."""
        self._count(barcode, source, now, count_global=True)

    def record_bad_input(self, source: str, now: float) -> None:
        """A malformed barcode or PIN counts against its source only."""
        self._count(None, source, now, count_global=False)

    def _count(self, barcode: str | None, source: str, now: float, *, count_global: bool) -> bool:
        """Count one failure; True when it locked the card."""
        r = self.rules
        locked = False
        if barcode is not None:
            card = self._card(barcode, now) or Counter()
            card.failures += 1
            card.last_failure = now
            if card.failures >= r.card_lock_after:
                locked = True
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
        if count_global:
            self._drain(now)
            self._global.append(now)
        self._since_sweep += 1
        if self._since_sweep >= self.SWEEP_EVERY:
            self.sweep(now)
        return locked

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
        """A right PIN resets the card's counter (reservations in flight stay counted)."""
        card = self._cards.get(barcode)
        if card is None:
            return
        persisted = bool(card.failures or card.blocked_until)
        if card.inflight:
            self._cards[barcode] = Counter(inflight=card.inflight)
        else:
            del self._cards[barcode]
        if persisted:
            self.backend.save(CARD + barcode, None)

    def clear(self, barcode: str) -> bool:
        """Staff clear a card's lock. True when there was something to clear."""
        card = self._cards.pop(barcode, None)
        existed = card is not None and bool(card.failures or card.blocked_until)
        if card is not None and card.inflight:
            self._cards[barcode] = Counter(inflight=card.inflight)
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
        """The counter, or None after forgetting it when its delay is over, it has been quiet
        long enough and no reservation holds it. A counter holding only reservations (no
        failures yet) starts over from zero failures when it had been quiet."""
        if counter.blocked_until <= now and now - counter.last_failure > quiet:
            if counter.inflight:
                if counter.failures:
                    counter.failures = 0
                    counter.locked = False
                    self.backend.save(prefix + name, None)
                return counter
            del table[name]
            if counter.failures or counter.blocked_until:
                self.backend.save(prefix + name, None)
            return None
        return counter

    def _drain(self, now: float) -> None:
        horizon = now - self.rules.global_window
        while self._global and self._global[0] <= horizon:
            self._global.popleft()

    def close(self) -> None:
        self.backend.close()
