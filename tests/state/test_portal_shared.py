"""PIN pages behind a load balancer: a session made on host A is valid on host B, its form
tokens too; a sign-out or a PIN change on one host ends it on every host; a reset token is
single-use across hosts (the store takes it in one statement). Also one daemon with two
workers, whose pages the kernel spreads over both."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import shutil
from pathlib import Path

import httpx

from bridge.app import open_core
from bridge.config import load
from bridge.core.store import TokenStore
from tests.harness import DEMO, Daemon
from tests.pins import DEMO_PIN, NEW_PIN
from tests.plugins import servers
from tests.plugins.test_shared_store import store_toml
from tests.state import scenario
from tests.state.redis_server import shared_prefix

PORTAL = """
[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
"""


def base(daemon: Daemon) -> str:
    host, port = daemon.address("portal")
    return f"http://{host}:{port}"


def csrf(client: httpx.Client, url: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(url).text)
    assert found
    return found.group(1)


def signed_in(client: httpx.Client, daemon: Daemon) -> bool:
    return client.get(base(daemon) + "/account").url.path == "/account"


def test_sessions_across_two_hosts(tmp_path: Path) -> None:
    with shared_prefix() as (url, prefix), servers.pg_database() as dbname:
        state = f'\n[state]\nbackend = "redis"\nurl = "{url}"\nkey_prefix = "{prefix}"\n'
        sections = PORTAL + scenario.LDAP + state
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        store = store_toml(dbname)
        with Daemon(a_dir, sections, store=store) as a:
            shutil.copy(a_dir / "pepper.key", b_dir / "pepper.key")
            with (
                Daemon(b_dir, sections, store=store) as b,
                httpx.Client(follow_redirects=True) as client,
            ):
                token = csrf(client, base(a) + "/login")  # rendered by A...
                data = {"csrf": token, "barcode": DEMO["active"], "pin": DEMO_PIN}
                done = client.post(base(b) + "/login", data=data)  # ...accepted by B
                assert done.url.path == "/account"
                assert signed_in(client, a) and signed_in(client, b)
                out = client.post(base(a) + "/logout", data={"csrf": csrf(client, base(a) + "/")})
                assert out.status_code == 200
                assert not signed_in(client, b)
                # Sign in on A; a PIN change over LDAP on B ends the session on A.
                data = {"csrf": csrf(client, base(a) + "/login"), "barcode": DEMO["active"]}
                assert client.post(base(a) + "/login", data={**data, "pin": DEMO_PIN}).url.path == (
                    "/account"
                )
                assert scenario.change_pin(b, DEMO["active"], DEMO_PIN, NEW_PIN)
                # B answers the change once the shared sessions are gone: no wait here.
                assert not signed_in(client, a)


def test_sessions_across_two_workers(tmp_path: Path) -> None:
    sections = PORTAL + '\n[server]\nworkers = 2\n[state]\nbackend = "sqlite"\n'
    with Daemon(tmp_path, sections) as daemon, httpx.Client(follow_redirects=True) as client:
        data = {"csrf": csrf(client, base(daemon) + "/login"), "barcode": DEMO["active"]}
        assert client.post(base(daemon) + "/login", data={**data, "pin": DEMO_PIN}).url.path == (
            "/account"
        )
        # New connections each time: the kernel spreads them over both workers.
        for _ in range(12):
            with httpx.Client(cookies=client.cookies, follow_redirects=True) as fresh:
                assert signed_in(fresh, daemon)


async def test_reset_token_single_use_across_hosts(tmp_path: Path) -> None:
    from bridge.core.reset import token_hash

    with servers.pg_database() as dbname:
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "bridge.toml").write_text(scenario_config(tmp_path / name, dbname))
        host_a = await open_core(load(tmp_path / "a" / "bridge.toml"))
        shutil.copy(tmp_path / "a" / "pepper.key", tmp_path / "b" / "pepper.key")
        host_b = await open_core(load(tmp_path / "b" / "bridge.toml"))
        try:
            now = dt.datetime.now(dt.UTC)
            hashed = token_hash("single-use-token-for-the-test")
            a, b = host_a.store, host_b.store
            assert isinstance(a, TokenStore) and isinstance(b, TokenStore)  # postgres keeps tokens
            await a.put_token(hashed, DEMO["active"], now + dt.timedelta(minutes=5))
            taken = await asyncio.gather(a.take_token(hashed, now), b.take_token(hashed, now))
            assert sorted(taken, key=str) == [DEMO["active"], None]
            assert await a.take_token(hashed, now) is None
        finally:
            await host_b.aclose()
            await host_a.aclose()


def scenario_config(directory: Path, dbname: str) -> str:
    from tests.harness import base_config

    return base_config(directory, store=store_toml(dbname))


def test_pages_answer_503_while_shared_sessions_are_away(tmp_path: Path) -> None:
    from tests.state.redis_server import PrivateRedis

    with PrivateRedis(tmp_path) as server:
        sections = PORTAL + f'\n[state]\nbackend = "redis"\nurl = "{server.url}"\n'
        with Daemon(tmp_path, sections) as daemon, httpx.Client(follow_redirects=True) as client:
            data = {"csrf": csrf(client, base(daemon) + "/login"), "barcode": DEMO["active"]}
            page = client.post(base(daemon) + "/login", data={**data, "pin": DEMO_PIN})
            assert page.url.path == "/account"
            server.stop()
            assert client.get(base(daemon) + "/account").status_code == 503
            server.start()  # no persistence in this test's server: the session is gone
            assert scenario.within(
                20, lambda: client.get(base(daemon) + "/account").status_code == 200
            )
            assert client.get(base(daemon) + "/account").url.path == "/login"
        assert "portal_sessions_unavailable" in daemon.logs()


def test_sessions_across_two_hosts_on_postgres_alone(tmp_path: Path) -> None:
    """No Redis: sessions and the CSRF key in the postgres store's database."""
    with servers.pg_database() as dbname:
        a_dir, b_dir = tmp_path / "a", tmp_path / "b"
        a_dir.mkdir()
        b_dir.mkdir()
        store, throttle = store_toml(dbname), 'state = "store"'
        with Daemon(a_dir, PORTAL, store=store, throttle=throttle) as a:
            shutil.copy(a_dir / "pepper.key", b_dir / "pepper.key")
            with (
                Daemon(b_dir, PORTAL, store=store, throttle=throttle) as b,
                httpx.Client(follow_redirects=True) as client,
            ):
                data = {"csrf": csrf(client, base(a) + "/login"), "barcode": DEMO["active"]}
                page = client.post(base(b) + "/login", data={**data, "pin": DEMO_PIN})
                assert page.url.path == "/account"
                assert signed_in(client, a)
                client.post(base(b) + "/logout", data={"csrf": csrf(client, base(b) + "/")})
                assert not signed_in(client, a)
