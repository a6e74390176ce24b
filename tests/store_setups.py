"""The store a CLI test runs against, SQLite or PostgreSQL (a throwaway database), with the
real daemon's LDAP listener for checking that PINs still bind; shared by the import and pepper
tests."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ldap3 import Connection, Server

from tests.harness import DEMO_CSV, Daemon
from tests.plugins import servers

BASE_DN = "dc=library,dc=example"
LDAP = f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
"""


def pg_store(dbname: str) -> str:
    return f"""
[store]
plugin = "postgres"
host = "127.0.0.1"
port = 5432
user = "postgres"
dbname = "{dbname}"
sslmode = "disable"
demo = true
demo_file = "{DEMO_CSV}"
"""


@dataclass
class Setup:
    kind: str
    daemon: Daemon
    dbname: str = ""

    def snapshot(self) -> object:
        """Everything the store holds, to prove a refused start changed nothing."""
        if self.kind == "sqlite":
            files = sorted(p.name for p in self.daemon.dir.glob("patrons.db*"))
            return files, (self.daemon.dir / "patrons.db").read_bytes()
        with servers.pg_admin(self.dbname) as conn:
            return [
                conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("patrons", "bridge_meta", "patron_bridge_migrations", "reset_tokens")
            ]


@pytest.fixture(name="setup", params=["sqlite", "postgres"])
def store_setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    if request.param == "sqlite":
        yield Setup("sqlite", Daemon(tmp_path, LDAP))
        return
    with servers.pg_database() as dbname:
        yield Setup("postgres", Daemon(tmp_path, LDAP, store=pg_store(dbname)), dbname)


def run(setup: Setup, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return setup.daemon.cli(*args, input=input)


def ldap_bind(daemon: Daemon, barcode: str, pin: str) -> bool:
    host, port = daemon.address("ldap")
    conn = Connection(
        Server(host, port, get_info="NO_INFO"),
        user=f"uid={barcode},ou=patrons,{BASE_DN}",
        password=pin,
        raise_exceptions=False,
    )
    try:
        return bool(conn.bind())
    finally:
        conn.unbind()
