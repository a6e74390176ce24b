"""The Authenticator: the one entry point every front end calls.

    decision = await authenticator.authenticate(barcode, pin, Context(protocol, client, source))

Order of work, cheapest first, so a guesser never gets the KDF for free:
verified-credential cache (a hit skips the input checks it passed before) → input checks →
per-card lock/delay (a locked card is refused even on a cache hit) → per-source and global
guards → store (KDF in the hasher's pool, or the ILS) → the client's policy on the patron's
standing.
Requests with the same barcode and PIN that arrive while that pair is being checked (a
patron's phone and laptop joining the Wi-Fi at once, a NAS or a proxy retrying, EZproxy's
double submit) wait for that check instead of starting their own: when it succeeds they are
answered from the cache it filled. Without that, a right PIN arriving on a cold cache in a burst
was refused ("PIN checks for this card are in progress") once the burst's checks in flight
filled the card's free-failure budget. Only identical pairs wait: a different PIN takes its
own reservation as before, so the guessing limits are unchanged.
Every decision is audited with its latency. `settle` is the same first steps without the store,
for front ends that answer cached requests straight from their protocol callbacks. PIN changes,
resets, blocks and lock clearing also live here so that cache invalidation and auditing happen
in one place whoever asks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.core import one_time
from bridge.core.audit import Audit
from bridge.core.cache import VerifiedCache
from bridge.core.gate import Busy, Gate, GateLimits
from bridge.core.patron import ACCEPTED, ClientPolicy, Context, Decision, Outcome, Patron
from bridge.core.pin import HashFormatError, PinPolicy, PolicyResult
from bridge.core.secret import Secret
from bridge.core.store import (
    Capability,
    Health,
    NewPatron,
    NotSupported,
    OneTimePinStore,
    SearchableStore,
    Store,
    StoreUnavailable,
    WritableStore,
    barcode_canonicalizer,
    identifier_resolver,
)
from bridge.core.throttle import GuardUnavailable, GuessGuard, Refusal, Result, Ticket

MAX_BARCODE = 64
MAX_PIN = 128

log = structlog.get_logger("bridge.core")


async def in_task() -> None:
    """Make sure what follows runs inside an asyncio task.

    Front ends run `authenticate` inline from their protocol callbacks (`bridge.eager`) so a
    cached answer costs no task; that is only safe up to the first suspension. Stores may use
    `asyncio.timeout`, which refuses to run outside a task, so every path that reaches the
    store first yields once when there is no task: the eager runner then continues the rest in
    one. Cached answers never get here."""
    if asyncio.current_task() is None:
        await asyncio.sleep(0)


_MALFORMED_BARCODE = Decision(Outcome.BAD_INPUT, reason="malformed barcode")
_MALFORMED_PIN = Decision(Outcome.BAD_INPUT, reason="missing or malformed PIN")
_SHED = Decision(Outcome.BUSY, reason="too many PIN checks pending")
_NO_SLOT = Decision(Outcome.BUSY, reason="no PIN check slot within the deadline")
_STORE_ERROR = Decision(Outcome.STORE_UNAVAILABLE, reason="store error")
_STORE_LATE = Decision(Outcome.STORE_UNAVAILABLE, reason="store did not answer in time")
_GUARD_DOWN = Decision(Outcome.STORE_UNAVAILABLE, reason="guessing-limit state unavailable")
_HASH_UNREADABLE = Decision(Outcome.STORE_UNAVAILABLE, reason="stored PIN hash unreadable")

#: How many identical checks in flight one request waits for in turn before checking alongside
#: (a check that fails, e.g. the store is down, wakes its waiters, who then check themselves).
JOIN_LIMIT = 2

#: How long a PIN change, reset or block waits for the patron's sessions to be ended in the
#: shared session store before it is answered anyway (the store's own error is logged).
INVALIDATE_WAIT = 5.0

#: A store call is abandoned after this long (the reservation must be settled well before a
#: shared backend's `ThrottleRules.reservation_ttl` reclaims it).
STORE_DEADLINE = 60.0


def refused(refusal: Refusal) -> Decision:
    """A guessing limit's refusal as the decision: BUSY when only checks in flight stand in
    the way (try again), CARD_LOCKED otherwise."""
    outcome = Outcome.BUSY if refusal.busy else Outcome.CARD_LOCKED
    return Decision(outcome, reason=refusal.reason, retry_after=refusal.retry_after)


def where(exc: BaseException) -> str:
    """file:line where an exception was raised: for the log, without its message (a store's
    message could quote what it was given)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno}"


def valid_barcode(barcode: str) -> bool:
    return (
        0 < len(barcode) <= MAX_BARCODE
        and barcode.isascii()
        and barcode.isprintable()
        and (" " not in barcode)
    )


@dataclass(frozen=True, slots=True)
class ChangeResult:
    """The answer to a PIN change or reset: ok, or the outcome/policy reason that refused it."""

    ok: bool
    outcome: Outcome | None = None
    policy: PolicyResult | None = None
    reason: str = ""


class Authenticator:
    def __init__(
        self,
        store: Store,
        *,
        throttle: GuessGuard,
        cache: VerifiedCache,
        audit: Audit,
        policy: PinPolicy | None = None,
        clock: Callable[[], float] = time.time,
        today: Callable[[], dt.date] = dt.date.today,
        gate: Gate | None = None,
        store_deadline: float = STORE_DEADLINE,
    ) -> None:
        self.store = store
        self.throttle = throttle
        self.gate = gate or Gate(GateLimits())
        self.store_deadline = store_deadline
        self.busy = 0  # BUSY answers given (for metrics): shed, no slot, budgets in flight
        self.cache = cache
        self.audit = audit
        self.pin_policy = policy or PinPolicy()
        self.clock = clock
        self._own_today = today == dt.date.today
        self.today = self._today_cached if self._own_today else today
        self._today: tuple[float, dt.date] = (-1.0, dt.date.min)
        self._background: set[asyncio.Task[None]] = set()
        # Checks in flight: barcode -> {cache digest of barcode/PIN: done when it settles}.
        # Bounded by the gate (an entry lives only while its check holds a reservation).
        self._checking: dict[str, dict[bytes, asyncio.Future[None]]] = {}
        # e.g. the portal ends the patron's sessions; a hook whose work is remote (the shared
        # session store) returns its task, which the change paths wait for (`_invalidated`).
        self.on_invalidate: list[Callable[[str], asyncio.Future[None] | None]] = []
        # Resolved once: a store whose lookup is exact costs no call per request.
        self._canonical = barcode_canonicalizer(store)
        self._resolve = identifier_resolver(store)

    def canonical(self, barcode: str) -> str:
        """The store's canonical form of `barcode`: what throttle, locks, cache and audit key
        on, so `k19abc` and `K19ABC` are one card where the store's lookup says so."""
        return barcode if self._canonical is None else self._canonical(barcode)

    # -- the question every front end asks --------------------------------------------------
    async def authenticate(self, barcode: str, pin: Secret, ctx: Context) -> Decision:
        started = time.perf_counter()
        if self._canonical is not None:
            barcode = self._canonical(barcode)
        if self._resolve is not None:
            barcode = await self._resolved(self._resolve, barcode, ctx)
        decision = self._settle(barcode, pin, ctx)
        joined = 0
        while decision is None and joined < JOIN_LIMIT and await self._join(barcode, pin):
            joined += 1  # an identical check settled: its success is in the cache now
            decision = self._settle(barcode, pin, ctx)
        if decision is None:
            decision = await self._lead(barcode, pin, ctx)
            self.audit.decision(barcode, ctx, decision, time.perf_counter() - started, "store")
            return decision
        self.audit.decision(barcode, ctx, decision, time.perf_counter() - started)
        return decision

    def _in_flight(self, barcode: str, pin: Secret) -> asyncio.Future[None] | None:
        """The check of this exact barcode/PIN now in flight, if any."""
        checks = self._checking.get(barcode)
        if not checks:
            return None
        return checks.get(self.cache.digest(barcode, pin))

    async def _join(self, barcode: str, pin: Secret) -> bool:
        """Wait for the identical check in flight; False (without suspending) when there is
        none. Shielded: a waiter given up by its front end does not cancel the check."""
        future = self._in_flight(barcode, pin)
        if future is None:
            return False
        await asyncio.shield(future)
        return True

    async def _lead(self, barcode: str, pin: Secret, ctx: Context) -> Decision:
        """`_verify`, announced to identical requests arriving meanwhile (see `_join`)."""
        checks = self._checking.setdefault(barcode, {})
        digest = self.cache.digest(barcode, pin)
        if digest in checks:  # still in flight after JOIN_LIMIT waits: check alongside it
            return await self._verify(barcode, pin, ctx)
        future = checks[digest] = asyncio.get_running_loop().create_future()
        try:
            return await self._verify(barcode, pin, ctx)
        finally:
            del checks[digest]
            if not checks:
                del self._checking[barcode]
            future.set_result(None)

    def settle(self, barcode: str, pin: Secret, ctx: Context) -> Decision | None:
        """The decision, audited, when it needs no store: malformed input, a card in its lock
        or delay, or a cache hit. None when only `authenticate` can decide.

        Front ends ask this first, from their protocol callbacks: a self-check re-checking its
        patron or a controller re-authenticating a laptop is then answered without a coroutine,
        a task or a loop iteration. The same code runs first inside `authenticate`, so the two
        can never disagree."""
        if self._resolve is not None:
            return None  # the key is known only once the store has resolved the identifier
        started = time.perf_counter()
        if self._canonical is not None:
            barcode = self._canonical(barcode)
        decision = self._settle(barcode, pin, ctx)
        if decision is not None:
            self.audit.decision(barcode, ctx, decision, time.perf_counter() - started)
        return decision

    def _settle(self, barcode: str, pin: Secret, ctx: Context) -> Decision | None:
        now = self.clock()
        # The cache first: it finds nothing for a barcode it does not hold (a dict lookup, no
        # hashing), and what it holds passed the input checks when it was verified, so only
        # a miss needs them.
        entry = self.cache.lookup(barcode, pin, now)
        if entry is None:
            if not valid_barcode(barcode):
                self.throttle.record_bad_input(ctx.source, now)
                return _MALFORMED_BARCODE
            if not pin or len(pin) > MAX_PIN or pin.text() is None:
                self.throttle.record_bad_input(ctx.source, now)
                return _MALFORMED_PIN
            if barcode in self._checking and self._in_flight(barcode, pin) is not None:
                return None  # the same pair is being checked: `authenticate` waits for it
        refusal = self.throttle.check(barcode, ctx.source, now)
        if refusal is not None and (refusal.scope == "card" or entry is None):
            if refusal.busy:
                self.busy += 1
            return refused(refusal)
        if entry is None:
            return None
        # self.today(), inlined for the usual clock (every cached answer comes here)
        day = self._today
        fresh = self._own_today and time.monotonic() - day[0] < 1.0
        today = day[1] if fresh else self.today()
        memo = entry.standing
        if memo is not None and memo[0] is ctx.policy and memo[1] == today:
            return memo[2]
        decision = self._standing(entry.patron, ctx.policy, "verified (cached)")
        entry.standing = (ctx.policy, today, decision)
        return decision

    async def _resolved(
        self, resolve: Callable[[str], Awaitable[str | None]], identifier: str, ctx: Context
    ) -> str:
        """The canonical card number `identifier` names, for stores that accept several
        identifiers per patron (so a userid and a card number share one guess budget); the
        identifier itself when it names nothing, is malformed, its source is refused (no
        store work for it) or the store cannot answer now (the verification then says so)."""
        if not valid_barcode(identifier):
            return identifier
        if self.throttle.check_source(ctx.source, self.clock()) is not None:
            return identifier
        try:
            await in_task()
            card = await resolve(identifier)
        except StoreUnavailable:
            return identifier
        return identifier if card is None else self.canonical(card)

    async def _verify(self, barcode: str, pin: Secret, ctx: Context) -> Decision:
        """Reserve, ask the store, settle: the bounded, budgeted path to a PIN evaluation.

        The gate first (a flood is shed here at the cost of a dict lookup), then a reservation
        against the guessing limits (so checks in flight count before they are made), then a
        running slot (the KDF queue never grows past the gate's cap), then the store. The
        reservation is settled on every way out, cancellation included."""
        gate = self.gate
        source = ctx.source
        if not gate.admit(source):
            self.busy += 1
            return _SHED
        try:
            await in_task()
            try:
                reserved = await self.throttle.reserve(barcode, source, self.clock())
            except GuardUnavailable as exc:
                log.error("guard_unavailable", error=str(exc))
                return _GUARD_DOWN
            if not isinstance(reserved, Ticket):
                if reserved.busy:
                    self.busy += 1
                return refused(reserved)
            try:
                decision, result = await self._run(barcode, pin, ctx)
            except BaseException:
                await self.throttle.settle(reserved, Result.RELEASE, self.clock())
                raise
            settled = await self.throttle.settle(reserved, result, self.clock())
        finally:
            gate.leave(source)
        if settled.card_locked:
            self._forget(barcode)
            self.audit.event("card_locked", barcode=barcode, source=source)
        if (
            result is Result.SUCCESS
            and decision.patron is not None
            and decision.outcome is not Outcome.PIN_MUST_CHANGE
            and not decision.must_change  # a one-time PIN is never a cached credential
        ):
            self.cache.put(barcode, pin, decision.patron, self.clock())
        return decision

    async def _run(self, barcode: str, pin: Secret, ctx: Context) -> tuple[Decision, Result]:
        """Wait for a running slot, then ask the store."""
        gate = self.gate
        try:
            await gate.acquire(ctx.source)
        except Busy:
            self.busy += 1
            return _NO_SLOT, Result.RELEASE
        try:
            return await self._ask_store(barcode, pin, ctx)
        finally:
            gate.release()

    async def _ask_store(self, barcode: str, pin: Secret, ctx: Context) -> tuple[Decision, Result]:
        """The store's verdict and what it means for the guessing limits. Anything but a
        verdict (unavailable, corrupt hash, too slow, a store's own bug) evaluates nothing:
        STORE_UNAVAILABLE, the reservation released, never silence."""
        try:
            async with asyncio.timeout(self.store_deadline):
                verification = await self.store.verify_pin(barcode, pin)
        except StoreUnavailable as exc:
            decision = Decision(Outcome.STORE_UNAVAILABLE, reason=str(exc) or "store unavailable")
            return decision, Result.RELEASE
        except HashFormatError:
            # A corrupt stored hash is the library's problem, not a wrong PIN: never counted
            # as a failure (it would lock the patron out), never quoted.
            log.error("pin_hash_unreadable", barcode=self.audit.barcode(barcode))
            return _HASH_UNREADABLE, Result.RELEASE
        except TimeoutError as exc:
            log.error("store_error", error="timeout", at=where(exc), protocol=ctx.protocol)
            return _STORE_LATE, Result.RELEASE
        except Exception as exc:  # noqa: BLE001 - any store bug must still answer and audit
            # Type and place only: a store's message could quote what it was given.
            log.error("store_error", error=type(exc).__name__, at=where(exc), protocol=ctx.protocol)
            return _STORE_ERROR, Result.RELEASE
        if verification.patron is None:
            return Decision(Outcome.UNKNOWN_CARD, reason="no such card"), Result.FAILURE
        patron = verification.patron
        if not verification.pin_ok:
            return Decision(Outcome.BAD_PIN, patron=patron, reason="wrong PIN"), Result.FAILURE
        if verification.one_time_since is not None:
            # Right, but a one-time PIN: not a guess (SUCCESS), never cached, never rehashed.
            refusal = one_time.refusal(verification, ctx.protocol, self.pin_policy, self.clock())
            if refusal is not None:
                return refusal, Result.SUCCESS
            return one_time.must_change(self._standing(patron, ctx.policy, "verified")), (
                Result.SUCCESS
            )
        if verification.needs_rehash and Capability.CHANGE_PIN in self.store.capabilities:
            self._spawn(self._rehash(patron, pin))
        return self._standing(patron, ctx.policy, "verified"), Result.SUCCESS

    async def resumed(self, barcode: str, ctx: Context) -> Decision:
        """The card's standing now, for a session whose PIN was verified earlier by this bridge
        (an EAP-TTLS tunnel resumed without its inner PAP): a lock or a refused source, a card
        gone, blocked, expired or over its fines for `ctx.policy` refuse it. One store lookup,
        no PIN work, nothing counted against the guess budget; audited with reason `resumed`."""
        started = time.perf_counter()
        barcode = self.canonical(barcode)
        decision = self._resumed_refusal(barcode, ctx, self.clock())
        if decision is None:
            try:
                await in_task()
                async with asyncio.timeout(self.store_deadline):
                    patron = await self.store.lookup(barcode)
            except (StoreUnavailable, TimeoutError) as exc:
                decision = Decision(Outcome.STORE_UNAVAILABLE, reason=str(exc) or "store late")
            else:
                decision = (
                    self._standing(patron, ctx.policy, "resumed")
                    if patron is not None
                    else Decision(Outcome.UNKNOWN_CARD, reason="no such card")
                )
        return self._resumed_audit(barcode, ctx, decision, started, "store")

    def settle_resumed(self, barcode: str, ctx: Context) -> Decision | None:
        """`resumed` without the store, audited, when it needs none: a malformed barcode, a
        refused card or source, or a card whose PIN this bridge verified within cache.ttl (its
        cached record is what a cached PIN check answers from; a PIN change, block or lock
        drops it at once). None when only `resumed` can decide: the front end then asks it.

        A resumption is a re-authentication seconds or minutes after the full one, so the card
        is usually still cached: answered from the protocol callback, no task or thread hop."""
        if self._resolve is not None:
            return None  # `resumed` looks the name up as given; keep that one path
        started = time.perf_counter()
        barcode = self.canonical(barcode)
        now = self.clock()
        decision = self._resumed_refusal(barcode, ctx, now)
        if decision is None:
            patron = self.cache.patron(barcode, now)
            if patron is None:
                return None
            decision = self._standing(patron, ctx.policy, "resumed")
        return self._resumed_audit(barcode, ctx, decision, started, "cached")

    def _resumed_refusal(self, barcode: str, ctx: Context, now: float) -> Decision | None:
        """What refuses a resumption before any store work: a malformed barcode, a card in its
        lock or delay, a refused source (checked, never counted: no PIN was tried)."""
        refusal = self.throttle.check(barcode, ctx.source, now)
        if not valid_barcode(barcode):
            return _MALFORMED_BARCODE
        if refusal is not None:
            return refused(refusal)
        return None

    def _resumed_audit(
        self, barcode: str, ctx: Context, decision: Decision, started: float, path: str
    ) -> Decision:
        if not decision.accepted:  # the audit tells a refused resumption from a PIN check
            decision = dataclasses.replace(decision, reason=f"resumed: {decision.reason}")
        self.audit.decision(barcode, ctx, decision, time.perf_counter() - started, path)
        return decision

    def _today_cached(self) -> dt.date:
        """The local date, read at most once a second (date.today() is a system call away)."""
        tick = time.monotonic()
        if tick - self._today[0] >= 1.0:
            self._today = (tick, dt.date.today())
        return self._today[1]

    def _standing(self, patron: Patron, policy: ClientPolicy, how: str) -> Decision:
        """Right PIN; does this client accept the patron's standing?"""
        if patron.blocked and not policy.allow_blocked:
            return Decision(
                Outcome.CARD_BLOCKED, patron, patron.blocked_reason or "card blocked", pin_ok=True
            )
        if patron.is_expired(self.today()) and not policy.allow_expired:
            return Decision(Outcome.CARD_EXPIRED, patron, "card expired", pin_ok=True)
        if policy.fines_limit is not None and patron.fines > policy.fines_limit:
            return Decision(
                Outcome.FINES_OVER_LIMIT,
                patron,
                f"fines {patron.fines} over limit {policy.fines_limit}",
                pin_ok=True,
            )
        return Decision(ACCEPTED, patron, how, pin_ok=True)

    async def _rehash(self, patron: Patron, pin: Secret) -> None:
        try:
            await in_task()
            await self.store.change_pin(patron, pin)
        except (StoreUnavailable, NotSupported) as exc:
            log.warning("rehash_failed", error=type(exc).__name__)
            return
        self.audit.event("pin_rehashed", barcode=patron.barcode)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- PIN life ---------------------------------------------------------------------------
    async def change_pin(
        self, barcode: str, old_pin: Secret, new_pin: Secret, new_again: Secret, ctx: Context
    ) -> ChangeResult:
        """Patron self-service: old PIN, new PIN twice. The old PIN check counts as a login
        attempt (throttled, audited) so the change form cannot be used to guess."""
        if not new_pin.matches(new_again):
            return ChangeResult(False, reason="The two new PINs do not match.")
        decision = await self.authenticate(barcode, old_pin, ctx)
        if not decision.pin_ok or decision.patron is None:
            return ChangeResult(False, outcome=decision.outcome, reason=decision.reason)
        verdict = self.pin_policy.check(new_pin, old=old_pin)
        if not verdict.ok:
            return ChangeResult(False, policy=verdict, reason=verdict.reason)
        return await self._apply(decision.patron, new_pin, "pin_changed", ctx.protocol)

    async def set_pin(
        self, barcode: str, new_pin: Secret, *, actor: str, enforce_policy: bool = True
    ) -> ChangeResult:
        """Staff reset at the desk, or a reset through an emailed link."""
        barcode = self.canonical(barcode)
        if enforce_policy:
            verdict = self.pin_policy.check(new_pin)
            if not verdict.ok:
                return ChangeResult(False, policy=verdict, reason=verdict.reason)
        try:
            await in_task()
            patron = await self.store.lookup(barcode)
        except StoreUnavailable as exc:
            return ChangeResult(False, outcome=Outcome.STORE_UNAVAILABLE, reason=str(exc))
        if patron is None:
            return ChangeResult(False, outcome=Outcome.UNKNOWN_CARD, reason="no such card")
        result = await self._apply(patron, new_pin, "pin_reset", actor)
        if result.ok:
            self.clear_lock(barcode, actor=actor)
        return result

    @property
    def can_issue_one_time(self) -> bool:
        store = self.store
        return Capability.ONE_TIME_PIN in store.capabilities and isinstance(store, OneTimePinStore)

    async def issue_one_time_pin(self, barcode: str, *, actor: str) -> tuple[ChangeResult, str]:
        """Staff at the desk: a random PIN the patron must change at the next My Account sign-in
        (`bridge.core.one_time`). The PIN comes back once, for the printed slip; the store keeps
        only its hash. The lock is cleared and caches and sessions forgotten, as for a reset."""
        barcode = self.canonical(barcode)
        store = self.store
        if not self.can_issue_one_time or not isinstance(store, OneTimePinStore):
            return ChangeResult(False, reason="this store cannot keep a one-time PIN"), ""
        pin = one_time.random_pin(self.pin_policy)
        try:
            await in_task()
            patron = await store.lookup(barcode)
            if patron is None:
                return ChangeResult(False, outcome=Outcome.UNKNOWN_CARD, reason="no such card"), ""
            await store.set_one_time_pin(patron, Secret(pin))
        except StoreUnavailable as exc:
            return ChangeResult(False, outcome=Outcome.STORE_UNAVAILABLE, reason=str(exc)), ""
        await self._invalidated(barcode)
        self.audit.event(
            "pin_one_time_issued",
            barcode=barcode,
            actor=actor,
            hours=self.pin_policy.one_time_hours,
        )
        self.clear_lock(barcode, actor=actor)
        return ChangeResult(True), pin

    async def _apply(self, patron: Patron, new_pin: Secret, event: str, actor: str) -> ChangeResult:
        if Capability.CHANGE_PIN not in self.store.capabilities:
            return ChangeResult(False, reason="This library's PINs are changed in its catalogue.")
        try:
            await in_task()
            await self.store.change_pin(patron, new_pin)
        except StoreUnavailable as exc:
            return ChangeResult(False, outcome=Outcome.STORE_UNAVAILABLE, reason=str(exc))
        await self._invalidated(patron.barcode)
        self.audit.event(event, barcode=patron.barcode, actor=actor)
        return ChangeResult(True)

    @property
    def can_block(self) -> bool:
        """Whether `block` can work with this store (SIP2 advertises 01 in its BX by it)."""
        store = self.store
        return Capability.BLOCK in store.capabilities and isinstance(store, WritableStore)

    async def block(self, barcode: str, reason: str, *, actor: str) -> Patron | None:
        """Block a card in the store (SIP2 01, CLI). None when the card is unknown."""
        barcode = self.canonical(barcode)
        store = self.store
        if Capability.BLOCK not in store.capabilities or not isinstance(store, WritableStore):
            raise NotSupported("this store cannot block cards")
        try:
            await in_task()
            patron = await store.set_blocked(barcode, reason)
        except LookupError:
            return None
        await self._invalidated(barcode)
        self.audit.event("patron_blocked", barcode=barcode, actor=actor, reason=reason)
        return patron

    @property
    def can_add_patrons(self) -> bool:
        """Whether the store is one the bridge owns (cards can be made here, not in an ILS)."""
        store = self.store
        return Capability.ADMIN in store.capabilities and isinstance(store, WritableStore)

    async def add_patron(self, new: NewPatron, *, actor: str) -> None:
        """A new card with its first PIN (staff desk). ValueError when the card exists."""
        store = self.store
        if Capability.ADMIN not in store.capabilities or not isinstance(store, WritableStore):
            raise NotSupported("this store cannot add patrons")
        await in_task()
        await store.add_patron(new)
        await self._invalidated(new.patron.barcode)
        self.audit.event("patron_added", barcode=new.patron.barcode, actor=actor)

    async def unblock(self, barcode: str, *, actor: str) -> Patron | None:
        """Lift a block (staff desk, supervisor). None when the card is unknown."""
        barcode = self.canonical(barcode)
        store = self.store
        if Capability.BLOCK not in store.capabilities or not isinstance(store, WritableStore):
            raise NotSupported("this store cannot block cards")
        try:
            await in_task()
            patron = await store.set_blocked(barcode, None)
        except LookupError:
            return None
        await self._invalidated(barcode)
        self.audit.event("patron_unblocked", barcode=barcode, actor=actor)
        return patron

    def clear_lock(self, barcode: str, *, actor: str) -> bool:
        barcode = self.canonical(barcode)
        cleared = self.throttle.clear(barcode)
        self.audit.event("lock_cleared", barcode=barcode, actor=actor)
        return cleared

    def service_refusal(self, source: str) -> Refusal | None:
        """Before checking a vendor's own secret (an LDAP service account): is this source
        blocked, or the global guard up against it? Guessing service secrets is throttled like
        PINs. A refusal only because PIN checks from that address are in flight (busy) does
        not apply: the secret is checked and counted in one step, nothing is reserved, and a
        busy vendor must still be able to re-bind its service account."""
        refusal = self.throttle.check_source(source, self.clock())
        return None if refusal is None or refusal.busy else refusal

    def record_service_failure(self, source: str) -> None:
        """A wrong vendor secret counts against its source address (no card involved)."""
        self.throttle.record_failure(None, source, self.clock())

    def record_bad_input(self, source: str) -> None:
        """A front end refused a malformed barcode or PIN before asking (an LDAP bind name that
        names no patron, a RADIUS password that does not decrypt): it counts against the
        source like the malformed input the core itself refuses."""
        self.throttle.record_bad_input(source, self.clock())

    def invalidate(self, barcode: str) -> None:
        self._forget(self.canonical(barcode))

    def _forget(self, barcode: str) -> list[asyncio.Future[None]]:
        """`invalidate` for a barcode already in its canonical form (the core's own paths);
        the hooks' remote work still under way."""
        self.cache.invalidate(barcode)
        pending = []
        for callback in self.on_invalidate:
            work = callback(barcode)
            if work is not None:
                pending.append(work)
        return pending

    async def _invalidated(self, barcode: str) -> None:
        """`invalidate`, answered only once the hooks' remote work is done (or INVALIDATE_WAIT
        has passed): when a PIN change, reset or block is confirmed, the patron's sessions in
        the shared session store, on every host, are already gone."""
        pending = self._forget(self.canonical(barcode))
        if pending:
            await asyncio.wait(pending, timeout=INVALIDATE_WAIT)  # never cancels the work

    # -- lookups for front ends (no front end talks to a store) -----------------------------
    async def lookup(self, barcode: str) -> Patron | None:
        if not valid_barcode(barcode):
            return None
        await in_task()
        return await self.store.lookup(barcode)

    def recent(self, barcode: str) -> Patron | None:
        """The record of a card whose PIN was verified within cache.ttl, else None (then ask
        `lookup`). For directory searches by barcode (the EZproxy search-then-bind login):
        answered inline, no thread hop and no store call, and never staler than the cached
        binds the same front end answers. Admin and PIN-reset paths keep using `lookup`."""
        if not valid_barcode(barcode):
            return None
        return self.cache.patron(self.canonical(barcode), self.clock())

    async def lookup_by_email(self, email: str) -> list[Patron]:
        store = self.store
        if isinstance(store, SearchableStore) and Capability.BY_EMAIL in store.capabilities:
            await in_task()
            return await store.lookup_by_email(email)
        return []

    async def lookup_by_record_id(self, record_id: str) -> Patron | None:
        store = self.store
        if isinstance(store, SearchableStore) and Capability.BY_RECORD_ID in store.capabilities:
            await in_task()
            return await store.lookup_by_record_id(record_id)
        return None

    async def health(self) -> Health:
        try:
            await in_task()
            return await self.store.health()
        except StoreUnavailable as exc:
            return Health(False, str(exc))

    async def aclose(self) -> None:
        for task in list(self._background):
            await task
