"""evergreen-sql against a real PostgreSQL holding Evergreen's tables, with passwords written by
pgcrypto exactly as Evergreen writes them: every authenticator outcome, the read-only role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.patron import Outcome
from bridge.core.secret import Secret
from bridge.core.store import NotSupported
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.plugins import servers
from tests.plugins.conftest import CountingHasher, Opened, authenticator, ctx, open_kind
from tests.plugins.ils_fixtures import (
    EG_ALERT,
    EG_CARD_INACTIVE,
    EG_DELETED,
    EG_EMPTY_LEGACY,
    EG_INACTIVE,
    EG_PENALTY,
    EG_PENALTY_ELSEWHERE,
    EG_PENALTY_SIBLING,
    EG_UNMIGRATED,
)
from tests.plugins.seed import ACTIVE, BLOCKED, EXPIRED, FINES, UNKNOWN, SeedPatron


@pytest.fixture
async def evergreen(hasher: CountingHasher, tmp_path: Path) -> AsyncIterator[Opened]:
    async with open_kind("evergreen-sql", hasher, tmp_path) as opened:
        yield opened


async def outcome(opened: Opened, barcode: str, pin: str, fines_limit: str = "10.00") -> Outcome:
    decision = await authenticator(opened.store).authenticate(
        barcode, Secret(pin), ctx(fines_limit)
    )
    return decision.outcome  # type: ignore[no-any-return]


async def test_every_outcome(evergreen: Opened) -> None:
    assert await outcome(evergreen, ACTIVE.barcode, DEMO_PIN) is Outcome.ACCEPTED
    assert await outcome(evergreen, ACTIVE.barcode, WRONG_PIN) is Outcome.BAD_PIN
    assert await outcome(evergreen, UNKNOWN, DEMO_PIN) is Outcome.UNKNOWN_CARD
    assert await outcome(evergreen, EXPIRED.barcode, DEMO_PIN) is Outcome.CARD_EXPIRED
    assert await outcome(evergreen, BLOCKED.barcode, DEMO_PIN) is Outcome.CARD_BLOCKED
    assert await outcome(evergreen, FINES.barcode, DEMO_PIN) is Outcome.FINES_OVER_LIMIT
    assert await outcome(evergreen, FINES.barcode, DEMO_PIN, "100.00") is Outcome.ACCEPTED
    assert await outcome(evergreen, "", DEMO_PIN) is Outcome.BAD_INPUT
    auth = authenticator(evergreen.store)
    for pin in (WRONG_PIN, WRONG_PIN):
        await auth.authenticate(ACTIVE.barcode, Secret(pin), ctx())
    locked = await auth.authenticate(ACTIVE.barcode, Secret(DEMO_PIN), ctx())
    assert locked.outcome is Outcome.CARD_LOCKED


async def test_evergreen_standing_is_mapped(evergreen: Opened) -> None:
    store = evergreen.store
    expectations = {
        BLOCKED.barcode: "barred",
        EG_INACTIVE.barcode: "account inactive",
        EG_CARD_INACTIVE.barcode: "card inactive",
        EG_PENALTY.barcode: "Patron exceeds fine threshold",
    }
    for barcode, reason in expectations.items():
        decision = await authenticator(store).authenticate(barcode, Secret(DEMO_PIN), ctx())
        assert decision.outcome is Outcome.CARD_BLOCKED and decision.pin_ok, barcode
        assert decision.patron is not None
        assert reason in (decision.patron.blocked_reason or ""), decision.patron.blocked_reason
    # An alert penalty (no block_list) and an ended penalty block nothing.
    assert await outcome(evergreen, EG_ALERT.barcode, DEMO_PIN) is Outcome.ACCEPTED
    # Deleted users do not exist for the bridge, as for Evergreen's own login.
    assert await outcome(evergreen, EG_DELETED.barcode, DEMO_PIN) is Outcome.UNKNOWN_CARD
    fines = await store.lookup(FINES.barcode)
    assert fines is not None and str(fines.fines) == "25.00"  # the closed transaction is ignored
    assert fines.category == "ADULT" and fines.home_library == "MAIN"


async def test_pgcrypto_and_the_bridge_agree(evergreen: Opened) -> None:
    """Evergreen's own in-database check (as actor.verify_passwd does it) and the bridge's
    Python check give the same answers for the same stored row."""
    with servers.pg_admin(evergreen.dbname) as admin:
        row = admin.execute(
            "SELECT p.passwd = crypt(md5(p.salt || md5(%s)), p.salt), "
            "       p.passwd = crypt(md5(p.salt || md5(%s)), p.salt) "
            "FROM actor.passwd p JOIN actor.card c ON c.usr = p.usr WHERE c.barcode = %s",
            (DEMO_PIN, WRONG_PIN, ACTIVE.barcode),
        ).fetchone()
    assert row == (True, False)
    store = evergreen.store
    assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    assert not (await store.verify_pin(ACTIVE.barcode, Secret(WRONG_PIN))).pin_ok


async def test_read_only(evergreen: Opened) -> None:
    store = evergreen.store
    patron = await store.lookup(ACTIVE.barcode)
    assert patron is not None
    with pytest.raises(NotSupported):
        await store.change_pin(patron, Secret(NEW_PIN))
    conn = await psycopg.AsyncConnection.connect(
        host=servers.PG_HOST,
        port=servers.PG_PORT,
        dbname=evergreen.dbname,
        user=evergreen.extra["user"],
        password=evergreen.extra["password"],
        autocommit=True,
    )
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("UPDATE actor.usr SET barred = false WHERE id = 1")
    finally:
        await conn.close()
    # And every session the plugin opens is read-only, whatever the role may do.
    from plugins.evergreen_sql import EvergreenSqlStore

    assert isinstance(store, EvergreenSqlStore)

    async def write(c: psycopg.AsyncConnection[tuple[object, ...]]) -> None:
        await c.execute("CREATE TEMP TABLE scratch (x int)")

    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        await store.db.run(write)


async def test_down_and_stalled_database(hasher: CountingHasher, tmp_path: Path) -> None:
    """Down or stalled: "store unavailable" at the deadline; back again without a restart."""
    import asyncio

    from bridge.core.store import StoreUnavailable

    proxy = await servers.Proxy(servers.PG_HOST, servers.PG_PORT).start()
    try:
        async with open_kind(
            "evergreen-sql", hasher, tmp_path, port=proxy.port, query_timeout=1.0
        ) as opened:
            assert await outcome(opened, ACTIVE.barcode, DEMO_PIN) is Outcome.ACCEPTED
            proxy.stall()
            async with asyncio.timeout(30):  # a hang guard, not a timing assertion
                assert await outcome(opened, ACTIVE.barcode, DEMO_PIN) is Outcome.STORE_UNAVAILABLE
            await proxy.down()
            async with asyncio.timeout(30):
                with pytest.raises(StoreUnavailable):
                    await opened.store.lookup(ACTIVE.barcode)
            await proxy.up()

            async def answers() -> bool:
                return await outcome(opened, ACTIVE.barcode, DEMO_PIN) is Outcome.ACCEPTED

            await servers.wait_until(answers, "evergreen-sql to recover", timeout=60)
    finally:
        await proxy.close()


async def test_dsn_form(evergreen: Opened, hasher: CountingHasher, tmp_path: Path) -> None:
    from tests.plugins.conftest import open_plugin

    dsn = f"postgresql://{evergreen.extra['user']}@{servers.PG_HOST}:{servers.PG_PORT}/{evergreen.dbname}"
    store = await open_plugin(
        "evergreen-sql", {"dsn": dsn, "password": evergreen.extra["password"]}, hasher, tmp_path
    )
    try:
        assert (await store.verify_pin(ACTIVE.barcode, Secret(DEMO_PIN))).pin_ok
    finally:
        await store.aclose()


# -- users whose password was never migrated into actor.passwd -------------------------------


async def test_never_migrated_password(evergreen: Opened, hasher: CountingHasher) -> None:
    """Only actor.usr.passwd (MD5 hex of the PIN): verified read-only, where it used to be
    refused as a wrong PIN and counted toward the lock. The MD5 of the empty string is no
    password; nothing is written (Evergreen itself would migrate on its next login)."""
    assert await outcome(evergreen, EG_UNMIGRATED.barcode, DEMO_PIN) is Outcome.ACCEPTED
    assert await outcome(evergreen, EG_UNMIGRATED.barcode, WRONG_PIN) is Outcome.BAD_PIN
    before = hasher.kdf_runs
    await evergreen.store.verify_pin(EG_UNMIGRATED.barcode, Secret(DEMO_PIN))
    assert hasher.kdf_runs - before == 2  # the MD5 and a bcrypt, as a migrated user costs
    for pin in (DEMO_PIN, WRONG_PIN):
        assert not (await evergreen.store.verify_pin(EG_EMPTY_LEGACY.barcode, Secret(pin))).pin_ok
    with servers.pg_admin(evergreen.dbname) as admin:
        row = admin.execute(
            "SELECT u.passwd = md5(%s), (SELECT count(*) FROM actor.passwd p WHERE p.usr = u.id) "
            "FROM actor.usr u JOIN actor.card c ON c.usr = u.id WHERE c.barcode = %s",
            (DEMO_PIN, EG_UNMIGRATED.barcode),
        ).fetchone()
    assert row == (True, 0)  # still unmigrated: the bridge only read


def test_evergreen_hash_forms() -> None:
    import hashlib

    from plugins.evergreen_sql import evergreen_hash

    md5 = hashlib.md5(DEMO_PIN.encode()).hexdigest()
    assert (
        evergreen_hash("$2a$10$salt", "$2a$10$crypt", md5) == "$evergreen$$2a$10$salt$$2a$10$crypt"
    )
    assert evergreen_hash(None, None, md5) == "{MD5}" + md5
    assert evergreen_hash(None, None, md5.upper()) == "{MD5}" + md5
    assert evergreen_hash(None, None, hashlib.md5(b"").hexdigest()) is None
    for junk in ("", None, "open-ils", "x" * 32, md5[:31], md5 + "0"):
        assert evergreen_hash(None, None, junk) is None
    assert evergreen_hash("$2a$10$salt", None, md5) is None  # half a main row: no password


# -- standing penalties scoped like Evergreen's circulation rules ----------------------------


async def test_penalties_scoped_to_the_home_library_by_default(evergreen: Opened) -> None:
    """Org tree CONS > SYS1 > {MAIN, BR2}, CONS > SYS2 > BR3; patrons' home is MAIN. A penalty
    counts when set in MAIN's full path (ancestors and descendants), as
    action.item_user_circ_test counts them."""
    assert await outcome(evergreen, EG_PENALTY.barcode, DEMO_PIN) is Outcome.CARD_BLOCKED  # CONS
    for elsewhere in (EG_PENALTY_ELSEWHERE, EG_PENALTY_SIBLING):  # BR3, BR2
        assert await outcome(evergreen, elsewhere.barcode, DEMO_PIN) is Outcome.ACCEPTED


@pytest.mark.parametrize(
    ("org_unit", "blocked", "accepted"),
    [
        ("SYS1", (EG_PENALTY, EG_PENALTY_SIBLING), (EG_PENALTY_ELSEWHERE,)),
        ("BR3", (EG_PENALTY, EG_PENALTY_ELSEWHERE), (EG_PENALTY_SIBLING,)),
        ("CONS", (EG_PENALTY, EG_PENALTY_SIBLING, EG_PENALTY_ELSEWHERE), ()),
    ],
)
async def test_penalties_scoped_to_the_configured_org_unit(
    evergreen: Opened,
    hasher: CountingHasher,
    tmp_path: Path,
    org_unit: str,
    blocked: tuple[SeedPatron, ...],
    accepted: tuple[SeedPatron, ...],
) -> None:
    from tests.plugins.conftest import open_plugin, pg_settings

    settings = pg_settings(
        evergreen.dbname,
        user=evergreen.extra["user"],
        password=evergreen.extra["password"],
        org_unit=org_unit,
    )
    store = await open_plugin("evergreen-sql", settings, hasher, tmp_path)
    try:
        opened = Opened("evergreen-sql", store)
        for patron in blocked:
            assert await outcome(opened, patron.barcode, DEMO_PIN) is Outcome.CARD_BLOCKED
        for patron in accepted:
            assert await outcome(opened, patron.barcode, DEMO_PIN) is Outcome.ACCEPTED
    finally:
        await store.aclose()


async def test_unknown_org_unit_is_refused_at_start(
    evergreen: Opened, hasher: CountingHasher, tmp_path: Path
) -> None:
    from bridge.core.store import StoreError
    from tests.plugins.conftest import open_plugin, pg_settings

    settings = pg_settings(
        evergreen.dbname,
        user=evergreen.extra["user"],
        password=evergreen.extra["password"],
        org_unit="NOPE",
    )
    with pytest.raises(StoreError, match=r"org_unit 'NOPE' is no actor\.org_unit shortname"):
        await open_plugin("evergreen-sql", settings, hasher, tmp_path)


async def test_a_value_the_driver_cannot_load_is_store_unavailable(evergreen: Opened) -> None:
    """`infinity` in a timestamptz is a value psycopg refuses to load: the request gets the
    defined "store unavailable" answer, never an exception the front ends do not expect."""
    from bridge.core.store import StoreUnavailable

    with servers.pg_admin(evergreen.dbname) as admin:
        admin.execute(
            "UPDATE actor.usr SET expire_date = 'infinity' "
            "WHERE id = (SELECT usr FROM actor.card WHERE barcode = %s)",
            (EG_ALERT.barcode,),
        )
    with pytest.raises(StoreUnavailable, match="DataError"):
        await evergreen.store.lookup(EG_ALERT.barcode)
    assert await outcome(evergreen, EG_ALERT.barcode, DEMO_PIN) is Outcome.STORE_UNAVAILABLE


@given(
    salt=st.one_of(st.none(), st.text(max_size=40)),
    passwd=st.one_of(st.none(), st.text(max_size=80)),
    legacy=st.one_of(st.none(), st.text(max_size=80)),
)
def test_property_evergreen_hash_forms(
    salt: str | None, passwd: str | None, legacy: str | None
) -> None:
    """Whatever the columns hold: the main row's form, a 32-hex-digit MD5, or no password."""
    from plugins.evergreen_sql import evergreen_hash

    result = evergreen_hash(salt, passwd, legacy)
    if result is None:
        return
    if result.startswith("{MD5}"):
        digest = result[5:]
        assert (
            not salt and not passwd and len(digest) == 32 and not digest.strip("0123456789abcdef")
        )
    else:
        assert result == f"$evergreen${salt}${passwd}"
