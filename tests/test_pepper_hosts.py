"""Two-phase pepper rotation with two hosts on one PostgreSQL database (host B runs `[server]
workers = 2`): `pepper rotate --stage` adds pepper 2 verify-only; `pepper activate 2` is refused
while B does not hold it, naming B; a third host without the file refuses to start with one line
naming `security.pepper_file`; once B has the file and reloaded, activation goes through; a PIN
re-hashed with pepper 2 on A verifies on B, and at no point does the database hold a hash made
with a pepper that a serving host lacks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
from pathlib import Path

import pytest

from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN
from tests.plugins import servers
from tests.store_setups import LDAP, ldap_bind, pg_store
from tests.test_pepper_rotation import NO_CACHE, rehashed

pytestmark = pytest.mark.service

WORKERS = '\n[server]\nworkers = 2\n\n[state]\nbackend = "sqlite"\n'


def records(dbname: str) -> dict[str, str]:
    with servers.pg_admin(dbname) as admin:
        rows = admin.execute("SELECT key, value FROM bridge_meta WHERE key LIKE 'pepper-%'")
        return {str(k): str(v) for k, v in rows.fetchall()}


def proof(dbname: str, daemon: Daemon) -> str:
    key = f"pepper-host.{servers_hostname()}:{daemon.dir / 'pepper.key'}"
    return records(dbname).get(key, "")


def servers_hostname() -> str:
    return socket.gethostname()


def pepper_ids(dbname: str) -> dict[str, str]:
    """barcode -> the pepper id its hash was made with."""
    with servers.pg_admin(dbname) as admin:
        rows = admin.execute("SELECT barcode, pin_hash FROM patrons WHERE pin_hash IS NOT NULL")
        found = {}
        for barcode, stored in rows.fetchall():
            tag = str(stored).rpartition("$pepper=")
            found[str(barcode)] = tag[2] if tag[1] else "1"
        return found


async def wait_proof(dbname: str, daemon: Daemon, want: str) -> None:
    async def seen() -> bool:
        return proof(dbname, daemon) == want

    await servers.wait_until(seen, f"{daemon.dir.name} proves {want}")


async def test_two_hosts_rotate_in_two_phases(tmp_path: Path) -> None:
    with servers.pg_database() as db:
        for name in ("a", "b", "c"):
            (tmp_path / name).mkdir()
        a = Daemon(tmp_path / "a", LDAP + NO_CACHE, store=pg_store(db))
        with a:
            shutil.copy(a.dir / "pepper.key", tmp_path / "b" / "pepper.key")
            b = Daemon(tmp_path / "b", LDAP + NO_CACHE + WORKERS, store=pg_store(db))
            with b:
                await wait_proof(db, a, "held=1;writer=1")
                await wait_proof(db, b, "held=1;writer=1")

                staged = a.cli("pepper", "rotate", "--stage")
                assert staged.returncode == 0, staged.stderr
                assert "pepper 2 staged" in staged.stdout
                assert "pepper activate 2" in staged.stdout
                assert records(db)["pepper-active"] == "1"
                await wait_proof(db, a, "held=1,2;writer=1")  # A reloaded: holds 2, writes 1

                # staged only: a login on A verifies and writes nothing with pepper 2
                assert ldap_bind(a, DEMO["active"], DEMO_PIN)
                assert set(pepper_ids(db).values()) == {"1"}

                refused = a.cli("pepper", "activate", "2")
                assert refused.returncode == 1
                assert f"{servers_hostname()}:{b.dir / 'pepper.key'} (holds 1)" in refused.stderr
                assert records(db)["pepper-active"] == "1"

                # a third host without pepper.key.2 refuses to start, one line naming the key
                shutil.copy(a.dir / "pepper.key", tmp_path / "c" / "pepper.key")
                c = Daemon(tmp_path / "c", LDAP, store=pg_store(db))
                with pytest.raises(RuntimeError, match="exited 2"):
                    c.start()
                line = c.stderr_path.read_text().strip().splitlines()[-1]
                assert "security.pepper_file" in line and "pepper.key.2 does not exist" in line

                # a wrong file on B: its reload says so, B proves nothing new, B drops it
                (b.dir / "pepper.key.2").write_bytes(os.urandom(32))
                wrong = b.cli("reload")
                assert wrong.returncode == 1
                assert "pepper.key.2: not the pepper this store recorded" in wrong.stderr
                assert "security.pepper_file" in wrong.stderr
                assert proof(db, b) == "held=1;writer=1"
                assert a.cli("pepper", "activate", "2").returncode == 1

                shutil.copy(a.dir / "pepper.key.2", b.dir / "pepper.key.2")
                assert b.proc is not None
                b.proc.send_signal(signal.SIGHUP)  # the supervisor passes it to both workers
                await wait_proof(db, b, "held=1,2;writer=1")

                activated = a.cli("pepper", "activate", "2")
                assert activated.returncode == 0, activated.stderr
                assert "pepper 2 is active" in activated.stdout
                assert records(db)["pepper-active"] == "2"
                await wait_proof(db, a, "held=1,2;writer=2")

                # re-hashed with pepper 2 on A, verified on B (which still writes pepper 1 and
                # leaves the newer hash alone)
                assert ldap_bind(a, DEMO["active"], DEMO_PIN)
                await rehashed(a, DEMO["active"], 1)
                assert pepper_ids(db)[DEMO["active"]] == "2"
                for _ in range(4):  # both workers, whichever the kernel picks
                    assert ldap_bind(b, DEMO["active"], DEMO_PIN)
                assert ldap_bind(b, DEMO["active"], DEMO_PIN + "0") is False
                assert pepper_ids(db)[DEMO["active"]] == "2"

                # B takes up the activation: `patron-bridge reload` asks both workers, and each
                # has proved what it holds before it answers
                reloaded = b.cli("reload")
                assert reloaded.returncode == 0, reloaded.stderr
                assert reloaded.stdout.startswith("reloaded: ")
                assert proof(db, b) == "held=1,2;writer=2"
                assert ldap_bind(b, DEMO["minor"], DEMO_PIN)
                await rehashed(b, DEMO["minor"], 1)
                assert pepper_ids(db)[DEMO["minor"]] == "2"
                assert ldap_bind(a, DEMO["minor"], DEMO_PIN)

                status = a.cli("pepper", "status")
                assert status.returncode == 0, status.stderr
                assert f"host {servers_hostname()}:{b.dir / 'pepper.key'}: holds 1,2, writes 2" in (
                    status.stdout
                )
        for daemon in (a, b):  # no PIN, hash or pepper in any line
            text = daemon.logs()
            for path in daemon.dir.glob("pepper.key*"):
                assert path.read_bytes().hex() not in text


def test_proofs_read_back_and_judge() -> None:
    from bridge.pepper_hosts import HOST, Proof, lacking, proofs, writing

    meta = {
        "pepper-active": "2",
        HOST + "a:/p": Proof("a:/p", ("1", "2", "3"), "3").encode(),
        HOST + "b:/p": Proof("b:/p", ("1", "2"), "2").encode(),
        "pepper.1.fingerprint": "hmac-sha256:00",
    }
    assert [p.host for p in proofs(meta)] == ["a:/p", "b:/p"]
    assert proofs(meta)[1] == Proof("b:/p", ("1", "2"), "2")
    assert [p.host for p in lacking(meta, "3")] == ["b:/p"]  # activating 3 would strand b
    assert lacking(meta, "2") == []
    assert [p.host for p in writing(meta, "2")] == ["b:/p"]  # retiring 2 would strand b
    assert Proof.decode("x", "garbage") == Proof("x", (), "")
