"""Two bridge hosts sharing one postgres store, each built by `open_core` from its own config
file exactly as the daemon builds itself: a PIN set through one host is the PIN on the other,
and a card locked through one host is still locked when another host starts."""

from __future__ import annotations

import shutil
from pathlib import Path

from bridge.app import open_core
from bridge.config import load
from bridge.core.patron import ClientPolicy, Context, Outcome
from bridge.core.secret import Secret
from tests.harness import DEMO, DEMO_CSV, Daemon, base_config
from tests.pins import DEMO_PIN, NEW_PIN, WRONG_PIN
from tests.plugins import servers
from tests.sip2.wire import Wire, fields, patron_msg

CACHE = "\n[cache]\nttl = 0\n"  # every answer from the store, so hosts cannot differ by cache
THROTTLE = 'state = "store"\ncard_free_failures = 5\ncard_lock_after = 2'


def store_toml(dbname: str) -> str:
    return f"""
[store]
plugin = "postgres"
host = "{servers.PG_HOST}"
port = {servers.PG_PORT}
dbname = "{dbname}"
user = "postgres"
demo = true
demo_file = "{DEMO_CSV}"
"""


def write_config(directory: Path, dbname: str) -> Path:
    directory.mkdir()
    path = directory / "bridge.toml"
    path.write_text(base_config(directory, store=store_toml(dbname), throttle=THROTTLE) + CACHE)
    return path


CTX = Context("test", "shared-store", "192.0.2.10", ClientPolicy())


async def outcome(core: object, barcode: str, pin: str) -> Outcome:
    decision = await core.authenticator.authenticate(barcode, Secret(pin), CTX)  # type: ignore[attr-defined]
    return decision.outcome  # type: ignore[no-any-return]


async def test_two_hosts_one_store(tmp_path: Path) -> None:
    with servers.pg_database() as dbname:
        a_config = write_config(tmp_path / "a", dbname)
        b_config = write_config(tmp_path / "b", dbname)
        host_a = await open_core(load(a_config))
        try:
            # Every host sharing the store needs the same pepper file.
            shutil.copy(tmp_path / "a" / "pepper.key", tmp_path / "b" / "pepper.key")
            host_b = await open_core(load(b_config))
            try:
                barcode, other = DEMO["active"], DEMO["minor"]
                assert await outcome(host_a, barcode, DEMO_PIN) is Outcome.ACCEPTED
                assert await outcome(host_b, barcode, DEMO_PIN) is Outcome.ACCEPTED
                changed = await host_a.authenticator.set_pin(barcode, Secret(NEW_PIN), actor="t")
                assert changed.ok
                assert await outcome(host_b, barcode, NEW_PIN) is Outcome.ACCEPTED
                assert await outcome(host_b, barcode, DEMO_PIN) is Outcome.BAD_PIN
                for _ in range(2):
                    assert await outcome(host_b, other, WRONG_PIN) is Outcome.BAD_PIN
                assert await outcome(host_b, other, DEMO_PIN) is Outcome.CARD_LOCKED
            finally:
                await host_b.aclose()
        finally:
            await host_a.aclose()
        # A host starting later reads the lock from the store: even the right PIN is refused.
        again = await open_core(load(a_config))
        try:
            assert await outcome(again, other, DEMO_PIN) is Outcome.CARD_LOCKED
            assert await outcome(again, barcode, NEW_PIN) is Outcome.ACCEPTED
        finally:
            await again.aclose()


SIP2 = """
[sip2]
listen = ["127.0.0.1:0"]

[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
"""


def cq(daemon: Daemon, barcode: str, pin: str) -> str:
    """The CQ field (valid patron password) of a real SIP2 Patron Information answer."""
    with Wire(daemon.address("sip2")) as wire:
        assert wire.login().startswith(b"941")
        reply = wire.ask(patron_msg("63", barcode, pin))
    return fields(reply, 61)["CQ"]


def test_two_daemons_over_sip2(tmp_path: Path) -> None:
    """The real daemon, loading the postgres plugin through its entry point, twice."""
    with servers.pg_database() as dbname:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        store, sections = store_toml(dbname), SIP2 + CACHE
        with Daemon(a_dir, sections, store=store, throttle=THROTTLE) as host_a:
            shutil.copy(a_dir / "pepper.key", b_dir / "pepper.key")
            with Daemon(b_dir, sections, store=store, throttle=THROTTLE) as host_b:
                barcode = DEMO["active"]
                assert cq(host_a, barcode, DEMO_PIN) == "Y"
                changed = host_a.cli("pin", "set", barcode, "--stdin", input=NEW_PIN + "\n")
                assert changed.returncode == 0, changed.stderr
                assert cq(host_b, barcode, NEW_PIN) == "Y"
                assert cq(host_b, barcode, DEMO_PIN) == "N"
