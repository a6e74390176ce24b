"""Throttle state survives a restart: a new Throttle over the same SQLite file sees the lock."""

from __future__ import annotations

from pathlib import Path

from bridge.core.throttle import Throttle, ThrottleRules
from bridge.state.sqlite_throttle import SqliteThrottleBackend

CARD = "21234000000001"
SRC = "192.0.2.7"
T0 = 1_000_000.0


def test_lock_survives_restart(tmp_path: Path) -> None:
    rules = ThrottleRules(card_lock_after=3, card_lock_seconds=900)
    path = tmp_path / "state" / "throttle.db"
    first = Throttle(rules, SqliteThrottleBackend(path))
    for _ in range(3):
        first.record_failure(CARD, SRC, T0)
    first.close()

    second = Throttle(rules, SqliteThrottleBackend(path))
    try:
        refusal = second.check(CARD, SRC, T0 + 10)
        assert refusal is not None and refusal.scope == "card" and refusal.retry_after == 890
        assert second.card_locked(CARD, T0 + 10)
        assert second.failures(CARD, T0 + 10) == 3
    finally:
        second.close()


def test_lock_until_cleared_survives_restart_and_clear_persists(tmp_path: Path) -> None:
    rules = ThrottleRules(card_lock_after=2, card_lock_seconds=0)
    path = tmp_path / "throttle.db"
    first = Throttle(rules, SqliteThrottleBackend(path))
    first.record_failure(CARD, SRC, T0)
    first.record_failure(CARD, SRC, T0)
    first.close()

    second = Throttle(rules, SqliteThrottleBackend(path))
    refusal = second.check(CARD, SRC, T0 + 86400 * 30)
    assert refusal is not None and refusal.retry_after is None  # math.inf round-trips
    assert second.clear(CARD)
    second.close()

    third = Throttle(rules, SqliteThrottleBackend(path))
    try:
        assert third.check(CARD, SRC, T0 + 1) is None
    finally:
        third.close()


def test_success_and_forget_delete_rows(tmp_path: Path) -> None:
    rules = ThrottleRules(card_forget_after=60)
    path = tmp_path / "throttle.db"
    backend = SqliteThrottleBackend(path)
    t = Throttle(rules, backend)
    t.record_failure(CARD, SRC, T0)
    t.record_failure("21234000000002", SRC, T0)
    backend.flush()
    assert backend.get(f"card:{CARD}") is not None
    t.record_success(CARD, T0 + 1)
    assert t.failures("21234000000002", T0 + 120) == 0  # quiet: forgotten, row deleted
    backend.flush()
    assert backend.get(f"card:{CARD}") is None
    assert backend.get("card:21234000000002") is None
    t.close()
    t.close()  # idempotent


def test_source_block_survives_restart(tmp_path: Path) -> None:
    rules = ThrottleRules(source_max_failures=3, source_block_seconds=100)
    path = tmp_path / "throttle.db"
    first = Throttle(rules, SqliteThrottleBackend(path))
    for i in range(3):
        first.record_failure(f"2123400000{i:04d}", SRC, T0)
    first.close()
    second = Throttle(rules, SqliteThrottleBackend(path))
    try:
        refusal = second.check("21234000009999", SRC, T0 + 1)
        assert refusal is not None and refusal.scope == "source"
    finally:
        second.close()
