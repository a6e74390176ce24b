"""The Authenticator under concurrency: reservations hold, work is bounded, nothing leaks.

Real SQLite store and real (fast) KDF; a wrapper store can hold checks open to build
"everything in flight at once" exactly, count concurrent store calls, or raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bridge.core.auth as auth_module
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.gate import Gate, GateLimits
from bridge.core.patron import Context, Decision, Outcome
from bridge.core.secret import Secret
from bridge.core.store import Verification
from bridge.core.throttle import Throttle, ThrottleRules
from plugins.sqlite import SqliteStore
from tests.core.support import ACTIVE, MINOR, TODAY, Clock, ctx, fast_hasher, sqlite_store
from tests.pins import DEMO_PIN, WRONG_PIN

PINS = [f"{n:04d}" for n in range(1000, 1400)]  # 400 wrong guesses, none the demo PIN
assert DEMO_PIN not in PINS


class Recorder(Audit):
    """The audit lines as values."""

    def __init__(self) -> None:
        super().__init__("full")
        self.decisions: list[tuple[str, str, Decision]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def decision(
        self, barcode: str, ctx: Context, decision: Decision, latency: float, path: str = "cached"
    ) -> None:
        self.decisions.append((barcode, ctx.source, decision))

    def event(self, event: str, *, barcode: str | None = None, **fields: Any) -> None:
        self.events.append((event, {"barcode": barcode, **fields}))

    def outcomes(self) -> list[Outcome]:
        return [d.outcome for _, _, d in self.decisions]


class Wrapped:
    """A store around the real one: counts concurrent `verify_pin` calls, can hold them until
    released, can raise instead."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.running = 0
        self.peak = 0
        self.calls = 0
        self.hold: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.raises: BaseException | None = None

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.entered.set()
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.raises is not None:
                raise self.raises
            return await self.inner.verify_pin(barcode, pin)
        finally:
            self.running -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Wrapped]:
    hasher = fast_hasher()
    inner = await sqlite_store(tmp_path / "patrons.db", hasher, DEMO_PIN)
    yield Wrapped(inner)
    await inner.aclose()
    hasher.close()


def build(
    store: Wrapped, rules: ThrottleRules | None = None, limits: GateLimits | None = None
) -> tuple[Authenticator, Throttle, Recorder, Gate]:
    throttle = Throttle(rules or ThrottleRules())
    audit = Recorder()
    gate = Gate(limits or GateLimits())
    auth = Authenticator(
        store,  # type: ignore[arg-type]
        throttle=throttle,
        cache=VerifiedCache(30.0),
        audit=audit,
        clock=Clock(),
        today=lambda: TODAY,
        gate=gate,
    )
    return auth, throttle, audit, gate


async def test_four_hundred_at_once_evaluate_exactly_the_budget(store: Wrapped) -> None:
    """400 guesses for one card arrive together, the right PIN 351st: exactly ten are
    evaluated, all wrong; the right PIN is refused like every other late guess."""
    rules = ThrottleRules(card_free_failures=10, card_lock_after=10, card_lock_seconds=0)
    auth, throttle, audit, gate = build(store, rules, GateLimits(max_pending=1000))
    pins = [*PINS[:350], DEMO_PIN, *PINS[350:399]]
    decisions = await asyncio.gather(
        *(auth.authenticate(ACTIVE, Secret(pin), ctx()) for pin in pins)
    )
    outcomes = [d.outcome for d in decisions]
    assert outcomes.count(Outcome.BAD_PIN) == 10 == store.calls
    assert decisions[350].outcome is Outcome.CARD_LOCKED and not decisions[350].pin_ok
    assert set(outcomes) == {Outcome.BAD_PIN, Outcome.CARD_LOCKED}
    assert audit.outcomes().count(Outcome.BAD_PIN) == 10 and len(audit.decisions) == 400
    assert [e for e, _ in audit.events] == ["card_locked"]
    assert throttle.inflight == 0 and gate.pending == 0 and gate.active == 0


async def test_right_pin_in_cache_is_refused_while_the_budget_is_reserved(store: Wrapped) -> None:
    """The patron logged in a moment ago (cached); a guesser now holds all ten checks in
    flight. Even the cached right PIN is refused until they settle."""
    rules = ThrottleRules(card_free_failures=10, card_lock_after=10)
    auth, throttle, _, _ = build(store, rules)
    assert (await auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx())).accepted
    store.hold = asyncio.Event()
    guesses = [
        asyncio.create_task(auth.authenticate(ACTIVE, Secret(pin), ctx(source="203.0.113.9")))
        for pin in PINS[:10]
    ]
    while throttle.inflight < 10:
        await asyncio.sleep(0)
    refused = auth.settle(ACTIVE, Secret(DEMO_PIN), ctx())
    assert refused is not None and refused.outcome is Outcome.CARD_LOCKED
    store.hold.set()
    assert {d.outcome for d in await asyncio.gather(*guesses)} == {Outcome.BAD_PIN}
    assert throttle.card_locked(ACTIVE, 1_000_000.0)
    late = auth.settle(ACTIVE, Secret(DEMO_PIN), ctx())
    assert late is not None and late.outcome is Outcome.CARD_LOCKED  # locked: cache dropped


async def test_store_error_is_store_unavailable_audited_and_logged(
    store: Wrapped, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store bug (here ValueError quoting its input) still gives an answer, an audit line
    and an error line with no PIN in it; the reservation is released uncounted."""
    logged: list[tuple[str, dict[str, Any]]] = []

    class Log:
        def error(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    monkeypatch.setattr(auth_module, "log", Log())
    auth, throttle, audit, gate = build(store)
    store.raises = ValueError(f"cannot parse {WRONG_PIN}")
    decision = await auth.authenticate(ACTIVE, Secret(WRONG_PIN), ctx())
    assert decision.outcome is Outcome.STORE_UNAVAILABLE
    assert audit.outcomes() == [Outcome.STORE_UNAVAILABLE]
    assert [event for event, _ in logged] == ["store_error"]
    assert logged[0][1]["error"] == "ValueError" and "test_guessing.py" in logged[0][1]["at"]
    assert WRONG_PIN not in repr(logged)
    assert throttle.inflight == 0 and throttle.failures(ACTIVE, 1_000_000.0) == 0
    assert gate.pending == 0 and gate.active == 0


async def test_cancelled_check_releases_everything(store: Wrapped) -> None:
    auth, throttle, _audit, gate = build(store)
    store.hold = asyncio.Event()
    task = asyncio.create_task(auth.authenticate(ACTIVE, Secret(WRONG_PIN), ctx()))
    await store.entered.wait()
    assert throttle.inflight == 1 and gate.active == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert throttle.inflight == 0 and throttle.failures(ACTIVE, 1_000_000.0) == 0
    assert gate.pending == 0 and gate.active == 0 and len(throttle) == 0


async def test_a_burst_of_the_same_right_pin_on_a_cold_cache_is_one_check(store: Wrapped) -> None:
    """Eight requests with the card's right PIN arrive before the first check has answered
    (a patron's devices joining the Wi-Fi at once, a retrying NAS). Only two free failures:
    before identical requests waited for the check in flight, the third and later were
    refused "PIN checks for this card are in progress" (audited card_locked). Now one store
    call; all eight accepted, each audited."""
    rules = ThrottleRules(card_free_failures=2, card_lock_after=10)
    auth, throttle, audit, gate = build(store, rules)
    store.hold = asyncio.Event()
    burst = [
        asyncio.create_task(auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx())) for _ in range(8)
    ]
    await store.entered.wait()
    for _ in range(5):
        await asyncio.sleep(0)
    assert auth.settle(ACTIVE, Secret(DEMO_PIN), ctx()) is None  # the fast path defers too
    store.hold.set()
    decisions = await asyncio.gather(*burst)
    assert all(d.accepted for d in decisions), [d.reason for d in decisions]
    assert store.calls == 1 and len(audit.decisions) == 8
    assert throttle.inflight == 0 and gate.active == 0 and not auth._checking


async def test_a_different_pin_does_not_wait_and_keeps_its_budget(store: Wrapped) -> None:
    """Only the identical pair waits: with one free failure and a check in flight, a wrong
    PIN for the same card is refused at once by the delay stage, as before."""
    rules = ThrottleRules(card_free_failures=1, card_lock_after=10)
    auth, _throttle, _, _ = build(store, rules)
    store.hold = asyncio.Event()
    first = asyncio.create_task(auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx()))
    await store.entered.wait()
    refused = auth.settle(ACTIVE, Secret(WRONG_PIN), ctx(source="203.0.113.8"))
    assert refused is not None and "in progress" in refused.reason
    store.hold.set()
    assert (await first).accepted and store.calls == 1


async def test_identical_wrong_pins_are_each_checked_one_after_another(store: Wrapped) -> None:
    """A wrong PIN sent three times at once: nothing cached to share, so each waits for the
    one before and is then evaluated and counted itself (no check runs beside its twin; a
    request waits for at most `JOIN_LIMIT` = 2 checks before it checks alongside)."""
    auth, throttle, audit, _ = build(store)
    decisions = await asyncio.gather(
        *(auth.authenticate(ACTIVE, Secret(WRONG_PIN), ctx()) for _ in range(3))
    )
    assert [d.outcome for d in decisions] == [Outcome.BAD_PIN] * 3
    assert store.calls == 3 and store.peak == 1
    assert throttle.failures(ACTIVE, 1_000_000.0) == 3 and len(audit.decisions) == 3
    assert not auth._checking


async def test_a_cancelled_check_does_not_strand_its_waiters(store: Wrapped) -> None:
    """The request that started the check goes away (its front end gave up): the one that
    waited for it checks the PIN itself and is answered."""
    auth, throttle, _, _ = build(store)
    store.hold = asyncio.Event()
    leader = asyncio.create_task(auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx()))
    await store.entered.wait()
    waiter = asyncio.create_task(auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx()))
    for _ in range(5):
        await asyncio.sleep(0)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    store.hold.set()
    assert (await waiter).accepted
    assert store.calls == 2 and throttle.inflight == 0 and not auth._checking


async def test_flood_is_shed_and_the_kdf_queue_stays_bounded(store: Wrapped) -> None:
    """300 unknown cards at once from one address: at most `max_pending_per_source` are
    admitted, the rest are BUSY at once; never more than `max_active` store calls run; a
    patron from another address is answered."""
    rules = ThrottleRules(source_max_failures=1000, global_max_failures=10_000)
    limits = GateLimits(max_active=2, max_pending=40, max_pending_per_source=8)
    auth, throttle, audit, gate = build(store, rules, limits)
    flood = [
        auth.authenticate(f"2999000000{i:04d}", Secret(WRONG_PIN), ctx(source="203.0.113.5"))
        for i in range(300)
    ]
    patron = auth.authenticate(MINOR, Secret(DEMO_PIN), ctx(source="192.0.2.44"))
    *flooded, legit = await asyncio.gather(*flood, patron)
    outcomes = [d.outcome for d in flooded]
    assert outcomes.count(Outcome.UNKNOWN_CARD) == 8
    assert outcomes.count(Outcome.BUSY) == 292
    assert legit.accepted
    assert store.peak <= 2 and gate.shed == 292
    assert audit.outcomes().count(Outcome.BUSY) == 292 and auth.busy == 292
    assert throttle.inflight == 0 and gate.pending == 0


async def test_wait_for_a_slot_is_bounded(store: Wrapped) -> None:
    """Every slot held by a check that does not finish: a new one waits `wait_deadline`, then
    is BUSY (released, not counted)."""
    limits = GateLimits(max_active=1, wait_deadline=0.05)
    auth, throttle, _, gate = build(store, limits=limits)
    store.hold = asyncio.Event()
    stuck = asyncio.create_task(auth.authenticate(ACTIVE, Secret(WRONG_PIN), ctx()))
    await store.entered.wait()
    late = await auth.authenticate(MINOR, Secret(DEMO_PIN), ctx(source="192.0.2.45"))
    assert late.outcome is Outcome.BUSY and gate.timed_out == 1
    assert throttle.failures(MINOR, 1_000_000.0) == 0
    store.hold.set()
    assert (await stuck).outcome is Outcome.BAD_PIN
    assert throttle.inflight == 0 and gate.active == 0


@pytest.mark.parametrize(
    ("barcode", "pin"),
    [
        ("", DEMO_PIN),
        ("2123 4000", DEMO_PIN),
        ("x" * 65, DEMO_PIN),
        (ACTIVE, ""),
        (ACTIVE, "9" * 129),
    ],
)
async def test_bad_input_counts_against_the_source(store: Wrapped, barcode: str, pin: str) -> None:
    rules = ThrottleRules(source_max_failures=5)
    auth, _throttle, _, _ = build(store, rules)
    for _ in range(5):
        decision = auth.settle(barcode, Secret(pin), ctx(source="203.0.113.7"))
        assert decision is not None and decision.outcome is Outcome.BAD_INPUT
    refused = await auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx(source="203.0.113.7"))
    assert refused.outcome is Outcome.CARD_LOCKED and "address" in refused.reason
    assert (await auth.authenticate(ACTIVE, Secret(DEMO_PIN), ctx())).accepted
    assert store.calls == 1


async def test_service_secrets_are_not_refused_for_checks_in_flight(store: Wrapped) -> None:
    """A vendor's address with its whole failure budget taken by patron checks in flight:
    its patrons wait (busy), its service account still binds; a blocked address does not."""
    rules = ThrottleRules(source_max_failures=3)
    auth, throttle, _, _ = build(store, rules)
    store.hold = asyncio.Event()
    vendor = "198.51.100.20"
    checks = [
        asyncio.create_task(
            auth.authenticate(f"2999000000{i:04d}", Secret(WRONG_PIN), ctx(source=vendor))
        )
        for i in range(3)
    ]
    while throttle.inflight < 3:
        await asyncio.sleep(0)
    busy = await auth.authenticate(MINOR, Secret(DEMO_PIN), ctx(source=vendor))
    assert busy.outcome is Outcome.BUSY
    assert auth.service_refusal(vendor) is None
    store.hold.set()
    await asyncio.gather(*checks)
    refusal = auth.service_refusal(vendor)  # three unknown cards: the address is blocked
    assert refusal is not None and refusal.scope == "source"


class Held:
    """A store whose every `verify_pin` waits until the test lets that call finish."""

    def __init__(self, inner: Wrapped) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.calls: list[asyncio.Event] = []

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        gate = asyncio.Event()
        self.calls.append(gate)
        await gate.wait()
        return await self.inner.inner.verify_pin(barcode, pin)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    ops=st.lists(st.one_of(st.just(-1), st.integers(0, 50)), min_size=1, max_size=60),
    free=st.integers(0, 5),
    lock=st.integers(1, 6),
)
async def test_property_authenticator_interleavings(
    store: Wrapped, ops: list[int], free: int, lock: int
) -> None:
    """Wrong guesses for one card arrive (-1) and store calls finish (k: the k-th still
    running) in any order, through the real Authenticator: the store is asked at most
    `card_lock_after` times, and everything is settled at the end."""
    rules = ThrottleRules(card_free_failures=free, card_lock_after=lock, card_lock_seconds=0)
    held = Held(store)
    auth, throttle, _, gate = build(store, rules, GateLimits(max_active=100, max_pending=1000))
    auth.store = held  # type: ignore[assignment]
    tasks = []
    released: set[int] = set()

    async def settle_loop() -> None:
        for _ in range(10):
            await asyncio.sleep(0)

    for n, op in enumerate(ops):
        if op == -1:
            tasks.append(asyncio.create_task(auth.authenticate(ACTIVE, Secret(PINS[n]), ctx())))
        else:
            running = [i for i in range(len(held.calls)) if i not in released]
            if running:
                k = running[op % len(running)]
                released.add(k)
                held.calls[k].set()
        await settle_loop()
        assert len(held.calls) <= lock
    for event in held.calls:
        event.set()
    outcomes = [d.outcome for d in await asyncio.gather(*tasks)]
    assert outcomes.count(Outcome.BAD_PIN) == len(held.calls) <= lock
    assert throttle.inflight == 0 and gate.pending == 0 and gate.active == 0
