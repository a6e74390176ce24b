"""The `sip2` store against real SIP2 servers on loopback.

Main flows run twice: against pysip2's server (not ours, from PyPI) and against the bridge's
own daemon over its SQLite demo store. The failure cases use pysip2 as a real process (slow,
killed mid-request, restarted) and, for what no real server does on demand, a scripted one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bridge.core.secret import Secret
from bridge.core.store import Capability, NotSupported, Store, StoreUnavailable
from plugins.sip2.plugin import Sip2Store
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.plugins.sip2 import ils
from tests.plugins.sip2.ils import Pysip2Ils, ScriptedIls, patron_reply
from tests.plugins.sip2.pysip2_ils import SLOW_BARCODE


@pytest.fixture
def pysip2(tmp_path: Path) -> Iterator[Pysip2Ils]:
    server = Pysip2Ils(tmp_path).start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def bridge_ils(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    with ils.daemon_ils(tmp_path_factory.mktemp("ils")) as daemon:
        yield daemon


@pytest.fixture(params=["pysip2", "bridge"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sip2Store]:
    if request.param == "pysip2":
        server = Pysip2Ils(tmp_path).start()
        s = ils.settings("127.0.0.1", server.port)
    else:
        server = None
        daemon: Daemon = request.getfixturevalue("bridge_ils")
        host, port = daemon.address("sip2")
        s = ils.settings(
            host,
            port,
            login=ils.ILS_ACCOUNT,
            password=ils.ILS_ACCOUNT_PASSWORD,
            institution="MAIN",
        )
    opened = await ils.open_store(s)
    try:
        yield opened
    finally:
        await opened.aclose()
        if server is not None:
            server.kill()


async def test_right_pin_maps_the_patron(store: Sip2Store) -> None:
    assert isinstance(store, Store)
    assert store.capabilities == frozenset({Capability.VERIFY})
    v = await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert v.pin_ok and v.patron is not None
    assert v.patron.barcode == DEMO["active"]
    assert v.patron.name
    assert not v.patron.blocked
    assert v.patron.fines == Decimal("0.00")
    assert (await store.health()).ok


async def test_wrong_pin(store: Sip2Store) -> None:
    v = await store.verify_pin(DEMO["active"], Secret(WRONG_PIN))
    assert v.patron is not None and not v.pin_ok


async def test_unknown_card(store: Sip2Store) -> None:
    v = await store.verify_pin(UNKNOWN, Secret(DEMO_PIN))
    assert v.patron is None and not v.pin_ok
    assert await store.lookup(UNKNOWN) is None


async def test_blocked_is_a_right_pin_with_reasons(store: Sip2Store) -> None:
    v = await store.verify_pin(DEMO["blocked"], Secret(DEMO_PIN))
    assert v.pin_ok and v.patron is not None
    assert v.patron.blocked and v.patron.blocked_reason


async def test_expired_and_fines(store: Sip2Store) -> None:
    fines = await store.verify_pin(DEMO["fines"], Secret(DEMO_PIN))
    assert fines.pin_ok and fines.patron is not None and fines.patron.fines > Decimal("10")
    expired = await store.verify_pin(DEMO["expired"], Secret(DEMO_PIN))
    assert expired.pin_ok and expired.patron is not None
    if store.settings.institution == "MAIN":  # the bridge as the ILS sends PA; pysip2 cannot
        assert expired.patron.expires is not None
        assert expired.patron.is_expired(dt.date.today())


async def test_lookup_and_no_pin_change(store: Sip2Store) -> None:
    patron = await store.lookup(DEMO["active"])
    assert patron is not None and patron.barcode == DEMO["active"]
    with pytest.raises(NotSupported):
        await store.change_pin(patron, Secret(DEMO_PIN))


async def test_fifty_concurrent_logins_over_a_pool_of_four(tmp_path: Path) -> None:
    server = Pysip2Ils(tmp_path).start()
    store = await ils.open_store(ils.settings("127.0.0.1", server.port, pool_size=4))
    try:
        results = await asyncio.gather(
            *(
                store.verify_pin(DEMO["active"] if i % 2 else DEMO["fines"], Secret(DEMO_PIN))
                for i in range(50)
            )
        )
        assert all(r.pin_ok and r.patron is not None for r in results)
        assert {r.patron.barcode for r in results if r.patron} == {DEMO["active"], DEMO["fines"]}
        assert store.pool.open_connections <= 4
        assert store.pool.stats["connects"] <= 4
        assert store.pool.stats["requests"] >= 50
    finally:
        await store.aclose()
        server.kill()


async def test_ils_slow_is_unavailable_after_the_timeout(pysip2: Pysip2Ils) -> None:
    store = await ils.open_store(ils.settings("127.0.0.1", pysip2.port, request_timeout=0.5))
    try:
        with pytest.raises(StoreUnavailable):
            await store.verify_pin(SLOW_BARCODE, Secret(DEMO_PIN))
        # The hung connection was dropped; the next check gets a fresh one and works.
        v = await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
        assert v.pin_ok
    finally:
        await store.aclose()


async def test_ils_killed_mid_request(pysip2: Pysip2Ils) -> None:
    store = await ils.open_store(
        ils.settings(
            "127.0.0.1", pysip2.port, breaker_failures=1, breaker_reset=3600, breaker_reset_max=3600
        )
    )
    try:
        pending = asyncio.ensure_future(store.verify_pin(SLOW_BARCODE, Secret(DEMO_PIN)))
        await pysip2.wait_event("slow")  # the ILS holds the request
        pysip2.kill()
        with pytest.raises(StoreUnavailable):
            await pending
        # The circuit is open: the next check fails at once, health says so.
        with pytest.raises(StoreUnavailable, match="circuit"):
            await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
        health = await store.health()
        assert not health.ok and "circuit" in health.detail
    finally:
        await store.aclose()


async def test_ils_restarted_pool_recovers(pysip2: Pysip2Ils) -> None:
    store = await ils.open_store(ils.settings("127.0.0.1", pysip2.port, pool_size=2))
    try:
        await asyncio.gather(
            *(store.verify_pin(DEMO["active"], Secret(DEMO_PIN)) for _ in range(4))
        )
        before = store.pool.stats["connects"]
        pysip2.kill()
        pysip2.start()  # same port
        v = await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
        assert v.pin_ok
        assert store.pool.stats["retries"] == 1  # the dead pooled connection, once
        assert store.pool.stats["connects"] == before + 1
        assert (await store.health()).ok
    finally:
        await store.aclose()


async def test_ils_down_at_start_then_up(tmp_path: Path) -> None:
    server = Pysip2Ils(tmp_path).start()
    port = server.port
    server.kill()
    store = await ils.open_store(ils.settings("127.0.0.1", port, breaker_failures=100))
    try:
        with pytest.raises(StoreUnavailable):
            await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
        assert not (await store.health()).ok
        server.start()
        assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
    finally:
        await store.aclose()
        server.kill()


async def test_wrong_ils_login_is_unavailable_not_a_wrong_pin(pysip2: Pysip2Ils) -> None:
    store = await ils.open_store(ils.settings("127.0.0.1", pysip2.port, password="not-it"))
    try:
        with pytest.raises(StoreUnavailable, match="login"):
            await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    finally:
        await store.aclose()


# -- edge cases from a scripted ILS -----------------------------------------------------------


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    servers: list[ScriptedIls] = []
    stores: list[Sip2Store] = []

    async def make(behaviour: ils.Behaviour, **over: Any) -> tuple[ScriptedIls, Sip2Store]:
        server = await ScriptedIls(behaviour).start()
        servers.append(server)
        store = await ils.open_store(ils.settings("127.0.0.1", server.port, **over))
        stores.append(store)
        return server, store

    try:
        yield make
    finally:
        for s in stores:
            await s.aclose()
        for server in servers:
            await server.stop()


@pytest.mark.parametrize(
    "fields",
    [
        [("BL", "Y")],  # no CQ at all
        [("BL", "Y"), ("CQ", "")],  # blank CQ
        [("BL", "Y"), ("CQ", " ")],
        [("BL", "Y"), ("CQ", "y")],  # not exactly Y
        [("BL", "Y"), ("CQ", "YES")],
    ],
)
async def test_blank_or_odd_cq_is_a_wrong_pin(
    scripted: Callable[..., Any], fields: list[tuple[str, str]]
) -> None:
    _, store = await scripted(lambda req, n: patron_reply(req, fields))
    v = await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert v.patron is not None and not v.pin_ok


async def test_bl_n_with_cq_y_is_still_an_unknown_card(scripted: Callable[..., Any]) -> None:
    _, store = await scripted(lambda req, n: patron_reply(req, [("BL", "N"), ("CQ", "Y")]))
    v = await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert v.patron is None and not v.pin_ok


async def test_answered_requests_are_never_retried(scripted: Callable[..., Any]) -> None:
    # The ILS answers with a 24 to a 63: an answer, just a wrong one. One request, no retry.
    def wrong(req: Any, n: int) -> Any:
        return ils.build("24", {"patron_status": " " * 14, "language": "000"}, [])

    server, store = await scripted(wrong)
    with pytest.raises(StoreUnavailable):
        await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert server.patron_requests == 1


async def test_broken_pooled_connection_retried_once_on_a_fresh_one(
    scripted: Callable[..., Any],
) -> None:
    # First 63 answered; after that every 63 kills its connection.
    server, store = await scripted(lambda req, n: None if n == 0 else "close")
    assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
    with pytest.raises(StoreUnavailable):
        await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert server.patron_requests == 3  # pooled try + exactly one retry on a fresh connection
    assert store.pool.stats["retries"] == 1


async def test_a_fresh_connection_that_breaks_is_not_retried(
    scripted: Callable[..., Any],
) -> None:
    # The pooled connection (the start-up 99's) breaks on the 63, its retry on a fresh
    # connection breaks too: two attempts in all, never a third.
    server, store = await scripted(lambda req, n: "close")
    with pytest.raises(StoreUnavailable):
        await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert server.patron_requests == 2
    assert store.pool.stats["retries"] == 1
    # Now the pool is empty: the next request opens a fresh connection, which is not retried.
    with pytest.raises(StoreUnavailable):
        await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert server.patron_requests == 3
    assert store.pool.stats["retries"] == 1


async def test_hanging_ils_times_out_and_opens_the_circuit(scripted: Callable[..., Any]) -> None:
    server, store = await scripted(
        lambda req, n: "hang",
        request_timeout=0.3,
        breaker_failures=2,
        breaker_reset=3600,
        breaker_reset_max=3600,
    )
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    asked = server.patron_requests
    with pytest.raises(StoreUnavailable, match="circuit"):
        await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    assert server.patron_requests == asked  # not asked while the circuit is open


async def test_in_flight_cap_refuses_at_once(scripted: Callable[..., Any]) -> None:
    server, store = await scripted(
        lambda req, n: "hang", pool_size=1, max_in_flight=2, breaker_failures=100
    )
    first = [
        asyncio.ensure_future(store.verify_pin(DEMO["active"], Secret(DEMO_PIN))) for _ in range(2)
    ]
    await server.hanging.wait()
    with pytest.raises(StoreUnavailable, match="too many"):
        await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
    for task in first:
        task.cancel()
    await asyncio.gather(*first, return_exceptions=True)


async def test_keepalive_sends_99_on_idle_connections(scripted: Callable[..., Any]) -> None:
    server, store = await scripted(lambda req, n: None, keepalive=0.2)
    assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
    seen = server.status_requests
    server.status_seen.clear()
    await server.status_seen.wait()  # the keep-alive's 99 on the idle connection
    assert server.status_requests > seen
    assert server.connections == 1 and server.logins == 1  # 93 once per connection


async def test_health_is_the_probe_that_closes_the_circuit(pysip2: Pysip2Ils) -> None:
    port = pysip2.port
    store = await ils.open_store(
        ils.settings("127.0.0.1", port, breaker_failures=1, breaker_reset=5.0)
    )
    now = [0.0]
    store.pool.monotonic = lambda: now[0]  # the breaker's time, moved by the test
    try:
        pysip2.kill()
        with pytest.raises(StoreUnavailable):
            await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
        pysip2.start()
        now[0] = 4.9
        health = await store.health()  # inside the pause: not even asked
        assert not health.ok and "circuit" in health.detail
        now[0] = 5.0
        assert (await store.health()).ok  # the probe
        assert store.pool.breaker.closed
        assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
    finally:
        await store.aclose()


async def test_tls_to_the_ils(tmp_path: Path) -> None:
    from bridge import tls

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    tls.generate_self_signed(cert, key, ["localhost", "127.0.0.1"])
    server = await ScriptedIls(lambda req, n: None).start(ssl=tls.server_context(cert, key))
    store = await ils.open_store(
        ils.settings("127.0.0.1", server.port, tls=True, ca_file=str(cert))
    )
    try:
        assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
        assert server.logins == 1
    finally:
        await store.aclose()
        await server.stop()
    # Without the CA the certificate is refused: unavailable, never a wrong PIN.
    server = await ScriptedIls(lambda req, n: None).start(ssl=tls.server_context(cert, key))
    store = await ils.open_store(ils.settings("127.0.0.1", server.port, tls=True))
    try:
        with pytest.raises(StoreUnavailable):
            await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))
        assert server.logins == 0
    finally:
        await store.aclose()
        await server.stop()


async def test_without_persistence_every_check_is_a_new_login(scripted: Callable[..., Any]) -> None:
    server, store = await scripted(lambda req, n: None, persistent=False)
    for _ in range(3):
        assert (await store.verify_pin(DEMO["active"], Secret(DEMO_PIN))).pin_ok
    assert store.pool.open_connections == 0
    assert server.logins == server.connections == 4  # the start-up 99's, then one per check
