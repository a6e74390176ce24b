"""`patron-bridge migrate --check`: exit 1 while migrations are pending, 0 once applied; it
never changes the database. SQLite here; PostgreSQL against the real server."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from plugins.postgres import MIGRATIONS as PG_MIGRATIONS
from plugins.sqlite import MIGRATIONS
from tests.harness import Daemon
from tests.plugins.servers import pg_database as postgres_database

LATEST = len(MIGRATIONS)


def test_sqlite_check_then_migrate_then_check(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    missing = daemon.cli("migrate", "--check")
    assert (missing.returncode, missing.stdout) == (
        1,
        f"no sqlite database yet: the first start creates schema {LATEST}\n",
    )
    assert not (tmp_path / "patrons.db").exists()  # the check created nothing
    applied = daemon.cli("migrate")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout == f"sqlite schema {LATEST} is current\n"
    current = daemon.cli("migrate", "--check")
    assert (current.returncode, current.stdout) == (
        0,
        f"sqlite schema {LATEST} is current: nothing pending\n",
    )


def test_sqlite_pending_and_newer_schemas(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path)
    assert daemon.cli("migrate").returncode == 0
    db = tmp_path / "patrons.db"
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {LATEST - 1}")
    pending = daemon.cli("migrate", "--check")
    assert pending.returncode == 1
    assert pending.stdout == (
        f"1 migration(s) pending: sqlite schema {LATEST - 1} -> {LATEST}, applied at the next "
        "start (back up first)\n"
    )
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST - 1  # untouched
        conn.execute(f"PRAGMA user_version = {LATEST + 5}")
    newer = daemon.cli("migrate", "--check")
    assert newer.returncode == 2
    assert "is newer than this version knows" in newer.stdout


def test_a_store_without_a_schema_has_nothing_to_migrate(tmp_path: Path) -> None:
    store = '[store]\nplugin = "sip2"\nhost = "127.0.0.1"\n'
    result = Daemon(tmp_path, store=store).cli("migrate", "--check")
    assert (result.returncode, result.stdout) == (
        0,
        "the sip2 store keeps no schema of its own: nothing to migrate\n",
    )


@pytest.fixture
def pg_database() -> Iterator[str]:
    with postgres_database() as name:
        yield name


@pytest.mark.service
def test_postgres_check(tmp_path: Path, pg_database: str) -> None:
    store = f"""
[store]
plugin = "postgres"
host = "127.0.0.1"
user = "postgres"
dbname = "{pg_database}"
"""
    daemon = Daemon(tmp_path, store=store)
    fresh = daemon.cli("migrate", "--check")
    assert fresh.returncode == 1, fresh.stderr
    assert fresh.stdout.startswith(f"{len(PG_MIGRATIONS)} migration(s) pending: postgres schema 0")
    assert daemon.cli("migrate").returncode == 0
    done = daemon.cli("migrate", "--check")
    assert (done.returncode, done.stdout) == (
        0,
        f"postgres schema {len(PG_MIGRATIONS)} is current: nothing pending\n",
    )
