"""The postgres store's own promises: atomic PIN changes under a killed backend, deadlines and
recovery when the database stalls or goes away, migrations shared by several hosts, config."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from bridge.app import store_settings
from bridge.config import ConfigError, loads
from bridge.core.patron import Outcome
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from plugins.postgres import MIGRATIONS, PostgresSettings, PostgresStore
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN
from tests.plugins import servers
from tests.plugins.conftest import (
    CountingHasher,
    Opened,
    authenticator,
    ctx,
    open_kind,
    open_plugin,
    pg_settings,
)
from tests.plugins.seed import ACTIVE, FINES

PAUSE_LOCK = 4242


@pytest.fixture
async def pg(hasher: CountingHasher, tmp_path: Path) -> AsyncIterator[Opened]:
    async with open_kind("postgres", hasher, tmp_path) as opened:
        yield opened


async def pin_is(store: Any, pin: str) -> bool:
    return bool((await store.verify_pin(ACTIVE.barcode, Secret(pin))).pin_ok)


def install_pause(dbname: str) -> None:
    """A test-only trigger: after the PIN row is written, and before the transaction commits,
    the changing backend waits for an advisory lock the test holds."""
    with servers.pg_admin(dbname) as admin:
        admin.execute(
            "CREATE FUNCTION pause_after_write() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_advisory_xact_lock({PAUSE_LOCK}); RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER pause AFTER UPDATE OF pin_hash ON patrons "
            "FOR EACH ROW EXECUTE FUNCTION pause_after_write()"
        )


async def paused_backend(admin: psycopg.AsyncConnection[Any], dbname: str) -> int | None:
    cur = await admin.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = %s",
        (dbname,),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def test_killed_backend_mid_change_leaves_the_old_pin(pg: Opened) -> None:
    """The UPDATE has run, the COMMIT has not: killing the backend rolls it all back."""
    store = pg.store
    assert isinstance(store, PostgresStore)
    install_pause(pg.dbname)
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    admin = await psycopg.AsyncConnection.connect(
        host=servers.PG_HOST,
        port=servers.PG_PORT,
        user="postgres",
        dbname=pg.dbname,
        autocommit=True,
    )
    try:
        await admin.execute("SELECT pg_advisory_lock(%s)", (PAUSE_LOCK,))
        change = asyncio.ensure_future(store.change_pin(patron, Secret(NEW_PIN)))
        pid: int | None = None

        async def waiting() -> bool:
            nonlocal pid
            pid = await paused_backend(admin, pg.dbname)
            return pid is not None or change.done()

        await servers.wait_until(waiting, "the PIN change to wait inside its transaction")
        assert pid is not None, change
        await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable) as failed:
            await change
        assert "timed out" not in str(failed.value)  # the kill ended it, not the deadline
        await admin.execute("SELECT pg_advisory_unlock(%s)", (PAUSE_LOCK,))
    finally:
        await admin.close()
    # Old PIN, not new, not neither; and the pool recovered without a restart.
    assert await pin_is(store, DEMO_PIN)
    assert not await pin_is(store, NEW_PIN)


async def test_killed_backend_after_commit_keeps_the_new_pin(pg: Opened) -> None:
    store = pg.store
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    await store.change_pin(patron, Secret(NEW_PIN))
    # Kill every connection the store holds (a failover, an admin's pg_terminate_backend).
    with servers.pg_admin(pg.dbname) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (pg.dbname,),
        )
    # The first query after finds a dead connection, checks the pool and retries once.
    assert await pin_is(store, NEW_PIN)
    assert not await pin_is(store, DEMO_PIN)


async def test_concurrent_changes_leave_exactly_one(pg: Opened) -> None:
    store = pg.store
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    await asyncio.gather(
        store.change_pin(patron, Secret(NEW_PIN)), store.change_pin(patron, Secret(OTHER_PIN))
    )
    results = [await pin_is(store, pin) for pin in (DEMO_PIN, NEW_PIN, OTHER_PIN)]
    assert results.count(True) == 1 and not results[0]


async def test_down_and_stalled_database(hasher: CountingHasher, tmp_path: Path) -> None:
    """Down or stalled: "store unavailable" at the deadline; back again without a restart."""
    proxy = await servers.Proxy(servers.PG_HOST, servers.PG_PORT).start()
    try:
        async with open_kind(
            "postgres",
            hasher,
            tmp_path,
            port=proxy.port,
            query_timeout=1.0,
            connect_timeout=1.0,
            pool_min=1,
            pool_max=2,
        ) as opened:
            store = opened.store
            assert await pin_is(store, DEMO_PIN)
            proxy.stall()
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                with pytest.raises(StoreUnavailable, match=r"timed out|no database connection"):
                    await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
                decision = await authenticator(store).authenticate(
                    ACTIVE.barcode, Secret(DEMO_PIN), ctx()
                )
                assert decision.outcome is Outcome.STORE_UNAVAILABLE
                health = await authenticator(store).health()
                assert not health.ok
            await proxy.down()
            async with asyncio.timeout(30):
                with pytest.raises(StoreUnavailable):
                    await store.lookup(ACTIVE.barcode)
            await proxy.up()

            async def answers() -> bool:
                try:
                    return await pin_is(store, DEMO_PIN)
                except StoreUnavailable:
                    return False

            await servers.wait_until(answers, "the postgres store to recover", timeout=60)
            assert (await store.health()).ok
    finally:
        await proxy.close()


async def test_unreachable_at_start_is_store_unavailable(
    hasher: CountingHasher, tmp_path: Path
) -> None:
    proxy = await servers.Proxy(servers.PG_HOST, servers.PG_PORT).start()
    port = proxy.port
    await proxy.close()  # nothing listens there now
    settings = pg_settings("postgres", port=port, connect_timeout=1.0)
    with pytest.raises(StoreUnavailable, match="cannot connect"):
        await open_plugin("postgres", settings, hasher, tmp_path)


async def test_migrations_are_shared_by_hosts(hasher: CountingHasher, tmp_path: Path) -> None:
    """Two hosts opening a new database at once migrate it once; reopening changes nothing."""
    with servers.pg_database() as dbname:
        first, second = await asyncio.gather(
            open_plugin("postgres", pg_settings(dbname), hasher, tmp_path),
            open_plugin("postgres", pg_settings(dbname), hasher, tmp_path),
        )
        try:
            with servers.pg_admin(dbname) as admin:
                rows = admin.execute(
                    "SELECT version FROM patron_bridge_migrations ORDER BY version"
                ).fetchall()
            assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
            assert await first.count() == 0 and await second.count() == 0
        finally:
            await first.aclose()
            await second.aclose()
        again = await open_plugin("postgres", pg_settings(dbname), hasher, tmp_path)
        await again.aclose()


async def test_demo_patrons_load_once(hasher: CountingHasher, tmp_path: Path) -> None:
    from tests.harness import DEMO, DEMO_CSV

    with servers.pg_database() as dbname:
        settings = pg_settings(dbname, demo=True, demo_file=str(DEMO_CSV))
        store = await open_plugin("postgres", settings, hasher, tmp_path)
        try:
            count = await store.count()
            assert count > 0
            assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
        finally:
            await store.aclose()
        store = await open_plugin("postgres", settings, hasher, tmp_path)
        try:
            assert await store.count() == count
        finally:
            await store.aclose()


async def test_email_lookup_ignores_case(pg: Opened) -> None:
    store = pg.store
    assert isinstance(store, PostgresStore)
    found = await store.lookup_by_email(ACTIVE.email.upper() if ACTIVE.email else "")
    assert [p.barcode for p in found] == [ACTIVE.barcode]
    fines = await store.lookup(FINES.barcode)
    assert fines is not None and str(fines.fines) == "25.00"


def test_config_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PB_TEST_PG_PASSWORD", "from-env")
    config = loads(
        '[store]\nplugin = "postgres"\nhost = "db.internal"\ndbname = "patrons"\n'
        'user = "bridge"\npassword_env = "PB_TEST_PG_PASSWORD"\npool_max = 20\n'
        'query_timeout = 2.5\nsslmode = "verify-full"\n',
        base_dir=tmp_path,
    )
    _, settings = store_settings(config)
    assert settings.password == "from-env" and settings.pool_max == 20
    from plugins.postgres import conninfo

    info = conninfo(settings, str(tmp_path))
    assert "statement_timeout=2500" in info and "sslmode=verify-full" in info
    bad = loads('[store]\nplugin = "postgres"\nhostname = "x"\n', source="b.toml")
    with pytest.raises(ConfigError, match=r"b.toml: store.hostname: unknown key"):
        store_settings(bad)
    bad = loads('[store]\nplugin = "postgres"\nsslmode = "sometimes"\n', source="b.toml")
    with pytest.raises(ConfigError, match=r"store.sslmode"):
        store_settings(bad)


async def test_throttle_counters_in_the_store(
    pg: Opened, hasher: CountingHasher, tmp_path: Path
) -> None:
    """`[throttle] state = "store"`: a lock set through one host survives into another."""
    from bridge.core.throttle import Throttle, ThrottleRules

    store = pg.store
    assert isinstance(store, PostgresStore)
    rules = ThrottleRules(card_free_failures=1, card_lock_after=3)
    backend = store.throttle_backend()
    throttle = Throttle(rules, backend)
    for now in (1000.0, 1001.0, 1002.0):
        throttle.record_failure(ACTIVE.barcode, "192.0.2.9", now)
    assert throttle.card_locked(ACTIVE.barcode, 1003.0)
    backend.flush()
    other_host = await open_plugin("postgres", pg_settings(pg.dbname), hasher, tmp_path)
    try:
        other_backend = other_host.throttle_backend()
        restored = Throttle(rules, other_backend)
        assert restored.card_locked(ACTIVE.barcode, 1003.0)
        restored.clear(ACTIVE.barcode)
        other_backend.close()
    finally:
        await other_host.aclose()
    throttle.close()
    again = Throttle(rules, store.throttle_backend())
    assert not again.card_locked(ACTIVE.barcode, 1003.0)
    again.close()


async def test_throttle_state_store_through_the_config(pg: Opened, tmp_path: Path) -> None:
    from bridge.app import open_core
    from bridge.state.postgres_guard import PostgresGuard
    from tests import harness

    store = (
        f'[store]\nplugin = "postgres"\nhost = "{servers.PG_HOST}"\nport = {servers.PG_PORT}\n'
        f'dbname = "{pg.dbname}"\nuser = "postgres"\n'
    )
    text = harness.base_config(tmp_path, store=store).replace(
        "[throttle]\n", '[throttle]\nstate = "store"\n'
    )
    # The seeded store holds hashes but no fingerprint (the fixture opened it without a pepper
    # file): an existing pepper file is taken and recorded; a missing one would be refused.
    (tmp_path / "pepper.key").write_bytes(os.urandom(32))
    core = await open_core(loads(text, base_dir=tmp_path))
    try:
        assert isinstance(core.throttle, PostgresGuard)  # decided live in the database
    finally:
        await core.aclose()
    sqlite = harness.base_config(tmp_path).replace("[throttle]\n", '[throttle]\nstate = "store"\n')
    with pytest.raises(ConfigError, match=r"throttle\.state"):
        await open_core(loads(sqlite, base_dir=tmp_path))


async def test_throttle_writes_survive_a_database_outage(pg: Opened, tmp_path: Path) -> None:
    """A write that cannot reach the database is dropped (memory still holds the counter), and
    writes resume when it is back; nothing raises into the authentication path."""
    from bridge.core.throttle import Counter
    from plugins.postgres import PostgresThrottleBackend, conninfo

    proxy = await servers.Proxy(servers.PG_HOST, servers.PG_PORT).start()
    try:
        settings = msgspec.convert(
            pg_settings(pg.dbname, port=proxy.port, connect_timeout=1.0),
            PostgresSettings,
            strict=False,
        )
        backend = PostgresThrottleBackend(conninfo(settings, str(tmp_path)))
        backend.RETRY_AFTER = 0.0
        loop = asyncio.get_running_loop()
        backend.save("card:1", Counter(1, 1.0, 0.0, False))
        await loop.run_in_executor(None, backend.flush)
        await proxy.down()
        backend.save("card:2", Counter(1, 1.0, 0.0, False))
        await loop.run_in_executor(None, backend.flush)
        assert backend.dropped == 1
        await proxy.up()
        backend.save("card:3", Counter(1, 1.0, 0.0, False))
        await loop.run_in_executor(None, backend.flush)
        loaded = await loop.run_in_executor(None, backend.load)
        assert sorted(loaded) == ["card:1", "card:3"]
        await loop.run_in_executor(None, backend.close)
    finally:
        await proxy.close()
