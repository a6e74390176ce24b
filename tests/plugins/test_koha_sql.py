"""koha-sql against a real MariaDB holding Koha's tables: every authenticator outcome, Koha's
hash forms, the read-only grant, and a database that stalls or goes away."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pymysql
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.config import ConfigError, loads
from bridge.core.patron import Outcome
from bridge.core.secret import Secret
from bridge.core.store import StoreUnavailable, ascii_case_insensitive, same_barcode
from plugins.koha_sql import KohaSqlStore, UnreadableRow, koha_date, koha_hash
from tests.eksblowfish import koha_perl_bcrypt
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins import ils_fixtures, servers
from tests.plugins.conftest import CountingHasher, Opened, authenticator, ctx, open_kind
from tests.plugins.ils_fixtures import (
    KOHA_ADMIN_LOCK,
    KOHA_LIFTED_TODAY,
    KOHA_LOCKED,
    KOHA_LONG_PASSPHRASE,
    KOHA_LOWERCASE,
    KOHA_MD5,
    KOHA_PASSPHRASE,
    KOHA_PW_EXPIRED,
    KOHA_RESTRICTED,
    KOHA_RESTRICTED_TOMORROW,
    KOHA_USERID_CLASH,
    KOHA_ZERO_DATES,
    koha_userid,
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


# -- old upgraded databases: zero dates ----------------------------------------------------------


async def test_zero_dates_are_no_dates(koha: Opened) -> None:
    """0000-00-00 in dateexpiry, debarred and password_expiration_date (an old upgraded Koha):
    the card never expires and is not restricted, as Koha reads it; it used to raise out of the
    store (no answer, no audit line, `patron show` crashed)."""
    patron = await koha.store.lookup(KOHA_ZERO_DATES.barcode)
    assert patron is not None
    assert patron.expires is None and not patron.blocked, patron.blocked_reason
    decision = await authenticator(koha.store).authenticate(
        KOHA_ZERO_DATES.barcode, Secret(DEMO_PIN), ctx()
    )
    assert decision.outcome is Outcome.ACCEPTED


async def test_a_date_that_is_no_date_is_store_unavailable(koha: Opened) -> None:
    """An impossible date (only storable with ALLOW_INVALID_DATES) is not guessed at: the
    request gets the defined "store unavailable" answer, never an exception."""
    admin = servers.mariadb_admin(koha.dbname)
    try:
        with admin.cursor() as cur:
            cur.execute("SET SESSION sql_mode = 'ALLOW_INVALID_DATES'")
            cur.execute(
                "UPDATE borrowers SET debarred = '2030-02-30' WHERE cardnumber = %s",
                (KOHA_ZERO_DATES.barcode,),
            )
        admin.commit()
    finally:
        admin.close()
    with pytest.raises(StoreUnavailable, match=r"borrowers\.debarred is not a date"):
        await koha.store.lookup(KOHA_ZERO_DATES.barcode)
    decision = await authenticator(koha.store).authenticate(
        KOHA_ZERO_DATES.barcode, Secret(DEMO_PIN), ctx()
    )
    assert decision.outcome is Outcome.STORE_UNAVAILABLE
    assert DEMO_PIN not in decision.reason


def test_koha_date_forms() -> None:
    assert koha_date(None, "d") is None
    assert koha_date("0000-00-00", "d") is None
    assert koha_date("0000-00-00 00:00:00", "d") is None
    assert koha_date(dt.date(2030, 1, 2), "d") == dt.date(2030, 1, 2)
    assert koha_date(dt.datetime(2030, 1, 2, 3, 4), "d") == dt.date(2030, 1, 2)
    assert koha_date("2030-01-02", "d") == dt.date(2030, 1, 2)
    for bad in ("2026-00-00", "2030-02-30", "", "x" * 10_000, "9999-99-99", "\x00", b"2030"):
        with pytest.raises(UnreadableRow, match=r"borrowers\.d is not a date"):
            koha_date(bad, "d")


@given(st.one_of(st.text(max_size=40), st.binary(max_size=20), st.integers(), st.none()))
def test_property_koha_date_is_a_date_none_or_unreadable(value: object) -> None:
    try:
        result = koha_date(value, "col")
    except UnreadableRow:
        return
    assert result is None or isinstance(result, dt.date)


# -- restrictions ending today ---------------------------------------------------------------


async def test_restriction_ending_today_is_already_lifted(koha: Opened) -> None:
    """Koha::Patron->is_debarred: `debarred > now`, so a restriction until today no longer
    applies (and a borrower_debarments row expiring today is not live either)."""
    auth = authenticator(koha.store)
    lifted = await auth.authenticate(KOHA_LIFTED_TODAY.barcode, Secret(DEMO_PIN), ctx())
    assert lifted.outcome is Outcome.ACCEPTED, lifted.reason
    still = await auth.authenticate(KOHA_RESTRICTED_TOMORROW.barcode, Secret(DEMO_PIN), ctx())
    assert still.outcome is Outcome.CARD_BLOCKED
    assert "restricted until" in still.reason


# -- long passphrases --------------------------------------------------------------------------


async def test_long_passphrase_made_by_kohas_eksblowfish(
    hasher: CountingHasher, tmp_path: Path
) -> None:
    """A patron whose 87-byte passphrase Koha hashed (Crypt::Eksblowfish, first 72 bytes) logs
    in; the bcrypt package alone raised and the bridge refused."""
    stored = koha_perl_bcrypt(KOHA_LONG_PASSPHRASE.encode())
    build = {"passphrase_hash": stored}
    async with open_kind("koha-sql", hasher, tmp_path, build=build) as opened:
        auth = authenticator(opened.store)
        right = await auth.authenticate(
            KOHA_PASSPHRASE.barcode, Secret(KOHA_LONG_PASSPHRASE), ctx()
        )
        assert right.outcome is Outcome.ACCEPTED
        wrong = await auth.authenticate(
            KOHA_PASSPHRASE.barcode, Secret("x" + KOHA_LONG_PASSPHRASE[1:]), ctx()
        )
        assert wrong.outcome is Outcome.BAD_PIN


# -- case-insensitive card numbers -------------------------------------------------------------


async def test_case_variants_are_one_card(koha: Opened) -> None:
    """Koha's collation finds `k19abc` as `K19ABC`: the store says so, and the authenticator
    keys its lock on the one canonical form, so alternating case buys no extra guesses."""
    store = koha.store
    assert isinstance(store, KohaSqlStore) and store.canonical_barcode is ascii_case_insensitive
    auth = authenticator(store)  # locks at the second wrong PIN
    upper = KOHA_LOWERCASE.barcode.upper()
    for typed in (KOHA_LOWERCASE.barcode, upper):
        accepted = await auth.authenticate(typed, Secret(DEMO_PIN), ctx())
        assert accepted.outcome is Outcome.ACCEPTED and accepted.patron is not None
        assert accepted.patron.barcode == KOHA_LOWERCASE.barcode  # as Koha stores it
    assert (await auth.authenticate("K19aBc", Secret(WRONG_PIN), ctx())).outcome is (
        Outcome.BAD_PIN
    )
    assert (await auth.authenticate("k19AbC", Secret(WRONG_PIN), ctx())).outcome is (
        Outcome.BAD_PIN
    )
    for typed in (KOHA_LOWERCASE.barcode, upper):
        locked = await auth.authenticate(typed, Secret(DEMO_PIN), ctx())
        assert locked.outcome is Outcome.CARD_LOCKED
    assert auth.throttle.card_locked(upper, auth.clock())
    assert auth.clear_lock("k19abc", actor="test")  # staff may type it either way
    accepted = await auth.authenticate(upper, Secret(DEMO_PIN), ctx())
    assert accepted.outcome is Outcome.ACCEPTED


async def test_exact_collation_is_the_identity(koha: Opened) -> None:
    """A library that made card numbers case-sensitive (`utf8mb4_bin`) gets exact keys."""
    admin = servers.mariadb_admin(koha.dbname)
    try:
        with admin.cursor() as cur:
            cur.execute(
                "ALTER TABLE borrowers MODIFY cardnumber varchar(32) "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL"
            )
    finally:
        admin.close()
    store = koha.store
    assert isinstance(store, KohaSqlStore)
    assert await store.detect_collation() == "utf8mb4_bin"
    assert store.canonical_barcode is same_barcode
    assert authenticator(store).canonical("k19abc") == "k19abc"
    assert await store.lookup("K19ABC") is None


def test_canonical_form_keeps_the_barcode_rules() -> None:
    assert ascii_case_insensitive("k19abc") == "K19ABC"
    assert ascii_case_insensitive("ſ19") == "ſ19"  # str.upper would make it ASCII "S19"
    assert ascii_case_insensitive("ß") == "ß"


@given(st.text(max_size=80))
def test_property_canonical_is_total_idempotent_and_keeps_validity(text: str) -> None:
    from bridge.core.auth import valid_barcode

    once = ascii_case_insensitive(text)
    assert ascii_case_insensitive(once) == once
    assert len(once) == len(text) and valid_barcode(once) == valid_barcode(text)


# -- login by Koha userid ----------------------------------------------------------------------


async def test_identifier_userid(hasher: CountingHasher, tmp_path: Path) -> None:
    async with open_kind("koha-sql", hasher, tmp_path, identifier="userid") as opened:
        auth = authenticator(opened.store)
        by_userid = await auth.authenticate(koha_userid(ACTIVE), Secret(DEMO_PIN), ctx())
        assert by_userid.outcome is Outcome.ACCEPTED and by_userid.patron is not None
        assert by_userid.patron.barcode == ACTIVE.barcode  # front ends report the card
        by_card = await auth.authenticate(FINES.barcode, Secret(DEMO_PIN), ctx())
        assert by_card.outcome is Outcome.UNKNOWN_CARD  # a card number is no userid
        # ... unless it is one: KOHA_USERID_CLASH's userid is ACTIVE's card number.
        clash = await auth.authenticate(ACTIVE.barcode, Secret(DEMO_PIN), ctx())
        assert clash.patron is not None and clash.patron.name == KOHA_USERID_CLASH.name
        assert (await opened.store.lookup(koha_userid(ACTIVE).upper())) is not None


async def test_identifier_either_precedence_and_one_key(
    hasher: CountingHasher, tmp_path: Path
) -> None:
    """`either`: the card number first, then the userid. One patron's userid and card number
    share one lock, kept under the card number."""
    async with open_kind("koha-sql", hasher, tmp_path, identifier="either") as opened:
        auth = authenticator(opened.store)  # locks at the second wrong PIN
        # ACTIVE's card number is also KOHA_USERID_CLASH's userid: the card wins.
        first = await auth.authenticate(ACTIVE.barcode, Secret(DEMO_PIN), ctx())
        assert first.patron is not None and first.patron.name == ACTIVE.name
        # (With `identifier = "userid"` the same string names KOHA_USERID_CLASH, see above.)
        assert auth.settle(ACTIVE.barcode, Secret(DEMO_PIN), ctx()) is None  # needs the store

        login = koha_userid(FINES)
        for typed in (login, FINES.barcode):
            wrong = await auth.authenticate(typed, Secret(WRONG_PIN), ctx())
            assert wrong.outcome is Outcome.BAD_PIN
        for typed in (login.upper(), FINES.barcode):
            locked = await auth.authenticate(typed, Secret(DEMO_PIN), ctx())
            assert locked.outcome is Outcome.CARD_LOCKED
        assert auth.throttle.card_locked(FINES.barcode, auth.clock())
        assert not auth.throttle.card_locked(login, auth.clock())
        unknown = await auth.authenticate("nobody-at-all", Secret(DEMO_PIN), ctx())
        assert unknown.outcome is Outcome.UNKNOWN_CARD
