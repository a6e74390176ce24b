"""koha-sql against a real MariaDB holding Koha's tables: every authenticator outcome, Koha's
hash forms, the read-only grant, and a database that stalls or goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pymysql
import pytest

from bridge.config import ConfigError, loads
from bridge.core.patron import Outcome
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable
from plugins.koha_sql import KohaSqlStore, koha_hash
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import ils_fixtures, servers
from tests.plugins.conftest import CountingHasher, Opened, authenticator, ctx, open_kind
from tests.plugins.ils_fixtures import (
    KOHA_ADMIN_LOCK,
    KOHA_LOCKED,
    KOHA_MD5,
    KOHA_PW_EXPIRED,
    KOHA_RESTRICTED,
)
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, FINES, UNKNOWN


@pytest.fixture
async def koha(hasher: CountingHasher, tmp_path: Path) -> AsyncIterator[Opened]:
    async with open_kind("koha-sql", hasher, tmp_path) as opened:
        yield opened


async def outcome(
    store: KohaSqlStore, barcode: str, pin: str, fines_limit: str = "10.00"
) -> Outcome:
    auth = authenticator(store)
    decision = await auth.authenticate(barcode, Secret(pin), ctx(fines_limit))
    return decision.outcome  # type: ignore[no-any-return]


async def test_every_outcome(koha: Opened) -> None:
    store = koha.store
    assert isinstance(store, KohaSqlStore)
    assert await outcome(store, ACTIVE.barcode, DEMO_PIN) is Outcome.ACCEPTED
    assert await outcome(store, ACTIVE.barcode, WRONG_PIN) is Outcome.BAD_PIN
    assert await outcome(store, UNKNOWN, DEMO_PIN) is Outcome.UNKNOWN_CARD
    assert await outcome(store, EXPIRED.barcode, DEMO_PIN) is Outcome.CARD_EXPIRED
    assert await outcome(store, BLOCKED.barcode, DEMO_PIN) is Outcome.CARD_BLOCKED
    assert await outcome(store, FINES.barcode, DEMO_PIN) is Outcome.FINES_OVER_LIMIT
    assert await outcome(store, FINES.barcode, DEMO_PIN, "100.00") is Outcome.ACCEPTED
    assert await outcome(store, "bad barcode", DEMO_PIN) is Outcome.BAD_INPUT
    # The bridge's own lock: two wrong PINs, then even the right one is refused.
    auth = authenticator(store)
    for pin in (WRONG_PIN, WRONG_PIN):
        await auth.authenticate(ACTIVE.barcode, Secret(pin), ctx())
    locked = await auth.authenticate(ACTIVE.barcode, Secret(DEMO_PIN), ctx())
    assert locked.outcome is Outcome.CARD_LOCKED


async def test_koha_standing_is_mapped(koha: Opened) -> None:
    store = koha.store
    expectations = {
        KOHA_LOCKED.barcode: "too many failed logins",  # login_attempts >= FailedLoginAttempts
        KOHA_ADMIN_LOCK.barcode: "locked by staff",  # login_attempts < 0
        KOHA_RESTRICTED.barcode: "see the desk",  # borrower_debarments
        KOHA_PW_EXPIRED.barcode: "PIN expired",  # password_expiration_date passed
        BLOCKED.barcode: "card reported lost",  # lost = 1
    }
    for barcode, reason in expectations.items():
        patron = await store.lookup(barcode)
        assert patron is not None and patron.blocked, barcode
        assert reason in (patron.blocked_reason or ""), (barcode, patron.blocked_reason)
        # The right PIN is still recognised (SIP2 answers CQY for a blocked patron).
        decision = await authenticator(store).authenticate(barcode, Secret(DEMO_PIN), ctx())
        assert decision.outcome is Outcome.CARD_BLOCKED and decision.pin_ok
    fines = await store.lookup(FINES.barcode)
    assert fines is not None and str(fines.fines) == "25.00"  # debit 30, payment -5
    assert fines.home_library == "MAIN" and fines.record_id.isdigit()


async def test_legacy_md5_and_bcrypt_forms(koha: Opened) -> None:
    store = koha.store
    assert (await store.verify_pin(KOHA_MD5.barcode, Secret(DEMO_PIN))).pin_ok
    assert not (await store.verify_pin(KOHA_MD5.barcode, Secret(WRONG_PIN))).pin_ok
    verification = await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
    assert verification.pin_ok and not verification.needs_rehash  # Koha owns its hashes
    assert koha_hash("!") is None and koha_hash("") is None and koha_hash(None) is None
    assert koha_hash("$2a$08$abc") == "$2a$08$abc"
    assert koha_hash("abc") == "{MD5}abc"


async def test_the_grant_refuses_writes(koha: Opened) -> None:
    """The account the plugin uses can read, and every write is refused by the server."""
    conn = pymysql.connect(
        host=servers.MY_HOST,
        port=servers.MY_PORT,
        user=koha.extra["user"],
        password=koha.extra["password"],
        database=koha.dbname,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM borrowers")
            assert cur.fetchone()[0] > 0
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cur.execute(
                    "UPDATE borrowers SET login_attempts = 0 WHERE cardnumber = %s",
                    (ACTIVE.barcode,),
                )
            assert refused.value.args[0] == 1142  # ER_TABLEACCESS_DENIED_ERROR
    finally:
        conn.close()
    # The plugin's own sessions are read-only as well (defence if the grant is too wide).
    store = koha.store
    assert isinstance(store, KohaSqlStore)

    def write(cur: pymysql.cursors.Cursor) -> None:
        cur.execute("UPDATE borrowers SET login_attempts = 0 WHERE cardnumber = %s", ("x",))

    with pytest.raises(pymysql.err.MySQLError):
        await asyncio.get_running_loop().run_in_executor(None, store._conns.run, write)


async def test_down_and_stalled_database(hasher: CountingHasher, tmp_path: Path) -> None:
    """Down or stalled: "store unavailable" at the deadline; back again without a restart."""
    proxy = await servers.Proxy(servers.MY_HOST, servers.MY_PORT).start()
    try:
        async with open_kind(
            "koha-sql",
            hasher,
            tmp_path,
            host="127.0.0.1",
            port=proxy.port,
            query_timeout=1.0,
            connect_timeout=1.0,
        ) as opened:
            store = opened.store
            assert await store.lookup(ACTIVE.barcode) is not None
            proxy.stall()
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                with pytest.raises(StoreUnavailable, match="timed out"):
                    await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))
                auth = authenticator(store)
                decision = await auth.authenticate(ACTIVE.barcode, Secret(DEMO_PIN), ctx())
                assert decision.outcome is Outcome.STORE_UNAVAILABLE
            await proxy.down()
            async with asyncio.timeout(30):
                with pytest.raises(StoreUnavailable):
                    await store.lookup(ACTIVE.barcode)
            await proxy.up()

            async def answers() -> bool:
                try:
                    return (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
                except StoreUnavailable:
                    return False

            await servers.wait_until(answers, "koha-sql to recover")
    finally:
        await proxy.close()


async def test_config_keys(tmp_path: Path) -> None:
    from bridge.app import store_settings

    (tmp_path / "koha.pw").write_text("s3cret\n")
    config = loads(
        '[store]\nplugin = "koha-sql"\ndatabase = "koha_main"\nuser = "bridge_ro"\n'
        'password_file = "koha.pw"\nfailed_login_attempts = 3\n',
        base_dir=tmp_path,
    )
    _, settings = store_settings(config)
    assert settings.password == "s3cret" and settings.failed_login_attempts == 3
    bad = loads('[store]\nplugin = "koha-sql"\ndatabse = "koha"\n', source="b.toml")
    with pytest.raises(ConfigError, match=r"b.toml: store.databse: unknown key"):
        store_settings(bad)
    bad = loads('[store]\nplugin = "koha-sql"\nemail_columns = ["phone"]\n', source="b.toml")
    with pytest.raises(ConfigError, match=r"store.email_columns"):
        store_settings(bad)


def test_fixture_hashes_look_like_kohas() -> None:
    assert ils_fixtures.koha_bcrypt(DEMO_PIN).startswith("$2a$08$")
    assert len(ils_fixtures.koha_md5(DEMO_PIN)) == 22
