"""Pepper rotation and a raised KDF cost, through the real CLI and daemon on SQLite and
PostgreSQL: `pepper rotate` adds pepper N beside the configured file, the running daemon takes it
up at once, old PINs still bind over LDAP and are re-hashed to the newest pepper at the next
login (`pepper status` shows the counts move), `pepper retire` refuses while a hash uses the
pepper, and a missing or wrong rotated pepper refuses the start with one line naming its file.
No PIN, hash or pepper appears in any log line."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.plugins import servers
from tests.store_setups import LDAP, Setup, ldap_bind, pg_store

NO_CACHE = "\n[cache]\nttl = 0\n"  # every bind verifies the PIN, so every login can re-hash
PATRONS = 5  # demo patrons, all with a PIN


@pytest.fixture(name="setup", params=["sqlite", "postgres"])
def rotation_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "sqlite":
        yield Setup("sqlite", Daemon(tmp_path, LDAP + NO_CACHE))
        return
    with servers.pg_database() as dbname:
        yield Setup("postgres", Daemon(tmp_path, LDAP + NO_CACHE, store=pg_store(dbname)), dbname)


def status(setup: Setup) -> dict[str, Any]:
    result = setup.daemon.cli("pepper", "status", "--json")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def counts(setup: Setup) -> dict[str, int]:
    return {pid: int(v["hashes"]) for pid, v in status(setup)["peppers"].items()}


def hashes(setup: Setup) -> list[str]:
    query = "SELECT pin_hash FROM patrons WHERE pin_hash IS NOT NULL"
    if setup.kind == "sqlite":
        with sqlite3.connect(setup.daemon.dir / "patrons.db") as conn:
            return [str(r[0]) for r in conn.execute(query)]
    with servers.pg_admin(setup.dbname) as admin:
        return [str(r[0]) for r in admin.execute(query).fetchall()]


def fingerprints(setup: Setup) -> list[str]:
    query = "SELECT key FROM bridge_meta WHERE key LIKE '%.fingerprint' ORDER BY key"
    if setup.kind == "sqlite":
        with sqlite3.connect(setup.daemon.dir / "patrons.db") as conn:
            return [str(r[0]) for r in conn.execute(query)]
    with servers.pg_admin(setup.dbname) as admin:
        return [str(r[0]) for r in admin.execute(query).fetchall()]


async def rehashed(daemon: Daemon, barcode: str, times: int) -> None:
    """The daemon audits each re-hash after writing it: wait for the event, never a sleep."""

    async def seen() -> bool:
        events = daemon.audit_events()
        done = [e for e in events if e.get("event") == "pin_rehashed"]
        return sum(1 for e in done if str(e.get("barcode", ""))[-4:] == barcode[-4:]) >= times

    await servers.wait_until(seen, f"re-hash of {barcode}")


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def no_secrets_logged(setup: Setup) -> None:
    logs = setup.daemon.logs()
    for stored in hashes(setup):
        assert stored not in logs and stored.split("$")[-1] not in logs
    for path in setup.daemon.dir.glob("pepper.key*"):
        assert path.read_bytes().hex() not in logs


async def test_rotate_rehash_and_retire(setup: Setup) -> None:
    assert counts(setup) == {"1": PATRONS}  # the first open loads the demo patrons
    rotate = setup.daemon.cli("pepper", "rotate")
    assert rotate.returncode == 0, rotate.stderr
    assert "pepper 2 added" in rotate.stdout and "no daemon is running" in rotate.stdout
    second = setup.daemon.dir / "pepper.key.2"
    assert second.stat().st_mode & 0o777 == 0o600
    assert status(setup)["current"] == "2" and counts(setup) == {"1": PATRONS, "2": 0}
    assert fingerprints(setup) == ["pepper.1.fingerprint", "pepper.2.fingerprint"]
    for pid in ("1", "2"):  # pepper 1 keys audit hashes; 2 is the current one
        refused = setup.daemon.cli("pepper", "retire", pid)
        assert refused.returncode == 1 and "retire" not in refused.stdout, refused

    with setup.daemon as daemon:
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)  # a pepper-1 hash still verifies
        await rehashed(daemon, DEMO["active"], 1)
        assert counts(setup) == {"1": PATRONS - 1, "2": 1}

        # rotate again while serving: the daemon is told and takes pepper 3 up at once
        rotate = setup.daemon.cli("pepper", "rotate")
        assert rotate.returncode == 0, rotate.stderr
        assert "pepper 3 added" in rotate.stdout and "daemon" in rotate.stdout
        assert "reloaded" in rotate.stdout
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)  # pepper 2 -> 3
        await rehashed(daemon, DEMO["active"], 2)
        assert ldap_bind(daemon, DEMO["minor"], DEMO_PIN)  # pepper 1 -> 3
        await rehashed(daemon, DEMO["minor"], 1)
        assert counts(setup) == {"1": PATRONS - 2, "2": 0, "3": 2}
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)  # pepper 3 now: no re-hash
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN + "0") is False

        retired = setup.daemon.cli("pepper", "retire", "2")
        assert retired.returncode == 0, retired.stderr
        assert "pepper 2 retired" in retired.stdout and not second.exists()
        assert ldap_bind(daemon, DEMO["minor"], DEMO_PIN)
    assert fingerprints(setup) == ["pepper.1.fingerprint", "pepper.3.fingerprint"]
    events = [e for e in setup.daemon.audit_events() if str(e.get("event")).startswith("pepper_")]
    assert [(e["event"], e["pepper_id"]) for e in events] == [
        ("pepper_rotated", "2"),
        ("pepper_activated", "2"),
        ("pepper_rotated", "3"),
        ("pepper_activated", "3"),
        ("pepper_retired", "2"),
    ]
    reloads = [e for e in setup.daemon.audit_events() if e.get("event") == "config_reloaded"]
    assert any("pepper 3" in str(e.get("applied")) for e in reloads)
    assert counts(setup) == {"1": PATRONS - 2, "3": 2}
    assert all(h.endswith("$pepper=3") for h in hashes(setup) if "$pepper=" in h)
    with setup.daemon as daemon:  # the next start checks peppers 1 and 3 and serves
        assert ldap_bind(daemon, DEMO["minor"], DEMO_PIN)
    no_secrets_logged(setup)


async def test_missing_or_wrong_rotated_pepper_refuses_the_start(setup: Setup) -> None:
    assert setup.daemon.cli("pepper", "rotate").returncode == 0
    with setup.daemon as daemon:
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)
        await rehashed(daemon, DEMO["active"], 1)
    assert counts(setup)["2"] == 1
    second = setup.daemon.dir / "pepper.key.2"
    kept = second.read_bytes()
    second.unlink()
    before = setup.snapshot()
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["rotated"]["2"].startswith("MISSING")
    for args in (("serve",), ("pepper", "status")):
        refused = setup.daemon.cli(*args)
        assert refused.returncode == 2, refused.stderr
        line = one_line(refused.stderr)
        assert str(second) in line and "does not exist" in line
    second.write_bytes(bytes(reversed(kept)))
    second.chmod(0o600)
    refused = setup.daemon.cli("serve")
    assert refused.returncode == 2
    line = one_line(refused.stderr)
    assert str(second) in line and "is not pepper 2" in line
    assert setup.snapshot() == before
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["rotated"]["2"].startswith("WRONG")
    second.write_bytes(kept)
    report = json.loads(setup.daemon.cli("check-config").stdout)["pepper"]
    assert report["rotated"] == {"2": f"{second}: matches the store"}
    with setup.daemon as daemon:
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)
    no_secrets_logged(setup)


async def test_raised_kdf_cost_is_counted_and_rehashed(setup: Setup) -> None:
    assert status(setup)["kdf_outdated"] == 0
    config = setup.daemon.config
    text = config.read_text()
    assert "argon2_memory_kib = 8192" in text
    config.write_text(text.replace("argon2_memory_kib = 8192", "argon2_memory_kib = 9216"))
    assert status(setup)["kdf_outdated"] == PATRONS
    plain = setup.daemon.cli("pepper", "status")
    assert "weaker KDF parameters than configured: 5 left to re-hash" in plain.stdout
    with setup.daemon as daemon:
        assert ldap_bind(daemon, DEMO["active"], DEMO_PIN)
        await rehashed(daemon, DEMO["active"], 1)
    assert status(setup)["kdf_outdated"] == PATRONS - 1
    assert sum("m=9216," in h for h in hashes(setup)) == 1
    no_secrets_logged(setup)
