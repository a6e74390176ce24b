"""Codes, tokens, pending sign-ins and consents on every `[state]` home (memory, the SQLite
state file, PostgreSQL, Redis): single-use, short-lived, kept hashed; a replay revokes what the
first use gave. For the shared homes, two independent connections stand for two hosts: one code
redeemed by both at once is taken exactly once, and a replay through either revokes."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.federation.grants import Grant, Grants, Request, digest
from bridge.federation.state import FederationState, MemoryState, Taken
from bridge.federation.state_redis import RedisState
from bridge.federation.state_sql import postgres_state, sqlite_state
from bridge.state.redis_client import connect
from bridge.state.settings import StateSettings
from tests.plugins import servers
from tests.state.redis_server import shared_prefix


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


REQUEST = Request("vendor", "https://rp.example.org/cb", frozenset({"openid"}), "s", "n", None)
Opener = Callable[[], FederationState]


@contextmanager
def homes(kind: str, tmp: Path) -> Iterator[Opener]:
    """A function opening a new connection to one shared home (each call: another 'host')."""
    if kind == "sqlite":
        yield lambda: sqlite_state(tmp / "state.db")
    elif kind == "postgres":
        with servers.pg_database() as dbname:
            yield lambda: postgres_state(f"host=127.0.0.1 user=postgres dbname={dbname}")
    else:
        with shared_prefix() as (url, prefix):
            yield lambda: RedisState(connect(StateSettings(url=url)), prefix + "oidc:")


SHARED = ["sqlite", "postgres", "redis"]


@pytest.fixture(params=["memory", *SHARED])
async def state(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FederationState]:
    if request.param == "memory":
        yield MemoryState(time.time)
        return
    with homes(request.param, tmp_path) as open_home:
        home = open_home()
        try:
            yield home
        finally:
            await home.aclose()


def grants(state: FederationState, clock: Callable[[], float] = time.time) -> Grants:
    return Grants(state, clock, code_seconds=60, token_seconds=3600, request_seconds=900)


async def test_code_is_single_use_and_kept_hashed(state: FederationState) -> None:
    g = grants(state)
    code = await g.issue_code(REQUEST, "sub", {"name": "A"}, 1000)
    assert await state.get("code:" + code) is None
    assert await state.get("code:" + digest(code)) is not None
    taken = await g.redeem(code)
    assert isinstance(taken, tuple)
    grant, token = taken
    assert grant.subject == "sub" and grant.claims == {"name": "A"}
    assert await g.token(token) == grant
    assert await g.redeem(code) is Taken.REPLAYED


async def test_replay_revokes_the_access_token(state: FederationState) -> None:
    g = grants(state)
    code = await g.issue_code(REQUEST, "sub", {}, 1000)
    taken = await g.redeem(code)
    assert isinstance(taken, tuple)
    assert await g.token(taken[1]) is not None
    assert await g.redeem(code) is Taken.REPLAYED
    assert await g.token(taken[1]) is None


async def test_expired_code_gives_nothing(state: FederationState) -> None:
    clock = Clock()
    g = grants(state, clock)
    code = await g.issue_code(REQUEST, "sub", {}, 1000)
    clock.now += 61  # past the code's life, still inside the replay window
    assert await g.redeem(code) is Taken.UNKNOWN


async def test_parked_requests_consents_and_waits(state: FederationState) -> None:
    g = grants(state)
    rid = await g.park(REQUEST)
    assert await g.parked(rid) == REQUEST
    await g.finish(rid)
    assert await g.parked(rid) is None
    assert not await g.consented("k1")
    await g.remember_consent("k1", 60)
    assert await g.consented("k1") and not await g.consented("k2")


async def test_tagged_keys_end_together(state: FederationState) -> None:
    await state.put("sso:a", "1", 60, tag="patron:x")
    await state.put("sso:b", "2", 60, tag="patron:x")
    await state.put("sso:c", "3", 60, tag="patron:y")
    await state.delete_tagged("patron:x")
    assert [await state.get(k) for k in ("sso:a", "sso:b", "sso:c")] == [None, None, "3"]
    assert await state.put_new("csrf-key", "first", 60) == "first"
    assert await state.put_new("csrf-key", "second", 60) == "first"


async def test_values_expire(state: FederationState) -> None:
    await state.put("short", "v", 0.05)
    await asyncio.sleep(0.2)
    assert await state.get("short") is None


@pytest.mark.parametrize("kind", SHARED)
async def test_two_hosts_race_for_one_code(kind: str, tmp_path: Path) -> None:
    with homes(kind, tmp_path) as open_home:
        a, b = open_home(), open_home()
        try:
            ga, gb = grants(a), grants(b)
            for _ in range(5):
                code = await ga.issue_code(REQUEST, "sub", {}, 1000)
                results = await asyncio.gather(*[g.redeem(code) for g in (ga, gb, ga, gb)])
                winners = [r for r in results if isinstance(r, tuple)]
                assert len(winners) == 1
                # Every loser either saw the mark (and revoked) or raced ahead of the taker's
                # commit; once all are done, a replay at either host revokes for good.
                assert await gb.redeem(code) is Taken.REPLAYED
                assert await ga.token(winners[0][1]) is None
            code = await ga.issue_code(REQUEST, "sub", {"name": "B"}, 1000)
            taken = await gb.redeem(code)  # issued by A, redeemed at B
            assert isinstance(taken, tuple)
            assert await ga.token(taken[1]) == taken[0]  # B's token works at A
            assert await ga.redeem(code) is Taken.REPLAYED  # replayed at A...
            assert await gb.token(taken[1]) is None  # ...revoked at B
        finally:
            await a.aclose()
            await b.aclose()


def test_sqlite_state_is_in_the_state_file_and_names_no_secret(tmp_path: Path) -> None:
    async def run() -> str:
        home = sqlite_state(tmp_path / "state.db")
        try:
            g = grants(home)
            code = await g.issue_code(REQUEST, "sub", {}, 1000)
            taken = await g.redeem(code)
            assert isinstance(taken, tuple)
            return code + " " + taken[1]
        finally:
            await home.aclose()

    secrets = asyncio.run(run())
    rows = sqlite3.connect(tmp_path / "state.db").execute("SELECT key, used FROM oidc_state")
    dump = repr(list(rows))
    for value in secrets.split():
        assert value not in dump and digest(value) in dump


def test_redis_keys_name_no_secret() -> None:
    async def run(url: str, prefix: str) -> str:
        home = RedisState(connect(StateSettings(url=url)), prefix + "oidc:")
        try:
            code = await grants(home).issue_code(REQUEST, "sub", {}, 1000)
            await grants(home).redeem(code)
            return code
        finally:
            await home.aclose()

    with shared_prefix() as (url, prefix):
        code = asyncio.run(run(url, prefix))
        client = redis.Redis.from_url(url)
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}*")]
        client.close()
        assert f"{prefix}oidc:code:{digest(code)}" in keys
        assert not any(code in k for k in keys)


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_any_string_is_no_code_token_or_request(value: str) -> None:
    async def run() -> None:
        g = grants(MemoryState(time.time))
        await g.issue_code(REQUEST, "sub", {}, 1000)
        assert await g.redeem(value) is Taken.UNKNOWN
        assert await g.token(value) is None
        assert await g.parked(value) is None
        assert await g.waiting(value) is None

    asyncio.run(run())


def test_grant_round_trips_through_json() -> None:
    async def run() -> Grant | None:
        g = grants(MemoryState(time.time))
        code = await g.issue_code(REQUEST, "sub", {"email": "a@b", "n": 1}, 7)
        taken = await g.redeem(code)
        assert isinstance(taken, tuple)
        return await g.token(taken[1])

    grant = asyncio.run(run())
    assert grant is not None and grant.request == REQUEST and grant.auth_time == 7


CLAIM_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=50)


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(CLAIM_TEXT, st.one_of(CLAIM_TEXT, st.integers(), st.booleans()), max_size=5),
    st.one_of(st.none(), CLAIM_TEXT),
)
def test_any_claims_and_state_round_trip_through_the_sqlite_state(
    claims: dict[str, object], state: str | None
) -> None:
    """Whatever the ILS puts in a name (NULs, quotes, any script) comes back unchanged."""

    async def run(path: Path) -> None:
        home = sqlite_state(path)
        try:
            g = grants(home)
            request = Request("c", "https://rp/cb", frozenset({"openid"}), state, None, None)
            taken = await g.redeem(await g.issue_code(request, "sub", dict(claims), 1))
            assert isinstance(taken, tuple)
            assert taken[0].claims == claims and taken[0].request == request
            assert await g.token(taken[1]) == taken[0]
        finally:
            await home.aclose()

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(run(Path(directory) / "state.db"))
