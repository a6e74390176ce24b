"""Crash safety of a PIN change in the embedded store: a real process changes one patron's PIN
in a loop and is killed with SIGKILL at random moments; after every kill exactly the old or the
new PIN verifies, never neither, and never one older than the last change that returned."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bridge.core.patron import Patron
from bridge.core.pin import KdfParams, PinHasher
from bridge.core.secret import Secret
from bridge.core.store import NewPatron
from plugins.sqlite import SqliteStore
from tests.harness import ROOT
from tests.pins import DEMO_PIN, NEW_PIN, OTHER_PIN

CARD = "21234000000001"
FAST = KdfParams(argon2_memory_kib=8192, argon2_iterations=1)
KILLS = 6

# The child: change the PIN forever, cycling through three PINs (change N sets pins[N % 3], so
# the PIN before, of and after any change differ); says "set N" before change N and "ok N" once
# it returned (durable). Only indexes go to stdout, never a PIN.
CHILD = """
import asyncio, sys
from pathlib import Path
from bridge.core.patron import Patron
from bridge.core.pin import KdfParams, PinHasher
from bridge.core.secret import Secret
from plugins.sqlite import SqliteStore

async def main() -> None:
    db, pepper, card, *pins = sys.argv[1:]
    hasher = PinHasher(bytes.fromhex(pepper), KdfParams(argon2_memory_kib=8192,
                       argon2_iterations=1), workers=1)
    store = SqliteStore(Path(db), hasher)
    patron = Patron(card, "r1")
    n = 0
    while True:
        n += 1
        print(f"set {n}", flush=True)
        await store.change_pin(patron, Secret(pins[n % 3]))
        print(f"ok {n}", flush=True)

asyncio.run(main())
"""


PINS = (DEMO_PIN, NEW_PIN, OTHER_PIN)


def pin_set_by(change: int) -> str:
    return PINS[change % 3]


async def verifying(db: Path, pepper: bytes) -> list[str]:
    hasher = PinHasher(pepper, FAST, workers=2)
    store = SqliteStore(db, hasher)
    try:
        results = []
        for pin in (DEMO_PIN, NEW_PIN, OTHER_PIN):
            check = await store.verify_pin(CARD, Secret(pin))
            assert check.patron is not None
            if check.pin_ok:
                results.append(pin)
        return results
    finally:
        await store.aclose()
        hasher.close()


async def test_pin_change_survives_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "patrons.db"
    pepper = os.urandom(32)
    hasher = PinHasher(pepper, FAST, workers=1)
    store = SqliteStore(db, hasher)
    await store._run(store.open_sync)
    await store.add_patron(NewPatron(Patron(CARD, "r1", "Crash, Test"), pin=Secret(DEMO_PIN)))
    await store.aclose()
    hasher.close()

    rng = random.Random(os.getpid())
    for _round in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), pepper.hex(), CARD, *PINS],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        assert proc.stdout is not None
        changes_before_kill = rng.randint(1, 25)
        seen: list[str] = []
        while True:  # read until the chosen number of changes returned
            line = proc.stdout.readline().decode().strip()
            assert line, f"child ended: {proc.wait()}"
            seen.append(line)
            if line == f"ok {changes_before_kill}":
                break
        # Then let it run a random little while so the kill lands anywhere in a change.
        time.sleep(rng.uniform(0, 0.02))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever the child said before it died.
        seen += proc.stdout.read().decode().split("\n")
        proc.stdout.close()
        assert proc.returncode == -signal.SIGKILL

        done = max(int(line.split()[1]) for line in seen if line.startswith("ok "))
        in_flight = max(int(line.split()[1]) for line in seen if line.startswith("set "))
        allowed = {pin_set_by(done)} | ({pin_set_by(in_flight)} if in_flight > done else set())

        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        working = await verifying(db, pepper)
        assert len(working) == 1, f"after a kill, {len(working)} PINs verify"
        # The PIN of the last change that returned, or of the one being written; never older.
        assert working[0] in allowed


def test_concurrent_first_open_migrates_once(tmp_path: Path) -> None:
    """The daemon's first start and a CLI command may create the same new file at once: every
    opener must end with the current schema, none with "table patrons already exists"."""
    import threading

    from plugins.sqlite import MIGRATIONS, migrate

    for attempt in range(10):
        db = tmp_path / f"new-{attempt}.db"
        barrier = threading.Barrier(4)
        errors: list[BaseException] = []

        def open_it(
            path: Path = db,
            gate: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            gate.wait()
            try:
                assert migrate(conn) == len(MIGRATIONS)
            except BaseException as exc:
                errors.append(exc)
            finally:
                conn.close()

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
