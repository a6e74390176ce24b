"""`Authenticator.settle`: the decision front ends get straight from their protocol callbacks
when no store is needed. It must agree with `authenticate` in every case it answers, answer
nothing it cannot, audit what it answers, and never serve a remembered decision past a change
of policy or of day (a card that expires at midnight)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from bridge import logs
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.patron import ClientPolicy, Context, Decision, Outcome
from bridge.core.secret import Secret
from bridge.core.throttle import Throttle, ThrottleRules
from plugins.sqlite import SqliteStore
from tests.core.support import (
    ACTIVE,
    BLOCKED,
    EXPIRED,
    FINES,
    UNKNOWN,
    Clock,
    fast_hasher,
    sqlite_store,
)
from tests.pins import DEMO_PIN, WRONG_PIN

ACTIVE_EXPIRES = dt.date(2030, 12, 31)  # tests/core/support.py demo_patrons


class Day:
    def __init__(self) -> None:
        self.date = dt.date(2026, 6, 1)

    def __call__(self) -> dt.date:
        return self.date


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await sqlite_store(tmp_path / "patrons.db", fast_hasher(), DEMO_PIN)
    yield store
    await store.aclose()


class RecordingAudit(Audit):
    """The real audit line, plus a list of the outcomes it was asked to record."""

    def __init__(self) -> None:
        super().__init__("masked")
        self.outcomes: list[str] = []

    def decision(
        self, barcode: str, ctx: Context, decision: Decision, latency: float, path: str = "cached"
    ) -> None:
        self.outcomes.append(decision.outcome.value)
        super().decision(barcode, ctx, decision, latency, path)


def authenticator(
    store: SqliteStore, day: Day, rules: ThrottleRules | None = None
) -> tuple[Authenticator, RecordingAudit]:
    audit = RecordingAudit()
    auth = Authenticator(
        store,
        throttle=Throttle(rules or ThrottleRules()),
        cache=VerifiedCache(600),
        audit=audit,
        clock=Clock(),
        today=day,
    )
    return auth, audit


def ctx(policy: ClientPolicy | None = None) -> Context:
    return Context("test", "unit", "192.0.2.1", policy or ClientPolicy())


async def test_settle_leaves_unverified_pins_to_the_store(store: SqliteStore) -> None:
    auth, audit = authenticator(store, Day())
    assert auth.settle(ACTIVE, Secret(DEMO_PIN), ctx()) is None
    assert auth.settle(UNKNOWN, Secret(DEMO_PIN), ctx()) is None
    assert audit.outcomes == []  # nothing decided, nothing audited


async def test_settle_answers_a_verified_pin_as_authenticate_does(store: SqliteStore) -> None:
    auth, audit = authenticator(store, Day())
    policy = ctx()
    for card in (ACTIVE, EXPIRED, BLOCKED, FINES):
        first = await auth.authenticate(card, Secret(DEMO_PIN), policy)
        settled = auth.settle(card, Secret(DEMO_PIN), policy)
        assert settled is not None and settled.outcome is first.outcome, card
        assert settled.pin_ok and settled.patron == first.patron
        assert audit.outcomes[-2:] == [first.outcome.value] * 2
    # The wrong PIN for a verified card still needs the store (and counts there).
    assert auth.settle(ACTIVE, Secret(WRONG_PIN), policy) is None


async def test_settle_refuses_bad_input_and_locked_cards_without_the_store(
    store: SqliteStore,
) -> None:
    auth, _ = authenticator(store, Day(), ThrottleRules(card_free_failures=1, card_lock_after=2))
    bad = auth.settle("not a barcode", Secret(DEMO_PIN), ctx())
    assert bad is not None and bad.outcome is Outcome.BAD_INPUT
    empty = auth.settle(ACTIVE, Secret(b""), ctx())
    assert empty is not None and empty.outcome is Outcome.BAD_INPUT
    for _ in range(2):
        await auth.authenticate(ACTIVE, Secret(WRONG_PIN), ctx())
    locked = auth.settle(ACTIVE, Secret(DEMO_PIN), ctx())
    assert locked is not None and locked.outcome is Outcome.CARD_LOCKED


async def test_remembered_decision_follows_policy_and_day(store: SqliteStore) -> None:
    day = Day()
    auth, _ = authenticator(store, day)
    strict, lenient = ctx(ClientPolicy()), ctx(ClientPolicy(fines_limit=Decimal("100.00")))
    await auth.authenticate(FINES, Secret(DEMO_PIN), strict)
    once = auth.settle(FINES, Secret(DEMO_PIN), strict)
    again = auth.settle(FINES, Secret(DEMO_PIN), strict)
    assert once is not None and once is again and once.outcome is Outcome.FINES_OVER_LIMIT
    other = auth.settle(FINES, Secret(DEMO_PIN), lenient)
    assert other is not None and other.outcome is Outcome.ACCEPTED
    back = auth.settle(FINES, Secret(DEMO_PIN), strict)
    assert back is not None and back.outcome is Outcome.FINES_OVER_LIMIT

    day.date = ACTIVE_EXPIRES
    await auth.authenticate(ACTIVE, Secret(DEMO_PIN), strict)
    today = auth.settle(ACTIVE, Secret(DEMO_PIN), strict)
    assert today is not None and today.outcome is Outcome.ACCEPTED
    day.date = ACTIVE_EXPIRES + dt.timedelta(days=1)  # midnight: the card has expired
    tomorrow = auth.settle(ACTIVE, Secret(DEMO_PIN), strict)
    assert tomorrow is not None and tomorrow.outcome is Outcome.CARD_EXPIRED


async def test_settle_audit_lines_carry_their_own_latency(
    store: SqliteStore, tmp_path: Path
) -> None:
    """The audit line reuses its encoded fields for repeat decisions; each line still gets its
    own time and latency, and odd characters in a client name stay valid JSON."""
    import json

    from tests.test_logs import LOG_FILES

    auth, _ = authenticator(store, Day())
    who = Context("test", 'desk "A" \\ café', "192.0.2.1", ClientPolicy())
    path, audit_path = tmp_path / "main.log", tmp_path / "audit.log"
    LOG_FILES.extend([path, audit_path])
    logs.stop()
    logs.configure("info", "json", path, audit_path)
    try:
        await auth.authenticate(ACTIVE, Secret(DEMO_PIN), who)
        for _ in range(3):
            auth.settle(ACTIVE, Secret(DEMO_PIN), who)
        auth.audit.decision(
            ACTIVE, who, Decision(Outcome.ACCEPTED, reason="verified (cached)"), 1.5
        )
    finally:
        logs.stop()
        logs.configure(
            "debug", "json", Path(__file__).parent.parent / "artifacts" / "in-process.log"
        )
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert len(lines) == 5
    assert [line["reason"] for line in lines] == ["verified"] + ["verified (cached)"] * 4
    for line in lines:
        assert list(line) == [
            "timestamp",
            "level",
            "event",
            "kind",
            "protocol",
            "client",
            "source",
            "barcode",
            "outcome",
            "reason",
            "latency_ms",
        ]
        assert line["client"] == 'desk "A" \\ café' and line["barcode"] == "**********0001"
    assert lines[-1]["latency_ms"] == 1500.0


async def test_remembered_decision_follows_the_real_day(store: SqliteStore) -> None:
    """With the system's date (no `today` given) the day is read at most once a second,
    inline in the cached path: within the second the remembered day holds, after it the
    date is read again and a decision made on another day is not served."""
    import time

    auth = Authenticator(
        store,
        throttle=Throttle(ThrottleRules()),
        cache=VerifiedCache(600),
        audit=RecordingAudit(),
        clock=Clock(),
    )
    policy = ctx()
    await auth.authenticate(ACTIVE, Secret(DEMO_PIN), policy)
    after_expiry = ACTIVE_EXPIRES + dt.timedelta(days=1)
    auth._today = (time.monotonic(), after_expiry)  # read just now: the card has expired
    expired = auth.settle(ACTIVE, Secret(DEMO_PIN), policy)
    assert expired is not None and expired.outcome is Outcome.CARD_EXPIRED
    auth._today = (time.monotonic() - 5.0, after_expiry)  # stale: the real date is read
    current = auth.settle(ACTIVE, Secret(DEMO_PIN), policy)
    assert current is not None and current.outcome is Outcome.ACCEPTED
    assert auth._today[1] == dt.date.today()
