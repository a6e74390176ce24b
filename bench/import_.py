"""Import benchmark: `patron import` rows per second on SQLite and PostgreSQL, next to the bound
the KDF sets for rows with plain PINs.

`python -m bench import_` (or `python -m bench.import_ --pin-rows 10000` for the full PIN run).

Three files per store, each imported into a fresh store through the same `Importer` the CLI
runs (read, duplicate check, per-batch lookups, hashing on the hasher's threads, one transaction
per batch):

- 10,000 rows with `pin_hash` (one Argon2id hash made beforehand): no KDF work;
- 10,000 rows without a PIN;
- `--pin-rows` rows with plain PINs (default 2,000, about 30 s on two cores at production cost):
  bounded by the KDF, reported against cores / time of one hash (measured serially first).

Then the 10,000 pin_hash rows are imported again over the existing patrons (all updates). Goal
(issue 13): >= 20,000 rows/s without KDF work, >= 90 % of the KDF bound with PINs. Nothing here
is asserted; a server that is not running is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import resource
import socket
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import psycopg

from bridge.core.pin import KdfParams, PinHasher, PinPolicy
from bridge.core.secret import Secret
from bridge.core.store import StoreServices, load_plugin
from bridge.importer import Importer, ImportOptions, Problem, duplicates, read_rows

PG = ("127.0.0.1", 5432)
ROWS = 10_000
PINS = ("5961", "4820", "7315", "9042")


def _csv(path: Path, rows: int, kind: str, pin_hash: str) -> Path:
    last = {"hash": "pin_hash", "pin": "pin"}.get(kind, "fines")
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["barcode", "name", "email", "category", "expires", last])
        for i in range(rows):
            extra = {"hash": pin_hash, "pin": PINS[i % len(PINS)]}.get(kind, "0")
            writer.writerow(
                [f"4{i:013d}", f"Patron {i}", f"p{i}@example.org", "ADULT", "2030-12-31", extra]
            )
    return path


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


@contextlib.asynccontextmanager
async def _store(kind: str, hasher: PinHasher, tmp: str) -> AsyncIterator[tuple[Any, str | None]]:
    name = f"pb_bench_import_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        settings: dict[str, Any] = {"path": f"{tmp}/{name}.db"}
    else:
        with psycopg.connect(host=PG[0], port=PG[1], user="postgres", autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        settings = {"host": PG[0], "port": PG[1], "dbname": name, "user": "postgres"}
    plugin = load_plugin(kind)
    parsed = msgspec.convert(settings, plugin.settings, strict=False)
    store = await plugin.open(parsed, StoreServices(hasher=hasher, base_dir=tmp))
    try:
        yield store, (None if kind == "sqlite" else name)
    finally:
        await store.aclose()
        if kind != "sqlite":
            with psycopg.connect(host=PG[0], port=PG[1], user="postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _cpu() -> float:
    """CPU seconds this process has used so far, every thread (the KDF threads included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _server_cpu(dbname: str | None) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving `dbname` (read from /proc:
    the server is on this machine), 0 for SQLite."""
    if dbname is None:
        return 0.0
    with psycopg.connect(host=PG[0], port=PG[1], user="postgres", autocommit=True) as admin:
        pids = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchall()
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for (pid,) in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


@dataclass(frozen=True, slots=True)
class Run:
    """One import: rows written, wall seconds, CPU seconds of the importing process and of the
    database server's backends (PostgreSQL only)."""

    rows: int
    seconds: float
    cpu: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds

    @property
    def per_cpu_second(self) -> float:
        return self.rows / max(self.cpu + self.server_cpu, 1e-9)


async def _import(store: Any, hasher: PinHasher, path: Path, dbname: str | None) -> Run:
    server_before, before = _server_cpu(dbname), _cpu()
    rows, seconds = await _import_rows(store, hasher, path)
    cpu = _cpu() - before
    return Run(rows, seconds, cpu, _server_cpu(dbname) - server_before)


async def _import_rows(store: Any, hasher: PinHasher, path: Path) -> tuple[int, float]:
    problems: list[Problem] = []
    with path.open(encoding="utf-8", newline="") as first:
        _, repeated = duplicates(first)
    importer = Importer(
        store, hasher, PinPolicy(), ImportOptions(), problems.append, lambda _done: None
    )
    with path.open(encoding="utf-8", newline="") as handle:
        summary = await importer.run(read_rows(handle, PinPolicy(), ImportOptions(), repeated))
    assert not problems, problems[:3]
    return summary.added + summary.updated, summary.seconds


def kdf_bound(hasher: PinHasher, samples: int = 12) -> tuple[float, float, float]:
    """(seconds per hash on one core, hashes/s on every worker, CPU seconds per hash): the
    wall time of a serial hash grows when other work shares the core, its CPU time does not."""
    hasher.hash_sync(Secret("5961"))
    started, cpu = time.perf_counter(), time.thread_time()
    for _ in range(samples):
        hasher.hash_sync(Secret("5961"))
    one = (time.perf_counter() - started) / samples
    return one, hasher.workers / one, (time.thread_time() - cpu) / samples


async def pool_rate(hasher: PinHasher, seconds: float = 4.0) -> float:
    """Hashes/s through the hasher's pool alone (every worker busy, no import around it): on a
    shared machine this is what the cores really give, where cores / serial time assumes
    every core is free."""
    done = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await hasher.hash(Secret("5961"))
            done += 1

    await asyncio.gather(*(worker() for _ in range(hasher.workers * 2)))
    return done / (time.perf_counter() - started)


def _kdf_line(run: Run, hasher: PinHasher, bound: float, alone: float, cpu_hash: float) -> str:
    """Where a PIN import's time went: its rate against the bound (cores / serial hash) and the
    pool measured alone, then the two factors of the first: the share of the cores this process
    got (the rest went to others on a shared machine) and the share of its CPU that was KDF
    work (the rest is the import's own reading, SQL and bookkeeping)."""
    got = run.cpu / (run.seconds * hasher.workers)
    kdf = run.rows * cpu_hash / run.cpu
    return (
        f"{100 * run.rate / bound:.0f} % of {bound:.1f} (cores / serial hash); "
        f"{100 * run.rate / alone:.0f} % of {alone:.1f} (the pool alone); "
        f"cores got {100 * got:.0f} %, KDF share of its CPU {100 * kdf:.0f} %"
    )


async def run(pin_rows: int) -> None:
    hasher = PinHasher(os.urandom(32), KdfParams())
    one, bound, cpu_hash = kdf_bound(hasher)
    pin_hash = hasher.hash_sync(Secret("5961"))
    kinds = ["sqlite"] + (["postgres"] if _reachable(*PG) else [])
    print("\n## patron import (rows/s; production Argon2id 19 MiB t=2)")
    print(
        f"KDF: {one * 1000:.1f} ms a hash on one core ({cpu_hash * 1000:.1f} ms CPU), "
        f"{hasher.workers} workers: bound {bound:.1f} PIN rows/s; load average "
        f"{os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'store':<10} {'rows':>7} {'kind':<22} {'rows/s':>10} {'rows/CPU-s':>11}  "
        "(importer + database server CPU)"
    )
    with tempfile.TemporaryDirectory(prefix="pb-bench-import-") as tmp:
        files = {
            "pin_hash": _csv(Path(tmp) / "hash.csv", ROWS, "hash", pin_hash),
            "no PIN": _csv(Path(tmp) / "none.csv", ROWS, "none", pin_hash),
            "plain PIN": _csv(Path(tmp) / "pin.csv", pin_rows, "pin", pin_hash),
        }
        for kind in kinds:
            for label, path in files.items():
                if label == "plain PIN":  # the bound again, right before: the machine is shared
                    one, bound, cpu_hash = kdf_bound(hasher)
                    alone = await pool_rate(hasher)
                async with _store(kind, hasher, tmp) as (store, dbname):
                    done = await _import(store, hasher, path, dbname)
                    more = ""
                    if label == "plain PIN":
                        more = _kdf_line(done, hasher, bound, alone, cpu_hash)
                    print(
                        f"{kind:<10} {done.rows:>7} {label:<22} {done.rate:>10,.0f} "
                        f"{done.per_cpu_second:>11,.0f}  {more}"
                    )
                    if label == "pin_hash":
                        again = await _import(store, hasher, path, dbname)
                        print(
                            f"{kind:<10} {again.rows:>7} {'pin_hash, all updates':<22} "
                            f"{again.rate:>10,.0f} {again.per_cpu_second:>11,.0f}"
                        )
        if "postgres" not in kinds:
            print("  postgres: not running on 127.0.0.1:5432, skipped")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    hasher.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import_")
    parser.add_argument("--pin-rows", type=int, default=2000, help="rows with plain PINs")
    args = parser.parse_args(argv)
    asyncio.run(run(args.pin_rows))


if __name__ == "__main__":
    main()
