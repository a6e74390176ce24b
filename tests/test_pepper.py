"""The pepper against the store's fingerprint, through the real CLI and daemon on SQLite and
PostgreSQL: a wrong or a missing pepper file refuses to start with one line naming
`security.pepper_file` and leaves the store (and the pepper file) as they were; a store from
before fingerprints existed upgrades in place and its PINs still bind over LDAP."""

from __future__ import annotations

import json
import os
import sqlite3

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.plugins import servers
from tests.store_setups import Setup, ldap_bind, store_setup  # noqa: F401  (fixture `setup`)

REFUSING = (("serve",), ("patron", "show", DEMO["active"]), ("patron", "list"))


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def first_start(setup: Setup) -> bytes:
    shown = setup.daemon.cli("patron", "show", DEMO["active"])
    assert shown.returncode == 0, shown.stderr
    assert "pepper_created" in shown.stderr and str(setup.daemon.dir / "pepper.key") in (
        shown.stderr
    )
    return (setup.daemon.dir / "pepper.key").read_bytes()


def test_wrong_pepper_refuses_to_start_and_changes_nothing(setup: Setup) -> None:
    first_start(setup)
    pepper = setup.daemon.dir / "pepper.key"
    pepper.unlink()
    pepper.write_bytes(os.urandom(32))  # another host's file, or a stale backup
    wrong = pepper.read_bytes()
    before = setup.snapshot()
    for args in REFUSING:
        result = setup.daemon.cli(*args)
        assert result.returncode == 2, result.stderr
        line = one_line(result.stderr)
        assert "security.pepper_file" in line and "is not the pepper" in line
    assert setup.snapshot() == before
    assert pepper.read_bytes() == wrong
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["state"].startswith("WRONG")


def test_missing_pepper_refuses_to_start_and_creates_none(setup: Setup) -> None:
    first_start(setup)
    pepper = setup.daemon.dir / "pepper.key"
    pepper.unlink()  # a restored database without its pepper
    before = setup.snapshot()
    for args in REFUSING:
        result = setup.daemon.cli(*args)
        assert result.returncode == 2, result.stderr
        line = one_line(result.stderr)
        assert "security.pepper_file" in line and "does not exist" in line
    assert setup.snapshot() == before
    assert not pepper.exists()
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["state"].startswith("MISSING")


def test_right_pepper_restored_starts_again(setup: Setup) -> None:
    kept = first_start(setup)
    pepper = setup.daemon.dir / "pepper.key"
    pepper.unlink()
    assert setup.daemon.cli("patron", "show", DEMO["active"]).returncode == 2
    pepper.write_bytes(kept)
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["state"] == "matches the store" and report["store_has_hashes"] is True
    with setup.daemon as daemon:
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)


def test_fingerprint_is_recorded_and_reveals_nothing(setup: Setup) -> None:
    pepper = first_start(setup)
    if setup.kind == "sqlite":
        with sqlite3.connect(setup.daemon.dir / "patrons.db") as conn:
            rows = conn.execute("SELECT key, value FROM bridge_meta").fetchall()
    else:
        with servers.pg_admin(setup.dbname) as admin:
            rows = admin.execute("SELECT key, value FROM bridge_meta").fetchall()
    assert [r[0] for r in rows] == ["pepper.1.fingerprint"]
    value = str(rows[0][1])
    assert value.startswith("hmac-sha256:") and pepper.hex() not in value


def downgrade(setup: Setup) -> None:
    """Turn the store back into the schema before fingerprints (the previous release)."""
    if setup.kind == "sqlite":
        conn = sqlite3.connect(setup.daemon.dir / "patrons.db")
        conn.executescript(
            "DROP TABLE bridge_meta; ALTER TABLE patrons DROP COLUMN needs_reset;"
            "PRAGMA user_version = 1;"
        )
        conn.close()
        return
    with servers.pg_admin(setup.dbname) as admin:
        admin.execute("DROP TABLE bridge_meta")
        admin.execute("ALTER TABLE patrons DROP COLUMN needs_reset")
        # and what came after it (4: the live shared throttle's tables)
        admin.execute("DROP TABLE throttle_reservations, throttle_global_failures")
        admin.execute("DELETE FROM patron_bridge_migrations WHERE version >= 3")


def test_upgrade_from_the_previous_schema_keeps_pins(setup: Setup) -> None:
    first_start(setup)
    downgrade(setup)
    shown = setup.daemon.cli("patron", "show", DEMO["active"])
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["has_pin"] is True and record["needs_pin_reset"] is False
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["state"] == "matches the store"
    with setup.daemon as daemon:
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)


def test_upgrade_refuses_a_missing_pepper_too(setup: Setup) -> None:
    """An old store has no fingerprint; its hashes alone forbid a new pepper."""
    first_start(setup)
    downgrade(setup)
    (setup.daemon.dir / "pepper.key").unlink()
    before = setup.snapshot() if setup.kind == "sqlite" else None
    result = setup.daemon.cli("serve")
    assert result.returncode == 2 and "security.pepper_file" in one_line(result.stderr)
    if before is not None:
        assert setup.snapshot() == before
    assert not (setup.daemon.dir / "pepper.key").exists()


def test_a_new_store_with_no_pepper_creates_one(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    daemon = Daemon(tmp_path)
    report = json.loads(daemon.cli("check-config").stdout)["pepper"]
    assert report["state"].startswith("missing: created at first start")
    with daemon:
        pass
    assert "pepper_created" in daemon.logs()
    assert (tmp_path / "pepper.key").stat().st_mode & 0o777 == 0o600
