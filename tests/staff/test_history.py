"""The per-card decision history: queued on the hot path, written behind in batches, kept as
keyed hashes, bounded in time (purged) and in queue length, malformed barcodes never kept."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import Context, Decision, Outcome
from bridge.staff.history import DecisionHistory
from bridge.staff.standing import mask_email
from tests.portal.support import Clock

CARD = "21234000000001"
OK = Decision(Outcome.ACCEPTED, reason="verified")
BAD = Decision(Outcome.BAD_PIN, reason="wrong PIN")


def history(tmp_path: Path, clock: Clock, **kw: int) -> DecisionHistory:
    return DecisionHistory(tmp_path / "staff.db", b"k" * 32, clock=clock, **kw)


def test_write_behind_and_recent(tmp_path: Path) -> None:
    clock = Clock()
    h = history(tmp_path, clock)
    for i, protocol in enumerate(("sip2", "ldap", "radius")):
        clock.now += 1
        h.tap(CARD, Context(protocol, f"c{i}", "127.0.0.1"), OK if i != 1 else BAD)
    h.tap("x" * 400, Context("ldap", "c", "127.0.0.1"), BAD)  # malformed: not kept
    h.tap("12 34", Context("ldap", "c", "127.0.0.1"), BAD)
    with sqlite3.connect(tmp_path / "staff.db") as conn:
        assert conn.execute("SELECT count(*) FROM decisions").fetchone() == (0,)  # not yet
    entries = asyncio.run(h.recent(CARD, 20))
    assert [e.protocol for e in entries] == ["radius", "ldap", "sip2"]
    assert entries[1].outcome == "bad_pin"
    assert asyncio.run(h.recent(CARD, 2))[-1].protocol == "ldap"
    raw = (tmp_path / "staff.db").read_bytes()
    assert CARD.encode() not in raw  # cards are kept as keyed hashes


def test_purge_and_horizon(tmp_path: Path) -> None:
    clock = Clock()
    h = history(tmp_path, clock, keep_days=90)
    h.tap(CARD, Context("sip2", "c", "127.0.0.1"), OK)
    asyncio.run(h.flush())
    clock.now += 91 * 86400
    assert asyncio.run(h.recent(CARD)) == []  # past the horizon even before the purge
    assert asyncio.run(h.purge()) == 1


def test_queue_is_bounded(tmp_path: Path) -> None:
    h = history(tmp_path, Clock(), max_queue=10)
    for _ in range(100):
        h.tap(CARD, Context("sip2", "c", "127.0.0.1"), OK)
    assert asyncio.run(h.flush()) == 10


def test_background_task_flushes_and_stops(tmp_path: Path) -> None:
    async def run() -> int:
        h = history(tmp_path, Clock())
        h.start(interval=0.01)
        h.tap(CARD, Context("sip2", "c", "127.0.0.1"), OK)
        await h.aclose()
        return len(await h.recent(CARD))

    assert asyncio.run(run()) == 1


def test_long_fields_are_clipped(tmp_path: Path) -> None:
    h = history(tmp_path, Clock())
    h.tap(CARD, Context("ldap", "c" * 10_000, "s" * 10_000), BAD)
    (entry,) = asyncio.run(h.recent(CARD))
    assert len(entry.client) < 200 and len(entry.source) < 200


@given(st.one_of(st.none(), st.text(max_size=100)))
def test_mask_email_never_shows_the_local_part(email: str | None) -> None:
    masked = mask_email(email)
    if not email:
        assert masked is None
        return
    assert masked is not None
    local, at, domain = email.partition("@")
    if at:
        assert masked == local[:1] + "•••@" + domain
    else:
        assert masked == "•••"
