"""Async clients for the guessing stress tests: many connections at once, from many loopback
addresses, against the real daemon (tests/harness.py).

SIP2 and LDAP speak their wire formats over raw sockets (SIP2 frames from tests/sip2/wire.py,
LDAP PDUs from the independent pyasn1 encoder in tests/ldap/oracle.py); RADIUS is a UDP NAS
per address that retransmits like a real one; the PIN pages are posted with httpx. Sizes come
from the environment: `STRESS=full` gives the issue's sizes, otherwise a short version with the
same assertions runs in `make test`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import Any

from bridge.core.audit import Audit
from bridge.ldap import ber
from bridge.radius import packet as rp
from tests.harness import Daemon
from tests.ldap import oracle
from tests.sip2.wire import login_msg, patron_msg

FULL = os.environ.get("STRESS") == "full"

#: Client addresses (loopback only): connections are spread over them so no per-address
#: connection cap of a listener decides the outcome.
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 22)]
#: A bound for things that must happen, never an assertion on time.
PATIENCE = 120.0 if FULL else 60.0


def size(full: int, short: int) -> int:
    return full if FULL else short


def masked(barcode: str) -> str:
    """The barcode as the audit writes it by default."""
    return Audit("masked").barcode(barcode)


async def wait_until(done: Callable[[], bool], what: str, bound: float = PATIENCE) -> None:
    """Poll a condition on files the daemon writes (its audit), at most `bound` seconds."""
    deadline = time.monotonic() + bound
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound} s: {what}")
        await asyncio.sleep(0.05)


def audit_for(daemon: Daemon, barcode: str) -> list[dict[str, Any]]:
    mask = masked(barcode)
    return [e for e in daemon.audit_events() if e.get("event") == "auth" and e["barcode"] == mask]


def budget_taken(daemon: Daemon, barcode: str, lock_after: int) -> Callable[[], bool]:
    """True once the audit proves the card's budget is committed: `lock_after` wrong PINs
    evaluated, or any refusal by the card's own limit (which needs the budget taken)."""

    def check() -> bool:
        events = audit_for(daemon, barcode)
        bad = sum(1 for e in events if e["outcome"] == "bad_pin")
        card_refusal = any(e["outcome"] == "card_locked" and "card" in e["reason"] for e in events)
        return bad >= lock_after or card_refusal

    return check


# -- SIP2 ---------------------------------------------------------------------------------------


class Sip2:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def login(cls, server: tuple[str, int], source: str, login: str, password: str) -> Sip2:
        reader, writer = await asyncio.open_connection(*server, local_addr=(source, 0))
        self = cls(reader, writer)
        reply = await self.ask(login_msg(login, password))
        assert reply.startswith(b"941"), reply
        return self

    async def ask(self, message: bytes) -> bytes:
        self.writer.write(message + b"\r")
        return await self.reader.readuntil(b"\r")

    async def patron(self, barcode: str, pin: str) -> bool:
        """63 with the PIN; True when the answer says the PIN is valid (CQY)."""
        reply = await self.ask(patron_msg("63", barcode, pin))
        assert reply.startswith(b"64"), reply
        return b"|CQY|" in reply

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


# -- LDAP ---------------------------------------------------------------------------------------


class Ldap:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: tuple[str, int], source: str) -> Ldap:
        reader, writer = await asyncio.open_connection(*server, local_addr=(source, 0))
        return cls(reader, writer)

    async def bind(self, dn: str, pin: str) -> int:
        """A simple bind; the resultCode."""
        self.writer.write(oracle.bind(1, dn, pin.encode()))
        data = b""
        while True:
            size_ = ber.frame_length(data, 1 << 20) if data else None
            if size_ is not None and len(data) >= size_:
                break
            chunk = await self.reader.read(65536)
            assert chunk, "connection closed before the bind response"
            data += chunk
        reply = oracle.decode(data[:size_])
        return int(reply["payload"][0][3]) if "payload" in reply else int(reply["resultCode"])

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


# -- RADIUS -------------------------------------------------------------------------------------


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, nas: Nas) -> None:
        self.nas = nas

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.nas.received(data)


class Nas:
    """A NAS on one loopback address: Access-Requests with PAP, answers matched by
    identifier, and retransmission of the same packet (a NAS's retry) until answered."""

    def __init__(self, server: tuple[str, int], secret: bytes) -> None:
        self.server = server
        self.secret = secret
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: dict[int, tuple[bytes, asyncio.Future[rp.Packet]]] = {}
        self.free = list(range(256))
        self.replies = 0

    async def open(self, source: str) -> Nas:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Receiver(self), local_addr=(source, 0)
        )
        self.transport = transport
        return self

    def received(self, data: bytes) -> None:
        self.replies += 1
        if len(data) < 20:
            return
        entry = self.waiting.get(data[1])
        if entry is None:
            return
        auth, future = entry
        if not future.done() and rp.reply_ok(data, auth, self.secret):
            future.set_result(rp.decode(data))

    def send(self, user: str, pin: str) -> tuple[int, bytes, bytes]:
        """Fire one request; (identifier, raw, authenticator)."""
        assert self.transport is not None
        ident = self.free.pop()
        auth = os.urandom(16)
        attrs = [
            (rp.USER_NAME, user.encode()),
            (rp.USER_PASSWORD, rp.encrypt_password(pin.encode(), self.secret, auth)),
        ]
        raw = rp.encode_request(
            rp.ACCESS_REQUEST, ident, auth, attrs, self.secret, message_authenticator=True
        )
        self.transport.sendto(raw, self.server)
        return ident, raw, auth

    async def ask(self, user: str, pin: str, *, retry: float = 1.0, tries: int = 8) -> rp.Packet:
        """Send, retransmit the same packet every `retry` seconds, return the answer."""
        assert self.transport is not None
        ident, raw, auth = self.send(user, pin)
        future: asyncio.Future[rp.Packet] = asyncio.get_running_loop().create_future()
        self.waiting[ident] = (auth, future)
        try:
            for _ in range(tries):
                try:
                    return await asyncio.wait_for(asyncio.shield(future), retry)
                except TimeoutError:
                    self.transport.sendto(raw, self.server)
            raise AssertionError(f"no RADIUS answer after {tries} tries")
        finally:
            del self.waiting[ident]
            self.free.insert(0, ident)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- the PIN pages ------------------------------------------------------------------------------


def login_accepted(status: int, location: str | None) -> bool:
    """The login form lets the patron in with a redirect to /account."""
    return status in (302, 303) and (location or "").endswith("/account")
