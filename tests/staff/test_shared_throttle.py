"""Staff sign-in limits on the shared `[state]` backend: two desks (two workers on one SQLite
state file, or two hosts on one Redis or on the PostgreSQL store's own tables) spend one budget
per staff account, so spreading password guesses over workers gains nothing; and the desk
builds its guard from `[state]`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from bridge.config import loads
from bridge.core.throttle import ThrottleRules
from bridge.state.bus import LocalBus
from bridge.state.redis_client import connect
from bridge.state.redis_throttle import RedisGuard
from bridge.state.settings import StateSettings
from bridge.state.shared import staff_guard
from bridge.state.sqlite_guard import SqliteGuard
from tests.harness import base_config
from tests.staff.support import StaffEnv, open_staff_env
from tests.state.redis_server import shared_prefix

RULES = ThrottleRules(card_free_failures=3, card_delay_base=60.0, card_lock_after=6)


@pytest.fixture(params=["sqlite", "redis", "store"])
def guards(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Any]]:
    """Makes guards that share one state: a file, a Redis prefix, or a PostgreSQL store's
    database (`[throttle] state = "store"`, which `[state] backend` defaults to)."""
    if request.param == "sqlite":
        yield lambda: SqliteGuard(RULES, tmp_path / "state.db-staff", bus=LocalBus())
        return
    if request.param == "store":
        yield from _on_the_store(tmp_path / "pg")
        return
    with shared_prefix() as (url, prefix):

        def on_redis() -> Any:
            client = connect(StateSettings(backend="redis", url=url))
            return RedisGuard(RULES, client, prefix=prefix + "staff:", bus=LocalBus())

        yield on_redis


def _on_the_store(tmp: Path) -> Iterator[Callable[[], Any]]:
    """Guards built as the desk builds them (`staff_guard` over the authenticator's store) on
    one PostgreSQL database: each a host of its own, with its own connection."""
    from bridge.app import open_core
    from bridge.state.postgres_guard import PostgresGuard
    from tests.plugins import servers
    from tests.plugins.test_shared_store import store_toml

    tmp.mkdir()
    with servers.pg_database() as dbname:
        text = base_config(tmp, store=store_toml(dbname), throttle='state = "store"')
        config = loads(text, source="bridge.toml", base_dir=tmp)
        runner = asyncio.Runner()  # the store's pool lives on one loop, opened to closed
        core = runner.run(open_core(config))  # migrates: the store's throttle tables
        made: list[Any] = []

        def on_store() -> Any:
            shared = staff_guard(config, RULES, core.authenticator.store)
            assert shared is not None and isinstance(shared.guard, PostgresGuard)
            made.append(shared)
            return shared.guard

        try:
            yield on_store
        finally:
            for shared in made:
                runner.run(shared.aclose())
            runner.run(core.aclose())
            runner.close()


def test_two_workers_share_one_budget(tmp_path: Path, guards: Callable[[], Any]) -> None:
    with ExitStack() as stack:
        desks: list[StaffEnv] = []
        for worker in ("a", "b"):
            (tmp_path / worker).mkdir()
            env_iter = open_staff_env(tmp_path / worker, throttle=guards())
            desks.append(stack.enter_context(_entered(env_iter)))
        a, b = desks
        # Four wrong passwords, spread over both workers: the fourth is past the free three.
        for desk in (a, b, a, b):
            assert "not correct" in desk.login("dana", "wrong password!!").text
        # Neither worker lets the right password in during the delay.
        for desk in (a, b):
            page = desk.login("dana")
            assert page.status_code == 429, page.text
        assert "staff_login_refused" in b.audit.names()


class _entered:
    """A generator-based env as a context manager (its `finally` closes the core)."""

    def __init__(self, gen: Iterator[StaffEnv]) -> None:
        self.gen = gen

    def __enter__(self) -> StaffEnv:
        return next(self.gen)

    def __exit__(self, *exc: object) -> None:
        for _ in self.gen:
            pass


def test_the_desk_builds_its_guard_from_state(tmp_path: Path) -> None:
    def config(extra: str) -> Any:
        return loads(base_config(tmp_path) + extra, source="bridge.toml", base_dir=tmp_path)

    assert staff_guard(config(""), RULES) is None  # one process: the desk's own Throttle
    shared = staff_guard(config('[server]\nworkers = 2\n[state]\nbackend = "sqlite"\n'), RULES)
    assert shared is not None and isinstance(shared.guard, SqliteGuard)
    assert shared.guard.path.name.endswith("-staff")
    asyncio.run(shared.aclose())
    with shared_prefix() as (url, prefix):
        redis = f'[state]\nbackend = "redis"\nurl = "{url}"\nkey_prefix = "{prefix}"\n'
        on_redis = staff_guard(config(redis), RULES)
        assert on_redis is not None and isinstance(on_redis.guard, RedisGuard)
        assert on_redis.guard.prefix == prefix + "staff:"
        asyncio.run(on_redis.aclose())


def test_a_daemon_with_two_workers(tmp_path: Path) -> None:
    """The real daemon, `workers = 2` on SQLite state: every request on a new connection (the
    kernel spreads them over both workers), yet wrong passwords spend one budget, and a staff
    session and its form tokens hold on whichever worker answers. A card locked over LDAP
    shows on the desk with the lock's end, read from the shared file."""
    import functools
    import re

    import httpx

    from tests.harness import DEMO, Daemon
    from tests.pins import NEW_PIN, OTHER_PIN, WRONG_PIN
    from tests.portal.test_browser import ldap_bind
    from tests.staff.support import PASSWORD
    from tests.state.scenario import within

    sections = """
[server]
workers = 2
[state]
backend = "sqlite"
[staff]
listen = "127.0.0.1:0"
[ldap]
listen = ["127.0.0.1:0"]
"""
    throttle = "card_free_failures = 3\ncard_delay_base = 60.0\ncard_lock_after = 4\n"
    with Daemon(tmp_path, sections, throttle=throttle) as bridge:
        made = bridge.cli("staff", "add", "dana", "--role", "desk", "--stdin", input=PASSWORD)
        assert made.returncode == 0, made.stderr
        host, port = bridge.address("staff")
        base = f"http://{host}:{port}"
        cookies = httpx.Cookies()

        def fresh() -> httpx.Client:  # a new connection each time, the session's cookie kept
            return httpx.Client(base_url=base, cookies=cookies)

        def token(path: str) -> str:
            with fresh() as client:
                page = client.get(path)
                cookies.update(page.cookies)
                found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
                assert found, page.text
                return found.group(1)

        def login(password: str) -> httpx.Response:
            data = {"csrf": token("/login"), "name": "dana", "password": password, "branch": "0"}
            with fresh() as client:
                answer = client.post("/login", data=data)
                cookies.update(answer.cookies)
                return answer

        assert login(PASSWORD).status_code == 303
        for _ in range(6):  # signed in, on whichever worker answers
            with fresh() as client:
                assert "dana · Desk · Main" in client.get("/desk").text
        for _ in range(4):  # the fourth wrong PIN locks the card
            assert not ldap_bind(bridge, DEMO["active"], WRONG_PIN)
        for _ in range(2):
            with fresh() as client:
                card = client.get(f"/card/{DEMO['active']}").text
                assert re.search(r"Locked until \d{4}-\d\d-\d\d \d\d:\d\d after 4 wrong PINs", card)
        # The patron's screen, its token opened by whichever worker gets the patron's post.
        for pin in (NEW_PIN, OTHER_PIN):
            with fresh() as client:
                data = {"csrf": token("/desk"), "check": "photo_id"}
                screen = client.post(f"/card/{DEMO['active']}/handover", data=data).text
            found = re.search(r'name="handover" value="([^"]+)"', screen)
            assert found, screen
            with fresh() as client:
                data = {"csrf": token("/desk"), "handover": found.group(1)}
                done = client.post("/handover", data={**data, "new_pin": pin, "new_again": pin})
                assert done.headers["location"].endswith("?done=pin_patron"), done.text
            # The other worker hears of the reset (and drops its copy of the lock) by polling
            # the state file: within the documented bound (docs/scale-out.md), not at once.
            assert within(1.0, functools.partial(ldap_bind, bridge, DEMO["active"], pin))
        with fresh() as client:
            out = client.post("/logout", data={"csrf": token("/desk")})
            assert out.headers["location"] == "/login?out=1"
        for _ in range(4):
            assert "not correct" in login("wrong password!!").text
        for _ in range(4):
            assert login(PASSWORD).status_code == 429
    refused = [e for e in bridge.audit_events() if e.get("event") == "staff_login_refused"]
    assert len(refused) == 4
