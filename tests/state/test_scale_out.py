"""Issue 12 end to end: one logical bridge made of several processes and hosts.

- two daemons (different ports) on one PostgreSQL store and one Redis;
- one daemon with `[server] workers = 2`, SQLite state, and again with Redis state.
Each runs `tests/state/scenario.py`: a card's guessing budget, its lock, a lock cleared, a PIN
changed and a card blocked are one state whichever process or host is asked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon
from tests.plugins import servers
from tests.plugins.test_shared_store import store_toml
from tests.state import scenario
from tests.state.redis_server import shared_prefix


def redis_state(url: str, prefix: str, extra: str = "") -> str:
    return f"""
[state]
backend = "redis"
url = "{url}"
key_prefix = "{prefix}"
{extra}
"""


def cli(daemon: Daemon, *args: str) -> Any:
    return daemon.cli(*args)


@pytest.fixture
def redis_prefix() -> Iterator[tuple[str, str]]:
    with shared_prefix() as found:
        yield found


def test_two_daemons_one_postgres_one_redis(tmp_path: Path, redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    with servers.pg_database() as dbname:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        sections = scenario.LDAP + redis_state(url, prefix)
        store = store_toml(dbname)
        with Daemon(a_dir, sections, store=store, throttle=scenario.THROTTLE) as a:
            shutil.copy(a_dir / "pepper.key", b_dir / "pepper.key")  # one pepper per library
            with Daemon(b_dir, sections, store=store, throttle=scenario.THROTTLE) as b:
                assert a.address("ldap") != b.address("ldap")
                scenario.run(a, b, cli)


WORKERS = "\n[server]\nworkers = 2\n"


def test_one_daemon_two_workers_sqlite_state(tmp_path: Path) -> None:
    sections = scenario.LDAP + WORKERS + '\n[state]\nbackend = "sqlite"\n'
    with Daemon(tmp_path, sections, throttle=scenario.THROTTLE) as daemon:
        scenario.run(daemon, daemon, cli)
    assert daemon.stop() == 0


def test_one_daemon_two_workers_redis_state(tmp_path: Path, redis_prefix: tuple[str, str]) -> None:
    url, prefix = redis_prefix
    sections = scenario.LDAP + WORKERS + redis_state(url, prefix)
    with Daemon(tmp_path, sections, throttle=scenario.THROTTLE) as daemon:
        scenario.run(daemon, daemon, cli)


def test_two_daemons_postgres_only(tmp_path: Path) -> None:
    """No Redis: the postgres store's own throttle tables, decided live in the database, and
    invalidations by LISTEN/NOTIFY (`[throttle] state = "store"`)."""
    with servers.pg_database() as dbname:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        throttle = 'state = "store"\n' + scenario.THROTTLE
        store = store_toml(dbname)
        with Daemon(a_dir, scenario.LDAP, store=store, throttle=throttle) as a:
            shutil.copy(a_dir / "pepper.key", b_dir / "pepper.key")
            with Daemon(b_dir, scenario.LDAP, store=store, throttle=throttle) as b:
                scenario.run(a, b, cli)
