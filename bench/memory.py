"""Memory benchmark: the daemon's resident set with many idle connections and with a large store.

1. Idle connections: the real daemon (SQLite store of the 1000 generated patrons, audit on)
   holds IDLE connections, half SIP2 (each logged in with a 93, as a self-check sits for days)
   and half LDAP (each bound as a patron, as a pooled EZproxy or Apache connection sits between
   logins). The listeners' admission caps are raised for it (`max_connections`,
   `max_connections_per_source`) and the daemon starts with a 20,000-descriptor limit, as a
   service unit with `LimitNOFILE=20000` would. RSS (VmRSS) and descriptors are read from /proc
   after start and warm-up, after the SIP2 half, after the LDAP half, and after all are closed.
2. A large store: the same daemon with 1000 patrons, then with LARGE patrons in its SQLite file
   (the extra rows made by one SQL statement, every pin_hash the daemon's own hash of patron 0's
   PIN, so no KDF runs while building), RSS after start and after LOOKUPS SIP2 63s with the PIN
   spread over the whole set (each a cold verification: store lookup and KDF).

Both use the test harness's fast KDF (argon2id 8 MiB, t=1): a hash's memory is held only while
it runs. Nothing here is timed; the machine's load does not change the figures much.

    python -m bench memory
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from bench.common import open_fds, raise_fd_limit, rss_kib
from bench.ldap import BASE_DN, PATRONS_DN, _bind, _code, _read_pdu
from bench.patrons import BenchPatron, generate, store_section, write_csv
from bench.sip2 import LOGIN, STAMP, _with_trailer
from bridge.loop import run as run_loop

IDLE = int(os.environ.get("BENCH_IDLE_CONNECTIONS", "10000"))
LARGE = int(os.environ.get("BENCH_MEMORY_PATRONS", "1000000"))
LOOKUPS = int(os.environ.get("BENCH_MEMORY_LOOKUPS", "2000"))
DAEMON_FILES = 20_000
OPENING = 200  # connections being opened at once

SECTIONS = f"""
[sip2]
listen = ["127.0.0.1:0"]
max_connections = {IDLE}
max_connections_per_source = {IDLE}

[[sip2.accounts]]
login = "bench"
password = "bench-secret-1"
institution = "MAIN"

[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
max_connections = {IDLE}
max_connections_per_source = {IDLE}

[cache]
ttl = 3600
"""


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


def _sample(pid: int) -> tuple[int, int]:
    return rss_kib(pid), open_fds(pid)


def _patron_63(barcode: str, pin: str, sequence: int = 0) -> bytes:
    return _with_trailer(f"63001{STAMP}          AOMAIN|AA{barcode}|AC|AD{pin}|", sequence % 10)


async def _open_sip2(address: tuple[str, int]) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(LOGIN)
    if not (await reader.readuntil(b"\r")).startswith(b"941"):
        raise RuntimeError("bench login refused")
    return writer


async def _open_ldap(address: tuple[str, int], bind: bytes) -> asyncio.StreamWriter:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(bind)
    if _code(await _read_pdu(reader)) != 0:
        raise RuntimeError("bench bind refused")
    return writer


async def _hold(
    count: int, open_one: Callable[[int], Awaitable[asyncio.StreamWriter]]
) -> list[asyncio.StreamWriter]:
    """Open `count` connections, OPENING at a time; they stay open (idle) until closed."""
    gate = asyncio.Semaphore(OPENING)

    async def one(i: int) -> asyncio.StreamWriter:
        async with gate:
            return await open_one(i)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    await asyncio.sleep(3)  # the daemon notices every close


async def _lookups(address: tuple[str, int], frames: list[bytes], connections: int = 8) -> None:
    async def run(part: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        writer.write(LOGIN)
        await reader.readuntil(b"\r")
        for frame in part:
            writer.write(frame)
            reply = await reader.readuntil(b"\r")
            if b"|CQY|" not in reply:
                raise RuntimeError(f"bench 63 not accepted: {reply!r}")
        writer.close()

    await asyncio.gather(*(run(frames[i::connections]) for i in range(connections)))


async def _binds(address: tuple[str, int], binds: list[bytes], connections: int = 8) -> None:
    async def run(part: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(*address)
        for bind in part:
            writer.write(bind)
            if _code(await _read_pdu(reader)) != 0:
                raise RuntimeError("bench bind refused")
        writer.close()

    await asyncio.gather(*(run(binds[i::connections]) for i in range(connections)))


def idle_connections(tmp: Path, patrons: list[BenchPatron]) -> list[str]:
    from tests.harness import Daemon

    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    daemon = Daemon(tmp, SECTIONS, store=store, nofile=DAEMON_FILES).start()
    lines: list[str] = []
    try:
        assert daemon.proc is not None
        pid = daemon.proc.pid
        sip2, ldap = daemon.address("sip2"), daemon.address("ldap")
        half = IDLE // 2
        binds = [_bind(1, f"uid={p.barcode},{PATRONS_DN}", p.pin.encode()) for p in patrons]
        # warm-up: every patron verified once over SIP2 and bound once over LDAP
        run_loop(_lookups(sip2, [_patron_63(p.barcode, p.pin, i) for i, p in enumerate(patrons)]))

        async def scenario() -> None:
            await _binds(ldap, binds)
            await asyncio.sleep(1)
            base = _sample(pid)
            lines.append(f"after start and warm-up: RSS {_mib(base[0])}, {base[1]} fds")
            held = await _hold(half, lambda i: _open_sip2(sip2))
            await asyncio.sleep(2)
            after_sip2 = _sample(pid)
            per = (after_sip2[0] - base[0]) / half
            lines.append(
                f"+{half} idle SIP2 connections (logged in): RSS {_mib(after_sip2[0])}, "
                f"{after_sip2[1]} fds; {per:.1f} KiB per connection"
            )
            held += await _hold(IDLE - half, lambda i: _open_ldap(ldap, binds[i % len(binds)]))
            await asyncio.sleep(2)
            full = _sample(pid)
            per = (full[0] - after_sip2[0]) / (IDLE - half)
            lines.append(
                f"+{IDLE - half} idle LDAP connections (bound): RSS {_mib(full[0])}, "
                f"{full[1]} fds; {per:.1f} KiB per connection"
            )
            lines.append(
                f"{IDLE} idle connections in all: RSS {_mib(full[0])}, "
                f"+{_mib(full[0] - base[0])} over the idle daemon, "
                f"{(full[0] - base[0]) / IDLE:.1f} KiB per connection"
            )
            await _close(held)
            closed = _sample(pid)
            lines.append(
                f"all closed again (3 s later): RSS {_mib(closed[0])}, {closed[1]} fds "
                "(freed memory stays with the process's allocator)"
            )

        run_loop(scenario())
    finally:
        daemon.stop()
    return lines


FILL = """
WITH RECURSIVE n(i) AS (SELECT :first UNION ALL SELECT i + 1 FROM n WHERE i + 1 < :last)
INSERT INTO patrons (barcode, record_id, name, email, category, expires, blocked, fines,
                     pin_hash, pin_changed_at, updated_at, needs_reset)
SELECT printf('29%012d', i), 'bench-' || i, 'Patron, Number' || i, 'patron' || i || '@example.org',
       'ADULT', '2099-12-31', 0, '0.00', :hash, :now, :now, 0 FROM n
"""


def fill(db: Path, first: int, last: int, pin_hash_of: str) -> float:
    """Rows first..last-1 with one SQL statement, every pin_hash copied from `pin_hash_of`'s."""
    started = time.perf_counter()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        (stored,) = conn.execute(
            "SELECT pin_hash FROM patrons WHERE barcode = ?", (pin_hash_of,)
        ).fetchone()
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        conn.execute("BEGIN")
        conn.execute(FILL, {"first": first, "last": last, "hash": stored, "now": now})
        conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


def large_store(tmp: Path, patrons: list[BenchPatron]) -> list[str]:
    from tests.harness import Daemon

    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    sections = SECTIONS.split("[ldap]")[0] + "\n[cache]\nttl = 3600\n"
    rng = random.Random(15)
    lines: list[str] = []
    for size in (len(patrons), LARGE):
        if size > len(patrons):
            took = fill(tmp / "patrons.db", len(patrons), size, patrons[0].barcode)
            db_mib = (tmp / "patrons.db").stat().st_size / 2**20
            lines.append(f"filled to {size:,} patrons in {took:.1f} s (file {db_mib:.0f} MiB)")
            picks = [rng.randrange(size) for _ in range(LOOKUPS)]
            pins = [patrons[i].pin if i < len(patrons) else patrons[0].pin for i in picks]
            frames = [
                _patron_63(f"29{i:012d}", pin, n)
                for n, (i, pin) in enumerate(zip(picks, pins, strict=True))
            ]
        else:
            frames = [_patron_63(p.barcode, p.pin, n) for n, p in enumerate(patrons)][:LOOKUPS]
        daemon = Daemon(tmp, sections, store=store).start()
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            time.sleep(2)
            started = _sample(pid)
            run_loop(_lookups(daemon.address("sip2"), frames))
            time.sleep(1)
            done = _sample(pid)
            lines.append(
                f"{size:>9,} patrons: RSS after start {_mib(started[0])}; after "
                f"{len(frames)} cold 63s spread over them {_mib(done[0])} ({done[1]} fds)"
            )
        finally:
            daemon.stop()
    return lines


def main() -> None:
    raise_fd_limit()
    patrons = generate()
    print("\n## memory (daemon RSS from /proc/PID/status)")
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for line in idle_connections(Path(tmp), patrons):
            print(f"  {line}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for line in large_store(Path(tmp), patrons):
            print(f"  {line}", flush=True)


if __name__ == "__main__":
    main()
