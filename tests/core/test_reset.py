"""Reset tokens: random, stored only as a hash, single use, expiring, newest wins."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.app import Core, open_core
from bridge.config import loads
from bridge.core.reset import ResetTokens, plausible_token, token_hash
from bridge.core.secret import Secret
from bridge.core.store import Capability
from tests.harness import DEMO, UNKNOWN, base_config
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def core(tmp_path: Path) -> Iterator[Core]:
    config = loads(base_config(tmp_path, throttle='state = "memory"'), base_dir=tmp_path)
    core = asyncio.run(open_core(config))
    yield core
    asyncio.run(core.aclose())


def test_issue_stores_only_a_hash_and_redeem_sets_the_pin(core: Core, tmp_path: Path) -> None:
    clock = Clock()
    tokens = ResetTokens(core.authenticator, clock=clock)
    issued = asyncio.run(tokens.issue(DEMO["active"], source="test"))
    assert issued is not None and issued.email == "ana.rivera@example.org"
    assert len(issued.token) >= 43 and plausible_token(issued.token)
    assert issued.expires_at == clock.now + dt.timedelta(minutes=30)
    with sqlite3.connect(tmp_path / "patrons.db") as db:
        stored = db.execute("SELECT token_hash FROM reset_tokens").fetchall()
    assert stored == [(token_hash(issued.token),)]
    assert issued.token.encode() not in stored[0][0]

    assert asyncio.run(tokens.check(issued.token))
    result, patron = asyncio.run(
        tokens.redeem(issued.token, Secret(NEW_PIN), Secret(NEW_PIN), source="test")
    )
    assert result.ok and patron is not None and patron.barcode == DEMO["active"]
    assert not asyncio.run(tokens.check(issued.token))
    again, _ = asyncio.run(
        tokens.redeem(issued.token, Secret(OTHER_PIN), Secret(OTHER_PIN), source="test")
    )
    assert not again.ok
    verify = asyncio.run(core.store.verify_pin(DEMO["active"], Secret(NEW_PIN)))
    assert verify.pin_ok


def test_expiry(core: Core) -> None:
    clock = Clock()
    tokens = ResetTokens(core.authenticator, ttl=dt.timedelta(minutes=5), clock=clock)
    issued = asyncio.run(tokens.issue(DEMO["active"], source="test"))
    assert issued is not None
    clock.now += dt.timedelta(minutes=5)
    assert not asyncio.run(tokens.check(issued.token))
    result, _ = asyncio.run(
        tokens.redeem(issued.token, Secret(NEW_PIN), Secret(NEW_PIN), source="test")
    )
    assert not result.ok
    assert asyncio.run(core.store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok


def test_policy_and_mismatch_do_not_use_the_token(core: Core) -> None:
    tokens = ResetTokens(core.authenticator)
    issued = asyncio.run(tokens.issue(DEMO["active"], source="test"))
    assert issued is not None
    for new, again in (("1212", "1212"), (NEW_PIN, OTHER_PIN)):
        result, _ = asyncio.run(tokens.redeem(issued.token, Secret(new), Secret(again), source="t"))
        assert not result.ok and result.outcome is None
    assert asyncio.run(tokens.check(issued.token))


def test_no_token_for_unknown_cards_or_cards_without_email(core: Core) -> None:
    tokens = ResetTokens(core.authenticator)
    for barcode in (UNKNOWN, DEMO["minor"], "bad barcode"):
        assert asyncio.run(tokens.issue(barcode, source="test")) is None


def test_a_newer_token_voids_the_older(core: Core) -> None:
    tokens = ResetTokens(core.authenticator)
    first = asyncio.run(tokens.issue(DEMO["active"], source="test"))
    second = asyncio.run(tokens.issue(DEMO["active"], source="test"))
    assert first is not None and second is not None
    assert not asyncio.run(tokens.check(first.token))
    assert asyncio.run(tokens.check(second.token))


def test_store_without_tokens(core: Core) -> None:
    core.store.capabilities = frozenset(core.store.capabilities - {Capability.RESET_TOKENS})
    tokens = ResetTokens(core.authenticator)
    assert not tokens.available
    assert asyncio.run(tokens.issue(DEMO["active"], source="test")) is None
    assert not asyncio.run(tokens.check("a" * 43))


def test_garbage_tokens_are_refused_without_a_lookup(core: Core) -> None:
    tokens = ResetTokens(core.authenticator)
    for token in ("", "a" * 129, "ä" * 43, "a b"):
        assert not asyncio.run(tokens.check(token))
