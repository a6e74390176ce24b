"""Store down: Status-Server goes silent so NASes fail over, and Access-Requests are never
accepted (silent by default, Access-Reject when configured). In process, with a store whose
health the test switches; the client is an asyncio datagram endpoint on the same loop."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from bridge.config import loads
from bridge.core.audit import Audit
from bridge.core.auth import Authenticator
from bridge.core.cache import VerifiedCache
from bridge.core.patron import Patron
from bridge.core.secret import Secret
from bridge.core.store import Capability, Health, StoreUnavailable, Verification
from bridge.core.throttle import Throttle, ThrottleRules
from bridge.radius import packet as rp
from bridge.radius.server import RadiusListener, start
from bridge.services import Services
from tests.harness import DEMO
from tests.pins import DEMO_PIN

SECRET = b"failover-secret-0123"


@dataclass
class SwitchableStore:
    """A store that is up or down on the test's word, and counts health probes."""

    up: bool = True
    probes: int = 0
    capabilities: frozenset[Capability] = frozenset({Capability.VERIFY})
    refused: asyncio.Queue[str] = field(default_factory=asyncio.Queue)  # calls made while down

    async def lookup(self, barcode: str) -> Patron | None:
        return Patron(barcode, record_id="1")

    async def verify_pin(self, barcode: str, pin: Secret) -> Verification:
        if not self.up:
            self.refused.put_nowait("verify")
            raise StoreUnavailable("ILS unreachable")
        return Verification(Patron(barcode, record_id="1"), pin.matches(DEMO_PIN))

    async def change_pin(self, patron: Patron, new_pin: Secret) -> None:
        return None

    async def health(self) -> Health:
        self.probes += 1
        if not self.up:
            self.refused.put_nowait("health")
            raise StoreUnavailable("ILS unreachable")
        return Health(True)

    async def aclose(self) -> None:
        return None


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies.put_nowait(data)


def config(extra: str = "health_ttl = 0") -> str:
    return f"""
[store]
plugin = "sqlite"
[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
{extra}
[[radius.clients]]
name = "nas"
network = "127.0.0.1/32"
secret = "{SECRET.decode()}"
"""


@dataclass
class Rig:
    store: SwitchableStore
    listener: RadiusListener
    transport: asyncio.DatagramTransport
    collector: Collector
    ident: int = 0

    def send(self, code: int, attrs: list[tuple[int, bytes]], auth: bytes) -> int:
        self.ident = (self.ident + 1) % 256
        raw = rp.encode_request(code, self.ident, auth, attrs, SECRET)
        self.transport.sendto(raw)
        return self.ident

    def status(self) -> int:
        return self.send(rp.STATUS_SERVER, [], os.urandom(16))

    def access(self, barcode: str) -> int:
        auth = os.urandom(16)
        hidden = rp.encrypt_password(DEMO_PIN.encode(), SECRET, auth)
        return self.send(
            rp.ACCESS_REQUEST, [(rp.USER_NAME, barcode.encode()), (rp.USER_PASSWORD, hidden)], auth
        )

    async def reply(self) -> rp.Packet:
        return rp.decode(await asyncio.wait_for(self.collector.replies.get(), 10))


async def rig(extra: str = "health_ttl = 0", *, ipv6: bool = False) -> Rig:
    text = config(extra)
    if ipv6:
        text = text.replace('"127.0.0.1:0"', '"[::1]:0"').replace('"127.0.0.1/32"', '"::1/128"')
    cfg = loads(text)
    store = SwitchableStore()
    audit = Audit()
    # health_ttl 0: every Status-Server probes, so the switch takes effect at once.
    authenticator = Authenticator(
        store, throttle=Throttle(ThrottleRules()), cache=VerifiedCache(0), audit=audit
    )
    assert cfg.radius is not None
    listener = await start(cfg.radius, Services(cfg, authenticator, audit))
    host, _, port = listener.addresses[0].rpartition(":")
    collector = Collector()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: collector, remote_addr=(host.strip("[]"), int(port))
    )
    return Rig(store, listener, transport, collector)


@pytest.fixture
async def silent() -> AsyncIterator[Rig]:
    r = await rig()
    yield r
    r.transport.close()
    await r.listener.aclose()


async def test_status_server_silent_while_store_down(silent: Rig) -> None:
    ident = silent.status()
    reply = await silent.reply()
    assert (reply.code, reply.identifier) == (rp.ACCESS_ACCEPT, ident)
    silent.store.up = False
    silent.status()  # no answer: the NAS fails over
    silent.access(DEMO["active"])  # no answer either (store_unavailable = "silent")
    seen = {await asyncio.wait_for(silent.store.refused.get(), 10) for _ in range(2)}
    assert seen == {"health", "verify"}  # both were decided while the store was down
    silent.store.up = True
    ident = silent.status()
    reply = await silent.reply()
    assert reply.identifier == ident  # nothing was answered while the store was down
    assert silent.collector.replies.empty()


async def test_store_down_access_reject_when_configured() -> None:
    r = await rig('health_ttl = 0\nstore_unavailable = "reject"')
    try:
        r.store.up = False
        ident = r.access(DEMO["active"])
        reply = await r.reply()
        assert (reply.code, reply.identifier) == (rp.ACCESS_REJECT, ident)
        assert b"unavailable" in (reply.get(rp.REPLY_MESSAGE) or b"")
    finally:
        r.transport.close()
        await r.listener.aclose()


async def test_status_server_health_is_cached() -> None:
    r = await rig("health_ttl = 60")
    try:
        for _ in range(5):
            r.status()
            assert (await r.reply()).code == rp.ACCESS_ACCEPT
        assert r.store.probes == 1
    finally:
        r.transport.close()
        await r.listener.aclose()


async def test_ipv6_listener_and_client() -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    r = await rig(ipv6=True)
    try:
        assert r.listener.addresses[0].startswith("[::1]:")
        ident = r.access(DEMO["active"])
        reply = await r.reply()
        assert (reply.code, reply.identifier) == (rp.ACCESS_ACCEPT, ident)
    finally:
        r.transport.close()
        await r.listener.aclose()


async def test_a_failing_decision_never_stops_the_listener(silent: Rig) -> None:
    """A bug in the core while a request is answered inline, or in its task, is logged and
    that request dropped (no reply) and forgotten by the duplicate cache, so the NAS's
    retransmission is tried afresh; the socket keeps serving."""
    auth = silent.listener.server.authenticator
    real_settle, real_authenticate = auth.settle, auth.authenticate

    def broken_settle(*args: object) -> None:
        raise RuntimeError("bug")

    async def broken_authenticate(*args: object) -> None:
        raise RuntimeError("bug")

    for name, broken, real in (
        ("settle", broken_settle, real_settle),
        ("authenticate", broken_authenticate, real_authenticate),
    ):
        setattr(auth, name, broken)
        request_auth = os.urandom(16)
        hidden = rp.encrypt_password(DEMO_PIN.encode(), SECRET, request_auth)
        attrs = [(rp.USER_NAME, DEMO["active"].encode()), (rp.USER_PASSWORD, hidden)]
        raw = rp.encode_request(rp.ACCESS_REQUEST, 200, request_auth, attrs, SECRET)
        silent.transport.sendto(raw)
        await asyncio.sleep(0.1)
        assert silent.collector.replies.empty()  # dropped, nothing sent
        setattr(auth, name, real)
        silent.transport.sendto(raw)  # the NAS retransmits the very same packet
        reply = await silent.reply()
        assert (reply.code, reply.identifier) == (rp.ACCESS_ACCEPT, 200), name
