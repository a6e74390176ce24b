"""The guessing limits (`GuessGuard`) shared by every worker and host through Redis.

Every decision is one Lua script (`redis_throttle.lua`) run atomically by Redis: reserve-before-
check and settle-after, the same rules as the in-memory `Throttle`, so 12 wrong PINs sent to two
hosts at once evaluate at most `card_lock_after` of them. Nothing is read, changed in Python and
written back.

The synchronous questions (`check`, the cached fast path) answer from a local mirror of the
refusals Redis gave this process (a locked card is then refused without a round trip), dropped
when any process clears the card (the bus's `clear_lock`). A cache hit therefore needs no Redis
call at all.

When Redis cannot be reached (`[state] on_state_unavailable`):
- `refuse`: `reserve` raises `StateUnavailable` (a `GuardUnavailable`): every front end gives
  its store-unavailable answer;
- `local`: this process counts alone, in an in-memory `Throttle` whose card, source and global
  thresholds are divided by `hosts` x this host's workers, so all processes together still allow
  no more than the configured budget. Loud log line and a counter (`local_decisions`).
Either way a probe goes to Redis every `retry_seconds`; when it answers again the shared
counters are used again without a restart, and settlements that could not be sent meanwhile are
sent (a settlement is applied once per ticket whatever the retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import uuid
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import structlog

from bridge.core.throttle import (
    Counter,
    GuardUnavailable,
    Refusal,
    Result,
    Settled,
    Throttle,
    ThrottleRules,
    Ticket,
)
from bridge.state.bus import Bus
from bridge.state.redis_client import UNAVAILABLE, Availability

log = structlog.get_logger("bridge.state")

SCRIPT = (Path(__file__).with_name("redis_throttle.lua")).read_text(encoding="utf-8")
FOREVER = 1e299  # the script's "until cleared" (1e300) and anything above this
LOCAL = "L"  # ticket ids of the local fallback start with it
MAX_MIRROR = 100_000
MAX_UNSENT = 10_000

_CARD = {
    "locked": "card locked after too many failed PINs",
    "wait": "too many failed PINs, wait",
    "busy": "PIN checks for this card are in progress",
}
_SOURCE = {
    "blocked": "too many failures from this address",
    "busy": "this address's failure budget is taken by checks in progress",
}
_GLOBAL = "failed-attempt rate too high"


class StateUnavailable(GuardUnavailable):
    """The shared state cannot be reached and `on_state_unavailable = "refuse"`."""


def local_rules(rules: ThrottleRules, share: int) -> ThrottleRules:
    """The thresholds one process may use alone when `share` processes fall back at once."""
    if share <= 1:
        return rules
    return dataclasses.replace(
        rules,
        card_lock_after=max(1, rules.card_lock_after // share),
        card_free_failures=min(
            rules.card_free_failures, max(0, rules.card_lock_after // share - 1)
        ),
        source_max_failures=max(1, rules.source_max_failures // share),
        global_max_failures=max(1, rules.global_max_failures // share),
    )


def _refusal(reply: list[Any]) -> Refusal:
    scope, kind, retry_text = (x.decode() if isinstance(x, bytes) else str(x) for x in reply[:3])
    retry: float | None = float(retry_text)
    if scope == "card":
        if kind == "locked" and retry is not None and retry < 0:
            retry = None
        return Refusal("card", _CARD.get(kind, _CARD["locked"]), retry)
    if scope == "source":
        return Refusal("source", _SOURCE.get(kind, _SOURCE["blocked"]), retry, busy=kind == "busy")
    return Refusal("global", _GLOBAL, retry, busy=kind == "busy")


class RedisGuard:
    """`GuessGuard` on Redis; see the module docstring."""

    def __init__(
        self,
        rules: ThrottleRules,
        client: aioredis.Redis,
        *,
        prefix: str,
        bus: Bus,
        fallback: str = "refuse",
        share: int = 1,
        retry_seconds: float = 1.0,
    ) -> None:
        self.rules = rules
        self.client = client
        self.prefix = prefix
        self.bus = bus
        self.fallback = fallback
        self.local = Throttle(local_rules(rules, share))
        self.availability = Availability(retry_seconds, "redis")
        self.availability.on_change.append(self._changed)
        self.local_decisions = 0  # decisions made by the local fallback (a metric)
        self.round_trips = 0  # Redis calls made (the bench reports them per request)
        self._script = client.register_script(SCRIPT)
        self._args = [
            rules.card_free_failures,
            rules.card_delay_base,
            rules.card_delay_max,
            rules.card_lock_after,
            rules.card_lock_seconds,
            rules.card_forget_after,
            rules.source_max_failures,
            rules.source_window,
            rules.source_block_seconds,
            rules.global_max_failures,
            rules.global_window,
            rules.reservation_ttl,
        ]
        self._cards: OrderedDict[str, tuple[float, Refusal]] = OrderedDict()  # mirror
        self._sources: OrderedDict[str, tuple[float, Refusal]] = OrderedDict()
        self._unsent: deque[tuple[Ticket, Result, float]] = deque(maxlen=MAX_UNSENT)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._prober: asyncio.Future[None] | None = None

    # -- keys -------------------------------------------------------------------------------
    def _keys(self, barcode: str, source: str, ticket: str = "") -> list[str]:
        p = self.prefix
        return [
            f"{p}c:{barcode}",
            f"{p}ci:{barcode}",
            f"{p}s:{source}",
            f"{p}si:{source}",
            f"{p}gf",
            f"{p}gi",
            f"{p}t:{ticket}",
        ]

    async def _run(
        self, op: str, barcode: str, source: str, now: float, ticket: str, arg: Any
    ) -> list[Any]:
        self.round_trips += 1
        keys = self._keys(barcode, source, ticket)
        reply = await self._script(keys=keys, args=[op, now, ticket, arg, *self._args])
        return list(reply)

    # -- reservations -----------------------------------------------------------------------
    async def reserve(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        if self.availability.worth_trying():
            ticket_id = uuid.uuid4().hex
            try:
                reply = await self._run(
                    "reserve", barcode, source, now, ticket_id, now + self.rules.reservation_ttl
                )
            except UNAVAILABLE as exc:
                self.availability.failed(exc)
            else:
                self.availability.worked()
                if reply[0] == b"ok":
                    return Ticket(ticket_id, barcode, source, now + self.rules.reservation_ttl)
                refusal = _refusal(reply)
                self._remember(barcode, source, refusal, now)
                return refusal
        return self._fallback_reserve(barcode, source, now)

    def _fallback_reserve(self, barcode: str, source: str, now: float) -> Ticket | Refusal:
        if self.fallback != "local":
            raise StateUnavailable("shared guessing state unavailable")
        self.local_decisions += 1
        if self.local_decisions % 1000 == 1:
            log.error(
                "state_local_fallback",
                detail="Redis unreachable: counting in this process with divided thresholds",
                decisions=self.local_decisions,
                card_lock_after=self.local.rules.card_lock_after,
            )
        got = self.local.reserve_now(barcode, source, now)
        if isinstance(got, Ticket):
            return dataclasses.replace(got, id=LOCAL + got.id)
        return got

    async def settle(self, ticket: Ticket, result: Result, now: float) -> Settled:
        if ticket.id.startswith(LOCAL):
            return self.local.settle_now(dataclasses.replace(ticket, id=ticket.id[1:]), result, now)
        try:
            reply = await asyncio.shield(self._settle(ticket, result, now))
        except UNAVAILABLE as exc:
            self.availability.failed(exc)
            self._unsent.append((ticket, result, now))
            if result is Result.FAILURE:  # counted here at once, and in Redis when it is back
                self.local.record_failure(ticket.barcode, ticket.source, now)
                if self.local.card_locked(ticket.barcode, now):
                    return Settled(True)
            return Settled(False)
        self.availability.worked()
        locked = reply[1] == b"1"
        if locked:
            self._remember(
                ticket.barcode, ticket.source, Refusal("card", _CARD["locked"], None), now
            )
        return Settled(locked)

    async def _settle(self, ticket: Ticket, result: Result, now: float) -> list[Any]:
        return await self._run(
            "settle", ticket.barcode, ticket.source, now, ticket.id, result.value
        )

    def _changed(self, up: bool) -> None:
        if not up and (self._prober is None or self._prober.done()):
            self._prober = asyncio.ensure_future(self._probe())
        elif self._unsent:
            self._spawn(self._resend())

    async def _probe(self) -> None:
        """While Redis is down, ask it every `retry_seconds` whether it is back, so recovery
        does not wait for a request that misses the cache."""
        while not self.availability.up:
            await asyncio.sleep(self.availability.retry_seconds)
            try:
                await self.client.ping()
            except UNAVAILABLE:
                continue
            self.availability.worked()

    async def _resend(self) -> None:
        """Settlements made while Redis was away, applied now (once each)."""
        sent = 0
        while self._unsent:
            ticket, result, now = self._unsent[0]
            try:
                await self._settle(ticket, result, now)
            except UNAVAILABLE as exc:
                self.availability.failed(exc)
                return
            self._unsent.popleft()
            sent += 1
        log.warning("state_settlements_resent", count=sent)

    # -- the synchronous view (no I/O) -------------------------------------------------------
    def _remember(self, barcode: str, source: str, refusal: Refusal, now: float) -> None:
        if refusal.busy or refusal.scope == "global":
            return
        until = math.inf if refusal.retry_after is None else now + refusal.retry_after
        table = self._cards if refusal.scope == "card" else self._sources
        if refusal.scope == "card" and refusal.reason == _CARD["busy"]:
            return
        table[barcode if refusal.scope == "card" else source] = (until, refusal)
        while len(table) > MAX_MIRROR:
            table.popitem(last=False)

    def _mirrored(
        self, table: OrderedDict[str, tuple[float, Refusal]], name: str, now: float
    ) -> Refusal | None:
        entry = table.get(name)
        if entry is None:
            return None
        until, refusal = entry
        if until <= now:
            del table[name]
            return None
        retry = None if math.isinf(until) else until - now
        return dataclasses.replace(refusal, retry_after=retry)

    def check(self, barcode: str, source: str, now: float) -> Refusal | None:
        if not self.availability.up and self.fallback == "local":
            return self.local.check(barcode, source, now)
        if barcode not in self._cards and source not in self._sources:
            return None  # nothing mirrored for either (every cached answer): no calls
        return self._mirrored(self._cards, barcode, now) or self.check_source(source, now)

    def check_source(self, source: str, now: float) -> Refusal | None:
        if not self.availability.up and self.fallback == "local":
            return self.local.check_source(source, now)
        return self._mirrored(self._sources, source, now)

    def card_locked(self, barcode: str, now: float) -> bool:
        refusal = self._mirrored(self._cards, barcode, now)
        return refusal is not None and refusal.reason == _CARD["locked"]

    def failures(self, barcode: str, now: float) -> int:
        """Local knowledge only (see `peek` for Redis's)."""
        return 1 if self.card_locked(barcode, now) else 0

    # -- writes nobody awaits (the interface's synchronous updates) --------------------------
    def record_failure(self, barcode: str | None, source: str, now: float) -> None:
        self._spawn(self._write("fail", barcode, source, now))

    def record_bad_input(self, source: str, now: float) -> None:
        self._spawn(self._write("bad_input", None, source, now))

    async def _write(self, op: str, barcode: str | None, source: str, now: float) -> None:
        if not self.availability.worth_trying():
            if op == "fail":
                self.local.record_failure(barcode, source, now)
            else:
                self.local.record_bad_input(source, now)
            return
        try:
            reply = await self._run(
                op, barcode or "", source, now, uuid.uuid4().hex, "card" if barcode else "none"
            )
        except UNAVAILABLE as exc:
            self.availability.failed(exc)
            return
        self.availability.worked()
        if barcode is not None and reply[1] == b"1":
            self._remember(barcode, source, Refusal("card", _CARD["locked"], None), now)

    def clear(self, barcode: str) -> bool:
        """Staff clear a card: in Redis, here, and (through the bus) in every other process's
        mirror. Returns at once; `aclose`/`settled` wait for the write."""
        self.forget(barcode)
        self.local.clear(barcode)
        self._spawn(self.clear_async(barcode))
        return True

    async def clear_async(self, barcode: str) -> bool:
        reply = await self._run("clear", barcode, "", 0.0, "", "")
        self.bus.publish("clear_lock", barcode)
        return bool(reply[1] == b"1")

    async def peek(self, barcode: str, now: float) -> tuple[int, bool]:
        """(failures, locked) as Redis has them (the CLI's `patron show`)."""
        reply = await self._run("peek", barcode, "", now, "", "")
        return int(float(reply[0])), reply[1] == b"1"

    async def counter_now(self, barcode: str, now: float) -> Counter | None:
        """The card's counter as Redis has it, with the end of its lock or delay (the staff
        desk's standing panel); None when Redis holds nothing for it."""
        reply = await self._run("peek", barcode, "", now, "", "")
        failures, locked, retry = int(float(reply[0])), reply[1] == b"1", float(reply[2])
        if not failures and retry <= 0:
            return None
        return Counter(failures=failures, blocked_until=now + retry, locked=locked)

    def forget(self, barcode: str) -> None:
        """Another process cleared this card: drop the local copy of its refusal."""
        self._cards.pop(barcode, None)
        self.local.clear(barcode)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("state_write_failed", error=type(exc).__name__)

    async def settled(self) -> None:
        """Wait for every write started so far."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        with contextlib.suppress(*UNAVAILABLE):
            async with asyncio.timeout(5):  # writes to a Redis that is down are given up
                await self.settled()
