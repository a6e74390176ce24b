"""Store benchmark: PIN verifications per second and lookup latency, for the SQLite, PostgreSQL,
Koha (MariaDB) and Evergreen (PostgreSQL) stores, at 1,000, 100,000 and 1,000,000 patrons.

`python -m bench stores` (or `python -m bench.stores --sizes 1000` for a quick run).

Rows are inserted in bulk with one precomputed hash (server-side `generate_series` / MariaDB's
sequence engine where possible), then each store is opened through its plugin, as the daemon
opens it. Lookups run one at a time over random known barcodes (latency); verifications run
with as many requests in flight as the KDF pool has workers, for a fixed wall-clock budget, with
the production hash costs (bridge: Argon2id 19 MiB t=2 with the pepper; Koha: bcrypt cost 8;
Evergreen: md5 + bcrypt cost 10), so the rate is what one bridge host would sustain. The CPU
column is the bridge process's own CPU (KDF, driver, event loop); database server CPU is not
included. A server that is not running is skipped with a note. Every run is bounded: a few
minutes for everything, most of it building the million-row databases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import socket
import sqlite3
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import bcrypt
import msgspec
import psycopg
import pymysql

from bench.common import CpuMeter, Result, report
from bridge.core.pin import KdfParams, PinHasher
from bridge.core.secret import Secret
from bridge.core.store import StoreServices, load_plugin

PG = ("127.0.0.1", 5432)
MY = ("127.0.0.1", 3306)
PIN = "5961"  # the demo PIN (tests/pins.py DEMO_PIN)
LOOKUPS = 2000
VERIFY_SECONDS = 3.0
SIZES = (1_000, 100_000, 1_000_000)


def barcode(i: int) -> str:
    return f"3{i:013d}"


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


async def open_plugin(name: str, settings: dict[str, Any], hasher: PinHasher, base: str) -> Any:
    plugin = load_plugin(name)
    parsed = msgspec.convert(settings, plugin.settings, strict=False)
    return await plugin.open(parsed, StoreServices(hasher=hasher, base_dir=base))


# -- building the databases --------------------------------------------------------------------


@contextlib.contextmanager
def pg_database(prefix: str) -> Any:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(host=PG[0], port=PG[1], user="postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill_sqlite(path: Path, n: int, pin_hash: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA synchronous = OFF")
        now = "2026-01-01T00:00:00+00:00"
        conn.executemany(
            "INSERT INTO patrons (barcode, record_id, name, email, category, expires, blocked, "
            "blocked_reason, fines, home_library, pin_hash, pin_changed_at, updated_at) "
            "VALUES (?, ?, ?, ?, 'ADULT', '2099-12-31', 0, NULL, '0.00', 'MAIN', ?, ?, ?)",
            (
                (barcode(i), f"r{i}", f"Patron, No{i}", f"p{i}@example.org", pin_hash, now, now)
                for i in range(n)
            ),
        )


def fill_postgres(dbname: str, n: int, pin_hash: str) -> None:
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname=dbname) as conn:
        conn.execute(
            "INSERT INTO patrons (barcode, record_id, name, email, category, expires, pin_hash) "
            "SELECT '3' || lpad(i::text, 13, '0'), 'r' || i, 'Patron, No' || i, "
            "'p' || i || '@example.org', 'ADULT', date '2099-12-31', %s "
            "FROM generate_series(0, %s - 1) AS i",
            (pin_hash, n),
        )
        conn.execute("ANALYZE patrons")


def fill_koha(dbname: str, n: int) -> dict[str, str]:
    from tests.plugins.ils_fixtures import KOHA_SCHEMA

    pin_hash = bcrypt.hashpw(PIN.encode(), bcrypt.gensalt(8, prefix=b"2a")).decode()
    user, password = f"koha_bench_{uuid.uuid4().hex[:8]}", secrets.token_hex(12)
    conn = pymysql.connect(host=MY[0], port=MY[1], user="root", database=dbname, autocommit=True)
    try:
        with conn.cursor() as cur:
            for statement in KOHA_SCHEMA:
                cur.execute(statement)
            cur.execute("INSERT INTO branches VALUES ('MAIN', 'Main Library')")
            cur.execute("INSERT INTO categories (categorycode, description) VALUES ('ADULT', 'A')")
            cur.execute(
                "INSERT INTO systempreferences (variable, value) "
                "VALUES ('FailedLoginAttempts', '5')"
            )
            cur.execute("SET SESSION unique_checks = 0")
            # MariaDB's sequence engine: one server-side statement for the whole table.
            cur.execute(
                "INSERT INTO borrowers (cardnumber, surname, firstname, email, branchcode, "
                "categorycode, dateexpiry, password, userid) "
                f"SELECT CONCAT('3', LPAD(seq, 13, '0')), 'Patron', CONCAT('No', seq), "
                f"CONCAT('p', seq, '@example.org'), 'MAIN', 'ADULT', '2099-12-31', %s, "
                f"CONCAT('u', seq) FROM seq_0_to_{n - 1}",
                (pin_hash,),
            )
            cur.execute("ANALYZE TABLE borrowers")
            for host in ("%", "localhost"):
                cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
                cur.execute(f"GRANT SELECT ON `{dbname}`.* TO '{user}'@'{host}'")
    finally:
        conn.close()
    return {"user": user, "password": password}


def fill_evergreen(dbname: str, n: int) -> None:
    from tests.plugins.ils_fixtures import EVERGREEN_SCHEMA

    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", dbname=dbname) as conn:
        conn.execute(EVERGREEN_SCHEMA)
        row = conn.execute("SELECT gen_salt('bf', 10)").fetchone()
        assert row is not None
        salt = str(row[0])
        crypted = conn.execute("SELECT crypt(md5(%s || md5(%s)), %s)", (salt, PIN, salt)).fetchone()
        assert crypted is not None
        conn.execute(
            "INSERT INTO actor.usr (id, card, profile, usrname, email, passwd, first_given_name, "
            "family_name, home_ou, expire_date) "
            "SELECT i, i, 2, 'u' || i, 'p' || i || '@example.org', '', 'No' || i, 'Patron', 2, "
            "timestamptz '2099-12-31' FROM generate_series(1, %s) AS i",
            (n,),
        )
        conn.execute(
            "INSERT INTO actor.card (id, usr, barcode) "
            "SELECT i, i, '3' || lpad((i - 1)::text, 13, '0') FROM generate_series(1, %s) AS i",
            (n,),
        )
        conn.execute(
            "INSERT INTO actor.passwd (usr, salt, passwd, passwd_type) "
            "SELECT i, %s, %s, 'main' FROM generate_series(1, %s) AS i",
            (salt, crypted[0], n),
        )
        conn.execute("ANALYZE")


# -- one backend, opened and measured ------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(kind: str, n: int, hasher: PinHasher, tmp: str) -> AsyncIterator[Any]:
    if kind == "sqlite":
        path = Path(tmp) / f"bench-{n}.db"
        store = await open_plugin("sqlite", {"path": str(path)}, hasher, tmp)
        fill_sqlite(path, n, await hasher.hash(Secret(PIN)))
        try:
            yield store
        finally:
            await store.aclose()
    elif kind == "postgres":
        with pg_database("pb_bench") as dbname:
            settings = {"host": PG[0], "port": PG[1], "dbname": dbname, "user": "postgres"}
            store = await open_plugin("postgres", settings, hasher, tmp)
            try:
                fill_postgres(dbname, n, await hasher.hash(Secret(PIN)))
                yield store
            finally:
                await store.aclose()
    elif kind == "koha-sql":
        dbname = f"pb_bench_koha_{uuid.uuid4().hex[:8]}"
        root = pymysql.connect(host=MY[0], port=MY[1], user="root", autocommit=True)
        with root.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{dbname}`")
        account: dict[str, str] = {}
        try:
            account = fill_koha(dbname, n)
            settings = {"host": MY[0], "port": MY[1], "database": dbname, **account}
            store = await open_plugin("koha-sql", settings, hasher, tmp)
            try:
                yield store
            finally:
                await store.aclose()
        finally:
            with root.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{dbname}`")
                for host in ("%", "localhost"):
                    if account:
                        cur.execute(f"DROP USER IF EXISTS '{account['user']}'@'{host}'")
            root.close()
    elif kind == "evergreen-sql":
        with pg_database("pb_bench_eg") as dbname:
            fill_evergreen(dbname, n)
            settings = {"host": PG[0], "port": PG[1], "dbname": dbname, "user": "postgres"}
            store = await open_plugin("evergreen-sql", settings, hasher, tmp)
            try:
                yield store
            finally:
                await store.aclose()
    else:
        raise ValueError(kind)


async def measure_lookups(store: Any, n: int, label: str, server: str) -> Result:
    rng = random.Random(8)
    picks = [barcode(rng.randrange(n)) for _ in range(LOOKUPS)]
    latencies: list[float] = []
    with CpuMeter(os.getpid()) as meter:
        for code in picks:
            t = time.perf_counter()
            patron = await store.lookup(code)
            latencies.append(time.perf_counter() - t)
            assert patron is not None, code
    return Result(label, server, LOOKUPS, meter.wall, latencies, meter.seconds)


async def measure_verifications(
    store: Any, n: int, hasher: PinHasher, label: str, server: str
) -> Result:
    rng = random.Random(9)
    pin = Secret(PIN)
    latencies: list[float] = []
    deadline = time.perf_counter() + VERIFY_SECONDS

    async def worker() -> None:
        while time.perf_counter() < deadline:
            code = barcode(rng.randrange(n))
            t = time.perf_counter()
            result = await store.verify_pin(code, pin)
            latencies.append(time.perf_counter() - t)
            assert result.pin_ok, code

    with CpuMeter(os.getpid()) as meter:
        await asyncio.gather(*(worker() for _ in range(hasher.workers * 2)))
    return Result(label, server, len(latencies), meter.wall, latencies, meter.seconds)


BACKENDS: tuple[tuple[str, str, tuple[str, int] | None], ...] = (
    ("sqlite", "sqlite", None),
    ("postgres", "postgresql", PG),
    ("koha-sql", "mariadb", MY),
    ("evergreen-sql", "postgresql", PG),
)


async def run(sizes: Sequence[int], kinds: Sequence[str]) -> None:
    results: list[Result] = []
    notes: list[str] = []
    hasher = PinHasher(os.urandom(32), KdfParams())  # production KDF cost
    notes.append(f"KDF pool: {hasher.workers} workers; {os.cpu_count()} CPUs")
    try:
        with tempfile.TemporaryDirectory(prefix="pb-bench-") as tmp:
            for n in sizes:
                for kind, server, address in BACKENDS:
                    if kind not in kinds:
                        continue
                    if address is not None and not reachable(*address):
                        notes.append(f"{kind}: skipped, no server at {address[0]}:{address[1]}")
                        continue
                    started = time.perf_counter()
                    async with opened(kind, n, hasher, tmp) as store:
                        built = time.perf_counter() - started
                        size = f"{n:,}"
                        results.append(
                            await measure_lookups(store, n, f"{kind} lookup @{size}", server)
                        )
                        results.append(
                            await measure_verifications(
                                store, n, hasher, f"{kind} verify @{size}", server
                            )
                        )
                    notes.append(f"{kind} @{n:,}: database built in {built:.1f}s")
    finally:
        hasher.close()
    notes.append("CPU us/req: the bridge process only (not the database server)")
    report("stores: lookups (one at a time) and PIN verifications (KDF pool busy)", results, notes)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stores", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--stores", nargs="+", default=[k for k, _, _ in BACKENDS])
    args = parser.parse_args(argv if argv is not None else [])
    asyncio.run(run(args.sizes, args.stores))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
