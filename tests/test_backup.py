"""`patron-bridge backup` while the daemon serves a burst of PIN changes, and `restore` with the
daemon stopped: every patron then authenticates with the PIN it had when the backup started or
the one it had when it finished, none with neither."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from ldap3 import Connection, Server

from tests.harness import Daemon, run_cli
from tests.pins import DEMO_PIN, NEW_PIN
from tests.test_daemon import Sip2

PATRONS = 40
BASE_DN = "dc=library,dc=example"
SECTIONS = f"""
[sip2]
listen = ["127.0.0.1:0"]
[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"

[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
"""


def barcodes() -> list[str]:
    return [f"29990000{n:06d}" for n in range(PATRONS)]


def store(tmp: Path) -> str:
    csv = tmp / "patrons.csv"
    rows = ["barcode,pin,name,email,expires,category,blocked,fines"]
    rows += [f"{b},{DEMO_PIN},Patron {b},,2030-12-31,ADULT,,0.00" for b in barcodes()]
    csv.write_text("\n".join(rows) + "\n")
    return f"""
[store]
plugin = "sqlite"
path = "patrons.db"
demo = true
demo_file = "{csv}"
"""


def change_pin(daemon: Daemon, barcode: str) -> bool:
    host, port = daemon.address("ldap")
    dn = f"uid={barcode},ou=patrons,{BASE_DN}"
    conn = Connection(Server(host, port, get_info="NO_INFO"), dn, DEMO_PIN, raise_exceptions=False)
    try:
        assert conn.bind(), conn.result
        return bool(
            conn.extend.standard.modify_password(dn, old_password=DEMO_PIN, new_password=NEW_PIN)
        )
    finally:
        conn.unbind()


def test_backup_during_pin_changes_restores_a_consistent_store(tmp_path: Path) -> None:
    # Each patron gets one wrong PIN below (its other PIN): none may block the test's address.
    throttle = "source_max_failures = 1000"
    daemon = Daemon(tmp_path, SECTIONS, store=store(tmp_path), throttle=throttle).start()
    changed_at: dict[str, tuple[float, float]] = {}  # barcode → (change started, acknowledged)
    backup = tmp_path / "backups" / "patrons.backup.db"
    try:

        def burst() -> None:
            for barcode in barcodes():
                started = time.monotonic()
                assert change_pin(daemon, barcode)
                changed_at[barcode] = (started, time.monotonic())

        changer = threading.Thread(target=burst)
        changer.start()
        while len(changed_at) < PATRONS // 4:  # a quarter changed: the burst is under way
            assert changer.is_alive() or len(changed_at) == PATRONS
            time.sleep(0.01)
        began = time.monotonic()
        made = run_cli(daemon.config, "backup", str(backup), env=daemon.env)
        ended = time.monotonic()
        changer.join(timeout=120)
        assert not changer.is_alive()
        assert made.returncode == 0, made.stderr
        assert made.stdout.startswith(f"backed up {PATRONS} patrons (schema ")
        assert backup.stat().st_mode & 0o777 == 0o600
        assert len(changed_at) == PATRONS
        # Changes acknowledged before the backup began must be in it; changes begun after it
        # ended must not be; the rest may go either way.
        before = {b for b, (_, ack) in changed_at.items() if ack < began}
        after = {b for b, (start, _) in changed_at.items() if start > ended}
        assert before  # the burst was running when the backup was taken
        refused = daemon.cli("restore", str(backup))
        assert refused.returncode == 1
        assert daemon.proc is not None
        assert refused.stderr == (
            f"patron-bridge: refused: the daemon is running (pid {daemon.proc.pid}): stop it "
            "before a restore\n"
        )
    finally:
        assert daemon.stop() == 0

    restored = run_cli(daemon.config, "restore", str(backup), env=daemon.env)
    assert restored.returncode == 0, restored.stderr
    assert f"restored {PATRONS} patrons" in restored.stdout
    assert (tmp_path / "patrons.db.pre-restore").exists()

    with daemon:
        sip = Sip2(daemon)
        try:
            for barcode in barcodes():
                old = "|CQY|" in sip.check(barcode, DEMO_PIN)
                new = "|CQY|" in sip.check(barcode, NEW_PIN)
                assert old != new, f"{barcode}: old PIN {old}, new PIN {new}"
                if barcode in before:
                    assert new, f"{barcode} was changed before the backup began"
                if barcode in after:
                    assert old, f"{barcode} was changed after the backup ended"
        finally:
            sip.close()


def test_backup_refuses_to_overwrite_and_restore_checks_the_file(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, SECTIONS)
    assert daemon.cli("migrate").returncode == 0  # creates the store with the demo patrons
    first = daemon.cli("backup", "one.db")
    assert first.returncode == 0, first.stderr
    again = daemon.cli("backup", "one.db")
    assert (again.returncode, again.stderr) == (
        1,
        "patron-bridge: refused: one.db exists (give --force to replace it)\n",
    )
    assert daemon.cli("backup", "--force", "one.db").returncode == 0
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    bad = daemon.cli("restore", str(junk))
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"patron-bridge: refused: {junk}: not a patron-bridge SQLite")
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(tmp_path / "one.db")
    conn.backup(sqlite3.connect(newer))
    conn.close()
    with sqlite3.connect(newer) as edit:
        edit.execute("PRAGMA user_version = 999")
    future = daemon.cli("restore", str(newer))
    assert future.returncode == 1
    assert "schema version 999 is newer than this version knows" in future.stderr
    missing = daemon.cli("restore", str(tmp_path / "nothing.db"))
    assert missing.returncode == 1 and "no backup at" in missing.stderr


def test_backup_of_another_store_points_to_its_tools(tmp_path: Path) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text('[store]\nplugin = "sip2"\nhost = "127.0.0.1"\n')
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(config), "backup", "x.db"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr == (
        "patron-bridge: refused: backup and restore work on the sqlite store; the sip2 store "
        "is backed up with its database's own tools (pg_dump: see docs/operations.md)\n"
    )
