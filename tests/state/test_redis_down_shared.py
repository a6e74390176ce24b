"""Redis stopped mid-run and started again under a logical bridge of several processes: two
daemons (hosts) sharing the test's own redis-server, and one daemon with `workers = 2`. Both
`on_state_unavailable` modes: "refuse" answers store-unavailable on every door and comes back
without a restart; "local" keeps the budget (each process counts alone with the thresholds
divided by hosts x workers, so all together never exceed `card_lock_after`) and goes back to the
shared counters when Redis returns. Counts come from the daemons' audit lines."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import servers
from tests.plugins.test_shared_store import store_toml
from tests.state import scenario
from tests.state.redis_server import PrivateRedis
from tests.state.test_redis_down import daemon_sections

LOCK_AFTER = 6
THROTTLE = f"""
card_free_failures = 2
card_delay_base = 0.0
card_lock_after = {LOCK_AFTER}
source_max_failures = 100000
"""
TOPOLOGIES = ["two_daemons", "two_workers"]


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with PrivateRedis(tmp_path) as server:
        yield server


@contextmanager
def doors(tmp_path: Path, topology: str, url: str, mode: str) -> Iterator[Doors]:
    """[A, B]: two daemons on one PostgreSQL store (`hosts = 2`), or the same daemon twice
    with two workers behind its ports (`hosts = 1`: the share is hosts x workers either way)."""
    with ExitStack() as stack:
        if topology == "two_workers":
            sections = daemon_sections(url, mode, "hosts = 1\n[server]\nworkers = 2")
            daemon = stack.enter_context(Daemon(tmp_path, sections, throttle=THROTTLE))
            yield Doors([daemon, daemon])
            return
        store = store_toml(stack.enter_context(servers.pg_database()))
        sections = daemon_sections(url, mode, "hosts = 2")
        made: list[Daemon] = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            if made:  # one pepper per library
                shutil.copy(tmp_path / "a" / "pepper.key", tmp_path / name / "pepper.key")
            made.append(
                stack.enter_context(
                    Daemon(tmp_path / name, sections, store=store, throttle=THROTTLE)
                )
            )
        yield Doors(made)


def unique(daemons: list[Daemon]) -> list[Daemon]:
    return list({id(d): d for d in daemons}.values())


def outcomes(daemons: list[Daemon], start: list[int], count: int) -> list[str]:
    """The outcomes audited after `start` (per process: its own file's line count)."""
    scenario.audited(unique(daemons), sum(start) + count)
    return [
        e["outcome"]
        for d, begin in zip(unique(daemons), start, strict=True)
        for e in scenario.auth_lines([d])[begin:]
    ]


class Doors(list[Daemon]):
    """The doors, and how many binds went through them (each leaves one audit line)."""

    sent = 0


def mark(daemons: Doors) -> list[int]:
    """Each process's audit line count, once every bind sent has its line on disk."""
    total = len(scenario.audited(unique(daemons), daemons.sent))
    assert total == daemons.sent, (total, daemons.sent)
    return [len(scenario.auth_lines([d])) for d in unique(daemons)]


def logs(daemons: list[Daemon]) -> str:
    return "".join(d.stderr_path.read_text() for d in unique(daemons))


def every_door(daemons: Doors, barcode: str, pin: str, times: int = 3) -> list[int]:
    """LDAP result codes of `times` binds on each door, alternately (a new connection each: on
    two workers the kernel spreads them)."""
    daemons.sent += times * len(daemons)
    return [scenario.bind(d, barcode, pin) for _ in range(times) for d in daemons]


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_refuse_on_every_door_then_recover(
    tmp_path: Path, private_redis: PrivateRedis, topology: str
) -> None:
    card = DEMO["active"]
    with doors(tmp_path, topology, private_redis.url, "refuse") as two:
        assert every_door(two, card, DEMO_PIN) == [0] * 6  # verified and cached everywhere
        private_redis.stop()
        # Once each process has noticed, every door refuses, cached PIN or not.
        assert scenario.within(10, lambda: set(every_door(two, card, DEMO_PIN, 2)) == {52})
        start = mark(two)
        assert set(every_door(two, card, DEMO_PIN) + every_door(two, DEMO["minor"], DEMO_PIN)) == {
            52
        }
        assert set(outcomes(two, start, 12)) == {"store_unavailable"}
        private_redis.start()  # empty: this server keeps nothing
        assert scenario.within(20, lambda: every_door(two, card, DEMO_PIN, 2) == [0] * 4)
    text = logs(two)
    assert '"event":"state_unavailable"' in text and '"event":"state_available"' in text


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_local_budget_across_processes_then_shared_again(
    tmp_path: Path, private_redis: PrivateRedis, topology: str
) -> None:
    with doors(tmp_path, topology, private_redis.url, "local") as two:
        assert every_door(two, DEMO["active"], DEMO_PIN, 1) == [0, 0]
        private_redis.stop()
        start = mark(two)
        card = DEMO["minor"]
        assert every_door(two, card, WRONG_PIN, 6) == [49] * 12
        evaluated = outcomes(two, start, 12).count("bad_pin")
        # Each process: 6 // (hosts x workers) = 3; all processes together: at most 6.
        assert LOCK_AFTER // 2 <= evaluated <= LOCK_AFTER
        if topology == "two_daemons":
            assert evaluated == LOCK_AFTER  # alternated: each host used its whole share
        assert every_door(two, DEMO["active"], DEMO_PIN, 1) == [0, 0]  # others still get in
        private_redis.start()

        def recovered() -> bool:  # a request after `retry_seconds` probes Redis again
            every_door(two, DEMO["active"], DEMO_PIN, 1)
            return logs(two).count('"event":"state_available"') >= 2  # both processes

        assert scenario.within(20, recovered)
        # Shared again: one budget of card_lock_after over both doors for a fresh card.
        start = mark(two)
        assert every_door(two, DEMO["fines"], WRONG_PIN, 6) == [49] * 12
        assert outcomes(two, start, 12).count("bad_pin") == LOCK_AFTER
    assert '"event":"state_local_fallback"' in logs(two)
