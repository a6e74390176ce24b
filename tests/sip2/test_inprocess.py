"""The real SIP2 server in-process, over real sockets, with stores the demo daemon cannot
fake: one that is down, and one that offers circulation through the seam."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.config import loads
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.patron import Patron
from bridge.core.secret import Secret
from bridge.core.store import Capability, Health, StoreUnavailable, Verification
from bridge.core.throttle import Throttle, ThrottleRules
from bridge.services import Services
from bridge.sip2.circulation import Circulation, CirculationContext
from bridge.sip2.codec import Message, build, decode
from bridge.sip2.server import Sip2Listener, start
from tests.harness import DEMO
from tests.pins import DEMO_PIN
from tests.sip2.wire import DATE, login_msg, patron_msg, trailer

CONFIG = """
[store]
plugin = "sqlite"

[sip2]
listen = ["127.0.0.1:0"]
health_cache_seconds = 600

[[sip2.accounts]]
login = "selfcheck"
password = "sc-secret-1"
institution = "MAIN"
"""


class DownStore:
    """An ILS that is unreachable."""

    capabilities = frozenset({Capability.VERIFY})

    def __init__(self) -> None:
        self.health_calls = 0

    async def lookup(self, barcode: str) -> Patron | None:
        raise StoreUnavailable("ils down")

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        raise StoreUnavailable("ils down")

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        raise StoreUnavailable("ils down")

    async def health(self) -> Health:
        self.health_calls += 1
        return Health(False, "ils down")

    async def aclose(self) -> None:
        return None


class ForwardingCirculation:
    """Stands in for an upstream forwarder: answers checkouts, nothing else."""

    supported = frozenset({"11"})

    def __init__(self) -> None:
        self.seen: list[tuple[str, CirculationContext]] = []

    async def handle(self, request: Message, ctx: CirculationContext) -> Message:
        self.seen.append((request.code, ctx))
        fixed = {"ok": "1", "renewal_ok": "N", "magnetic_media": "N", "desensitize": "Y"}
        fixed["transaction_date"] = ctx.date
        fields = [("AO", ctx.institution), ("AA", request.get("AA")), ("AB", request.get("AB"))]
        return build("12", fixed, [*fields, ("AJ", "A title"), ("AH", "20300101")])


class CirculatingStore(DownStore):
    def __init__(self, circulation: Circulation) -> None:
        super().__init__()
        self.circulation = circulation

    def sip2_circulation(self) -> Circulation:
        return self.circulation


Ask = Callable[[bytes], Any]


async def serve(store: Any, **kwargs: Any) -> tuple[Sip2Listener, Services]:
    config = loads(CONFIG)
    authenticator = Authenticator(
        store, throttle=Throttle(ThrottleRules()), cache=VerifiedCache(), audit=Audit()
    )
    services = Services(config, authenticator, authenticator.audit)
    assert config.sip2 is not None
    return await start(config.sip2, services, **kwargs), services


async def conversation(listener: Sip2Listener) -> AsyncIterator[Ask]:
    host, _, port = listener.addresses[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))

    async def ask(data: bytes) -> Message:
        writer.write(data + b"\r")
        reply = await reader.readuntil(b"\r")
        return decode(reply[:-1])

    try:
        yield ask
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def down() -> AsyncIterator[tuple[DownStore, Ask]]:
    store = DownStore()
    listener, _ = await serve(store)
    try:
        async for ask in conversation(listener):
            assert (await ask(login_msg())).fixed["ok"] == "1"
            yield store, ask
    finally:
        await listener.aclose()


async def test_store_down_answers(down: tuple[DownStore, Ask]) -> None:
    store, ask = down
    for pin in (DEMO_PIN, None):
        m = await ask(patron_msg("63", DEMO["active"], pin))
        assert m.get("BL") == "N" and m.get("CQ") == "N"
        assert "not available" in m.get("AF")
        assert m.fixed["patron_status"] == "YYYY" + " " * 10
    for seq in range(3):
        m = await ask(trailer(b"9900802.00", seq))
        assert m.code == "98" and m.fixed["online_status"] == "N" and m.sequence == seq
        assert m.get("AF")
    assert store.health_calls == 1  # cached: keep-alive 99s do not hit the ILS
    # A store that cannot block: 01 is refused in BX terms but still answered with a 24.
    m = await ask(f"01N{DATE}AOMAIN|AA{DEMO['active']}|AC|".encode())
    assert m.code == "24" and m.get("CQ") == "N"


async def test_circulation_seam_via_start_argument() -> None:
    forward = ForwardingCirculation()
    listener, _ = await serve(DownStore(), circulation=forward)
    try:
        async for ask in conversation(listener):
            await ask(login_msg())
            acs = await ask(b"9900802.00")
            assert acs.get("BX") == "YYNNYYYYYNNNNNNN"  # checkout Y, checkin N, block N
            assert acs.fixed["checkout_ok"] == "Y" and acs.fixed["checkin_ok"] == "N"
            out = await ask(trailer(f"11NN{DATE}{' ' * 18}AOMAIN|AA1|ABitem1|AC|".encode(), 4))
            assert out.code == "12" and out.fixed["ok"] == "1" and out.sequence == 4
            refused = await ask(f"09N{DATE}{DATE}APdesk|AOMAIN|ABitem1|".encode())
            assert refused.code == "10" and refused.fixed["ok"] == "0"
        assert [code for code, _ in forward.seen] == ["11"]
        assert forward.seen[0][1].login == "selfcheck"
        assert forward.seen[0][1].institution == "MAIN"
    finally:
        await listener.aclose()


async def test_circulation_seam_via_store_provider() -> None:
    forward = ForwardingCirculation()
    listener, _ = await serve(CirculatingStore(forward))
    try:
        async for ask in conversation(listener):
            await ask(login_msg())
            out = await ask(f"11NN{DATE}{' ' * 18}AOMAIN|AA1|ABitem1|".encode())
            assert out.code == "12" and out.fixed["ok"] == "1"
    finally:
        await listener.aclose()


async def test_listener_closes_open_connections() -> None:
    listener, _ = await serve(DownStore())
    host, _, port = listener.addresses[0].rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(login_msg() + b"\r")
    assert await reader.readuntil(b"\r") == b"941\r"
    await listener.aclose()
    assert await reader.read() == b""
    writer.close()


async def test_answer_now_failures_are_contained() -> None:
    """A request the handler cannot read gets a 96 and the session goes on; a bug while
    answering inline closes that connection only (logged), never the listener."""
    from bridge.sip2.codec import ProtocolError

    store = DownStore()
    listener, _ = await serve(store)
    handler = listener.handler
    real = handler.answer_now
    failures: list[BaseException] = [ProtocolError("unreadable"), RuntimeError("bug")]

    def flaky(message: Message, session: Any) -> Any:
        if message.code == "35" and failures:
            raise failures.pop(0)
        return real(message, session)

    def flaky_read(request: Any, session: Any) -> Any:  # a 35 read straight off its frame
        if request[0] == "35" and failures:
            raise failures.pop(0)
        return real_read(request, session)

    real_read = handler.answer_request
    handler.answer_now = flaky  # type: ignore[method-assign]
    handler.answer_request = flaky_read  # type: ignore[method-assign]
    end = f"35{DATE}AOMAIN|AA{DEMO['active']}|".encode()
    try:
        async for ask in conversation(listener):
            assert (await ask(login_msg())).fixed["ok"] == "1"
            assert (await ask(end)).code == "96"
            with pytest.raises(asyncio.IncompleteReadError):
                await ask(end)  # the RuntimeError: this connection is closed
        async for ask in conversation(listener):
            assert (await ask(login_msg())).fixed["ok"] == "1"
            assert (await ask(end)).code == "36"
    finally:
        await listener.aclose()


async def test_one_request_per_read_answers_like_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A read holding exactly one request is answered straight from `data_received`
    (`Framer.single`); the same requests pipelined in one read go through the queue. The
    answers agree (sequence and checksum mirrored, dates aside)."""
    from bridge.sip2.codec import Framer

    taken: list[bytes] = []
    real_single = Framer.single

    def counting(self: Framer, data: bytes) -> bytes | None:
        frame = real_single(self, data)
        if frame is not None:
            taken.append(frame)
        return frame

    monkeypatch.setattr(Framer, "single", counting)
    listener, _ = await serve(DownStore())
    host, _, port = listener.addresses[0].rpartition(":")
    ends = [trailer(f"35{DATE}AOMAIN|AA{DEMO['active']}|".encode(), n) + b"\r" for n in (1, 2)]
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(login_msg() + b"\r")
        await reader.readuntil(b"\r")
        one_by_one = []
        for end in ends:
            writer.write(end)
            one_by_one.append(decode((await reader.readuntil(b"\r"))[:-1]))
        assert [frame + b"\r" for frame in taken] == [login_msg() + b"\r", *ends]  # first read too
        writer.write(b"".join(ends))
        queued = [decode((await reader.readuntil(b"\r"))[:-1]) for _ in ends]
        writer.close()
        await writer.wait_closed()
        for fast, general in zip(one_by_one, queued, strict=True):
            assert fast.code == general.code == "36"
            assert (fast.sequence, fast.checksummed) == (general.sequence, general.checksummed)
            assert fast.fields == general.fields
            assert fast.fixed["end_session"] == general.fixed["end_session"]
    finally:
        await listener.aclose()


# the login deadline first (0.2 s), then the idle one: the timer is re-armed only when it fires
IDLE_CONFIG = CONFIG.replace("[[sip2.accounts]]", "login_timeout = 0.2\n[[sip2.accounts]]")
IDLE_CONFIG += "idle_timeout = 0.4\n"


async def test_an_idle_connection_is_closed_on_time_and_a_busy_one_is_not() -> None:
    """The idle deadline (shared ticks, `bridge.sip2.deadlines`) closes a silent connection, no
    earlier than `idle_timeout` after its last request; one that keeps asking outlives several
    idle timeouts."""
    config = loads(IDLE_CONFIG)
    store = DownStore()
    authenticator = Authenticator(
        store, throttle=Throttle(ThrottleRules()), cache=VerifiedCache(), audit=Audit()
    )
    assert config.sip2 is not None
    listener = await start(config.sip2, Services(config, authenticator, authenticator.audit))
    loop = asyncio.get_running_loop()
    host, _, port = listener.addresses[0].rpartition(":")
    try:
        idle_reader, idle_writer = await asyncio.open_connection(host, int(port))
        busy_reader, busy_writer = await asyncio.open_connection(host, int(port))
        busy_writer.write(login_msg() + b"\r")
        assert await busy_reader.readuntil(b"\r") == b"941\r"
        sent = loop.time()
        idle_writer.write(login_msg() + b"\r")
        assert await idle_reader.readuntil(b"\r") == b"941\r"
        closed_at: list[float] = []

        async def wait_for_close() -> None:
            assert await idle_reader.read() == b""
            closed_at.append(loop.time())

        watcher = asyncio.ensure_future(wait_for_close())
        for _ in range(15):  # 1.5 s of a request every 0.1 s: well past the idle timeout
            busy_writer.write(b"9900302.00\r")
            assert (await busy_reader.readuntil(b"\r")).startswith(b"98")
            await asyncio.sleep(0.1)
        await asyncio.wait_for(watcher, 1)
        assert closed_at[0] - sent >= 0.4  # never early (how late depends on the machine)
        busy_writer.write(b"9900302.00\r")
        assert (await busy_reader.readuntil(b"\r")).startswith(b"98")
        assert len(listener.deadlines) == 1  # the busy connection's; the idle one's is gone
        for writer in (idle_writer, busy_writer):
            writer.close()
    finally:
        await listener.aclose()
