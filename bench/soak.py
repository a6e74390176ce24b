"""Soak: the real daemon under a moderate mixed load for SECONDS (10 minutes by default), its RSS
and open descriptors sampled every SAMPLE seconds, to show whether anything grows.

The load, every second, spread over the 1000 generated patrons (bench/patrons.py):
- SIP2: 20 63s on 4 persistent connections, 2 whole sessions (connect, 93, 63, 35, close),
  1 63 with a wrong PIN (patrons taken in turn, so no card nears its lock);
- LDAP: 5 EZproxy logins (service bind, search by uid, bind as the DN) on 2 pooled connections,
  1 new connection binding once and closing;
- RADIUS: 20 PAP Access-Requests;
- portal: 1 visit every 2 s (login page, login, account page, logout).

`cache.ttl` is 60 s, so each patron is verified again (a KDF, the harness's fast parameters)
about once a minute: the cold path, the cache's expiry and its refill all run throughout.
Growth is judged from the first sample after WARM seconds (caches filled) to the last. Every
answer is checked; the count of wrong ones is printed (a soak with errors measured refusals).

    python -m bench soak
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from bench.common import open_fds, rss_kib
from bench.ldap import (
    BASE_DN,
    PATRONS_DN,
    SERVICE_BIND,
    SERVICE_DN,
    SERVICE_SECRET,
    _bind,
    _code,
    _op,
    _read_pdu,
    _search,
)
from bench.patrons import BenchPatron, generate, store_section, write_csv
from bench.radius import SECRET
from bench.sip2 import LOGIN, STAMP, _with_trailer
from bridge.ldap import messages as m
from bridge.loop import run as run_loop
from bridge.radius import packet as rp

SECONDS = float(os.environ.get("BENCH_SOAK_SECONDS", "600"))
SAMPLE = float(os.environ.get("BENCH_SOAK_SAMPLE", "10"))
WARM = 60.0

SECTIONS = f"""
[cache]
ttl = 60

[sip2]
listen = ["127.0.0.1:0"]

[[sip2.accounts]]
login = "bench"
password = "bench-secret-1"
institution = "MAIN"

[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"

[[ldap.service_accounts]]
dn = "{SERVICE_DN}"
password = "{SERVICE_SECRET.decode()}"

[radius]
listen = ["127.0.0.1:0"]

[[radius.clients]]
name = "bench"
network = "127.0.0.1/32"
secret = "{SECRET.decode()}"

[portal]
listen = "127.0.0.1:0"
base_url = "http://127.0.0.1:8080"
"""

# All the load comes from 127.0.0.1: the per-source failure budget (30 wrong answers in 5
# minutes, then the address is blocked) would otherwise block the whole soak after 30 s of
# one wrong PIN a second. Per-card budgets stay as they are (each card gets at most one).
THROTTLE = "source_max_failures = 1000000\nglobal_max_failures = 1000000\n"

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Patrons:
    """Patrons taken in turn, for each kind of request separately."""

    def __init__(self, patrons: list[BenchPatron]) -> None:
        self.patrons = patrons
        self.next: dict[str, int] = {}

    def take(self, kind: str) -> BenchPatron:
        i = self.next.get(kind, 0)
        self.next[kind] = i + 1
        return self.patrons[(i * 7 + len(kind)) % len(self.patrons)]


def _sip2_63(p: BenchPatron, pin: str, sequence: int) -> bytes:
    return _with_trailer(f"63001{STAMP}          AOMAIN|AA{p.barcode}|AC|AD{pin}|", sequence % 10)


def _wrong(pin: str) -> str:
    return "".join(str((int(c) + 1) % 10) for c in pin)


async def _every(rate: float, stop: float, work: Callable[[], Awaitable[None]]) -> int:
    """Call `work` `rate` times a second (one after another) until `stop`; returns the count."""
    done = 0
    started = time.monotonic()
    while time.monotonic() < stop:
        await work()
        done += 1
        delay = started + done / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
    return done


class Load:
    def __init__(self, patrons: list[BenchPatron], addresses: dict[str, tuple[str, int]]) -> None:
        self.who = Patrons(patrons)
        self.addr = addresses
        self.errors: dict[str, int] = {}
        self.sequence = 0

    def _error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    async def sip2_persistent(self, rate: float, stop: float) -> int:
        reader, writer = await asyncio.open_connection(*self.addr["sip2"])
        writer.write(LOGIN)
        await reader.readuntil(b"\r")

        async def one() -> None:
            p = self.who.take("sip2")
            self.sequence += 1
            writer.write(_sip2_63(p, p.pin, self.sequence))
            if b"|CQY|" not in await reader.readuntil(b"\r"):
                self._error("sip2 63")

        try:
            return await _every(rate, stop, one)
        finally:
            writer.close()

    async def sip2_wrong(self, rate: float, stop: float) -> int:
        reader, writer = await asyncio.open_connection(*self.addr["sip2"])
        writer.write(LOGIN)
        await reader.readuntil(b"\r")

        async def one() -> None:
            p = self.who.take("wrong")
            writer.write(_sip2_63(p, _wrong(p.pin), 1))
            if b"|CQN|" not in await reader.readuntil(b"\r"):
                self._error("sip2 wrong PIN accepted")

        try:
            return await _every(rate, stop, one)
        finally:
            writer.close()

    async def sip2_sessions(self, rate: float, stop: float) -> int:
        async def one() -> None:
            p = self.who.take("session")
            reader, writer = await asyncio.open_connection(*self.addr["sip2"])
            writer.write(LOGIN)
            await reader.readuntil(b"\r")
            writer.write(_sip2_63(p, p.pin, 2))
            if b"|CQY|" not in await reader.readuntil(b"\r"):
                self._error("sip2 session 63")
            writer.write(_with_trailer(f"35{STAMP}AOMAIN|AA{p.barcode}|", 3))
            await reader.readuntil(b"\r")
            writer.close()
            await writer.wait_closed()

        return await _every(rate, stop, one)

    async def ldap_logins(self, rate: float, stop: float) -> int:
        reader, writer = await asyncio.open_connection(*self.addr["ldap"])

        async def one() -> None:
            p = self.who.take("ldap")
            writer.write(SERVICE_BIND)
            await _read_pdu(reader)
            writer.write(_search(3, p.barcode))
            found = 0
            while _op(await _read_pdu(reader)) == m.SEARCH_RESULT_ENTRY:
                found += 1
            writer.write(_bind(1, f"uid={p.barcode},{PATRONS_DN}", p.pin.encode()))
            if found != 1 or _code(await _read_pdu(reader)) != 0:
                self._error("ldap login")

        try:
            return await _every(rate, stop, one)
        finally:
            writer.close()

    async def ldap_connections(self, rate: float, stop: float) -> int:
        async def one() -> None:
            p = self.who.take("ldap-new")
            reader, writer = await asyncio.open_connection(*self.addr["ldap"])
            writer.write(_bind(1, f"uid={p.barcode},{PATRONS_DN}", p.pin.encode()))
            if _code(await _read_pdu(reader)) != 0:
                self._error("ldap bind")
            writer.close()
            await writer.wait_closed()

        return await _every(rate, stop, one)

    async def radius(self, rate: float, stop: float) -> int:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(self.addr["radius"])
        ident = 0

        async def one() -> None:
            nonlocal ident
            p = self.who.take("radius")
            ident = (ident + 1) % 256
            auth = os.urandom(16)
            hidden = rp.encrypt_password(p.pin.encode(), SECRET, auth)
            attrs = [(rp.USER_NAME, p.barcode.encode()), (rp.USER_PASSWORD, hidden)]
            sock.send(rp.encode_request(rp.ACCESS_REQUEST, ident, auth, attrs, SECRET))
            try:
                async with asyncio.timeout(5):
                    reply = await loop.sock_recv(sock, 4096)
            except TimeoutError:
                self._error("radius timeout")
                return
            if reply[0] != rp.ACCESS_ACCEPT:
                self._error("radius")

        try:
            return await _every(rate, stop, one)
        finally:
            sock.close()

    async def portal(self, rate: float, stop: float) -> int:
        host, port = self.addr["portal"]
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as client:

            async def one() -> None:
                p = self.who.take("portal")
                found = CSRF.search((await client.get("/login")).text)
                assert found
                data = {"csrf": found.group(1), "barcode": p.barcode, "pin": p.pin}
                answer = await client.post("/login", data=data, follow_redirects=True)
                if answer.url.path != "/account":
                    self._error("portal login")
                    return
                found = CSRF.search(answer.text)
                assert found
                await client.post("/logout", data={"csrf": found.group(1)})

            return await _every(rate, stop, one)


async def _sampler(pid: int, stop: float, samples: list[tuple[float, int, int]]) -> None:
    started = time.monotonic()
    while time.monotonic() < stop:
        samples.append((time.monotonic() - started, rss_kib(pid), open_fds(pid)))
        await asyncio.sleep(SAMPLE)
    samples.append((time.monotonic() - started, rss_kib(pid), open_fds(pid)))


async def _soak(load: Load, pid: int) -> tuple[dict[str, int], list[tuple[float, int, int]]]:
    stop = time.monotonic() + SECONDS
    samples: list[tuple[float, int, int]] = []
    plan = {
        "sip2 63 (4 conns)": [load.sip2_persistent(5, stop) for _ in range(4)],
        "sip2 wrong PIN": [load.sip2_wrong(1, stop)],
        "sip2 sessions": [load.sip2_sessions(2, stop)],
        "ldap logins (2 conns)": [load.ldap_logins(2.5, stop) for _ in range(2)],
        "ldap new connections": [load.ldap_connections(1, stop)],
        "radius PAP": [load.radius(20, stop)],
        "portal visits": [load.portal(0.5, stop)],
    }
    sampler = asyncio.ensure_future(_sampler(pid, stop, samples))
    # every worker a task now, so the kinds run side by side
    tasks = {name: [asyncio.ensure_future(w) for w in work] for name, work in plan.items()}
    counts = {name: sum(await asyncio.gather(*running)) for name, running in tasks.items()}
    await sampler
    return counts, samples


def main() -> None:
    from tests.harness import Daemon

    patrons = generate()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        store = store_section(write_csv(patrons, Path(tmp) / "patrons.csv"))
        daemon = Daemon(Path(tmp), SECTIONS, store=store, throttle=THROTTLE).start()
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            addresses = {
                name: daemon.address(name) for name in ("sip2", "ldap", "radius", "portal")
            }
            load = Load(patrons, addresses)
            started = time.monotonic()
            counts, samples = run_loop(_soak(load, pid))
            took = time.monotonic() - started
        finally:
            daemon.stop()
    print(f"\n## soak: {took:.0f} s of mixed load, RSS and fds every {SAMPLE:g} s")
    for name, count in counts.items():
        print(f"  {name}: {count} ({count / took:.1f}/s)")
    print(f"  errors: {load.errors or 'none'}")
    print("  t(s)  RSS MiB  fds")
    for at, rss, fds in samples:
        print(f"  {at:5.0f} {rss / 1024:8.1f} {fds:4d}")
    warm = next((s for s in samples if s[0] >= WARM), samples[0])
    last = samples[-1]
    peak = max(s[1] for s in samples if s[0] >= warm[0])
    with contextlib.suppress(ZeroDivisionError):
        per_min = (last[1] - warm[1]) / ((last[0] - warm[0]) / 60)
        print(
            f"  growth after warm-up (t={warm[0]:.0f} s → t={last[0]:.0f} s): RSS "
            f"{warm[1] / 1024:.1f} → {last[1] / 1024:.1f} MiB ({per_min:+.0f} KiB/min), peak "
            f"{peak / 1024:.1f} MiB; fds {warm[2]} → {last[2]}"
        )
        half = next(s for s in samples if s[0] >= last[0] / 2)
        per_min = (last[1] - half[1]) / ((last[0] - half[0]) / 60)
        print(
            f"  second half (t={half[0]:.0f} s → t={last[0]:.0f} s): RSS {half[1] / 1024:.1f} → "
            f"{last[1] / 1024:.1f} MiB ({per_min:+.0f} KiB/min)"
        )


if __name__ == "__main__":
    main()
