"""LDAP benchmark: the bridge against Debian's slapd (back-mdb, same users), same client.

Scenarios, each bounded by a request count and a time limit, loopback only:
1. Simple bind on persistent connections. The demo patron's PIN is verified once (KDF), then
   every bind is the cached path: framing, BER decode, DN normalisation, throttle and cache,
   the audit line, the response. slapd checks an {SSHA} userPassword per bind.
2. Search-then-bind login (EZproxy/Apache on a pooled connection): bind as the service account,
   search `(&(objectClass=inetOrgPerson)(uid=X))` for cn and mail, bind as the found DN.
   One "request" is the whole three-operation login.

The load generator sends pre-encoded PDUs over raw asyncio streams (the same bytes to both
servers) and waits for each answer before the next, as real clients do. Each server is pinned
to core 0 and the generator to core 1 when there are two cores. slapd's column is skipped, with
a note, when slapd is not installed (`apt-get install slapd`; tests never need it).

    python -m bench ldap
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import CpuMeter, Result, free_port, median, pin_to_core, report, verdict
from bench.patrons import (
    BenchPatron,
    generate,
    ldif_entries,
    spread,
    ssha,
    store_section,
    write_csv,
)
from bridge.ldap import ber
from bridge.ldap import messages as m
from bridge.loop import run as run_loop

BASE_DN = "dc=library,dc=example"
SERVICE_DN = f"cn=ezproxy,ou=services,{BASE_DN}"
SERVICE_SECRET = b"bench-service-token-41c9"
PATRONS_DN = f"ou=patrons,{BASE_DN}"
BINDS = int(os.environ.get("BENCH_LDAP_BINDS", "16000"))
LOGINS = int(os.environ.get("BENCH_LDAP_LOGINS", "6000"))
SECONDS = float(os.environ.get("BENCH_LDAP_SECONDS", "15"))
CONNECTIONS = 8
SERVER_CORE, CLIENT_CORE = 0, 1

SECTIONS = f"""
[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"

[[ldap.service_accounts]]
dn = "{SERVICE_DN}"
password = "{SERVICE_SECRET.decode()}"

[cache]
ttl = 3600
"""


def _bind(msgid: int, name: str, password: bytes) -> bytes:
    body = ber.integer(3) + ber.octets(name) + ber.tlv(0x80, password)
    return ber.sequence(ber.integer(msgid), ber.tlv(m.BIND_REQUEST, body))


def _search(msgid: int, barcode: str) -> bytes:
    filt = ber.tlv(
        0xA0,
        ber.tlv(0xA3, ber.octets("objectClass") + ber.octets("inetOrgPerson"))
        + ber.tlv(0xA3, ber.octets("uid") + ber.octets(barcode)),
    )
    body = (
        ber.octets(BASE_DN)
        + ber.enumerated(2)
        + ber.enumerated(0)
        + ber.integer(0)
        + ber.integer(0)
        + ber.boolean(False)
        + filt
        + ber.sequence(ber.octets("cn"), ber.octets("mail"))
    )
    return ber.sequence(ber.integer(msgid), ber.tlv(m.SEARCH_REQUEST, body))


SERVICE_BIND = _bind(2, SERVICE_DN, SERVICE_SECRET)


@dataclass(frozen=True)
class Pdus:
    """One patron's pre-encoded requests: the same bytes go to every server."""

    user_bind: bytes
    search: bytes


def pdus(patrons: list[BenchPatron]) -> list[Pdus]:
    return [
        Pdus(
            _bind(1, f"uid={p.barcode},{PATRONS_DN}", p.pin.encode()),
            _search(3, p.barcode),
        )
        for p in patrons
    ]


async def _read_pdu(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(2)
    if head[1] & 0x80:
        extra = await reader.readexactly(head[1] & 0x7F)
        size = int.from_bytes(extra, "big")
        head += extra
    else:
        size = head[1]
    return head + await reader.readexactly(size)


def _op(pdu: bytes) -> int:
    start, end = ber.expect(pdu, 0, len(pdu), ber.SEQUENCE)
    _s, pos = ber.expect(pdu, start, end, ber.INTEGER)
    return ber.read_tlv(pdu, pos, end)[0]


def _code(pdu: bytes) -> int:
    """resultCode of an LDAPResult-shaped response."""
    start, end = ber.expect(pdu, 0, len(pdu), ber.SEQUENCE)
    _s, pos = ber.expect(pdu, start, end, ber.INTEGER)
    _tag, op_start, op_end = ber.read_tlv(pdu, pos, end)
    c_start, c_end = ber.expect(pdu, op_start, op_end, ber.ENUMERATED)
    return ber.to_int(pdu, c_start, c_end)


async def _binds(address: tuple[str, int], picks: list[Pdus], deadline: float) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    latencies: list[float] = []
    for pick in picks:
        started = time.perf_counter()
        writer.write(pick.user_bind)
        reply = await _read_pdu(reader)
        latencies.append(time.perf_counter() - started)
        if _code(reply) != 0:
            raise RuntimeError("bench bind refused")
        if started > deadline:
            break
    writer.close()
    return latencies


async def _logins(address: tuple[str, int], picks: list[Pdus], deadline: float) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    latencies: list[float] = []
    for pick in picks:
        started = time.perf_counter()
        writer.write(SERVICE_BIND)
        if _code(await _read_pdu(reader)) != 0:
            raise RuntimeError("bench service bind refused")
        writer.write(pick.search)
        entries = 0
        while True:
            if _op(await _read_pdu(reader)) != m.SEARCH_RESULT_ENTRY:
                break
            entries += 1
        if entries != 1:
            raise RuntimeError(f"bench search found {entries} entries")
        writer.write(pick.user_bind)
        if _code(await _read_pdu(reader)) != 0:
            raise RuntimeError("bench user bind refused")
        latencies.append(time.perf_counter() - started)
        if started > deadline:
            break
    writer.close()
    return latencies


Worker = Callable[[tuple[str, int], list[Pdus], float], Awaitable[list[float]]]


async def _warm_up(address: tuple[str, int], every: list[Pdus]) -> None:
    """Every patron bound once (each PIN pays the KDF once), over CONNECTIONS connections, so
    the measured window is all cache hits."""
    far = time.perf_counter() + 3600
    await asyncio.gather(*(_binds(address, every[i::CONNECTIONS], far) for i in range(CONNECTIONS)))


async def _run(
    address: tuple[str, int],
    pid: int,
    name: str,
    server: str,
    picks: list[Pdus],
    worker: Worker,
) -> Result:
    deadline = time.perf_counter() + SECONDS
    with CpuMeter(pid) as meter:
        runs = await asyncio.gather(
            *(worker(address, picks[i::CONNECTIONS], deadline) for i in range(CONNECTIONS))
        )
    latencies = [x for run in runs for x in run]
    return Result(name, server, len(latencies), meter.wall, latencies, meter.seconds)


BINDS_ROW = f"simple bind, {CONNECTIONS} persistent conns"
LOGIN_ROW = "svc bind + search + user bind"
REPEATS = 3


# --- slapd, the reference ----------------------------------------------------------------------


def _slapd_ldif(patrons: list[BenchPatron]) -> str:
    parts = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\n"
        "dc: library\no: library\n",
        f"dn: {PATRONS_DN}\nobjectClass: organizationalUnit\nou: patrons\n",
        f"dn: ou=services,{BASE_DN}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\n"
        f"cn: ezproxy\nuserPassword: {ssha(SERVICE_SECRET)}\n",
        *ldif_entries(patrons, PATRONS_DN),
    ]
    return "\n".join(parts)


SLAPD_CONF = """
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
loglevel 0
database mdb
suffix "{base}"
rootdn "cn=admin,{base}"
directory {dir}/db
maxsize 104857600
index uid eq
index objectClass eq
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""


def _slapd(
    tmp: Path, patrons: list[BenchPatron]
) -> tuple[subprocess.Popen[bytes], tuple[str, int]]:
    (tmp / "db").mkdir()
    conf = tmp / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(dir=tmp, base=BASE_DN))
    (tmp / "data.ldif").write_text(_slapd_ldif(patrons))
    subprocess.run(
        ["slapadd", "-q", "-f", str(conf), "-l", str(tmp / "data.ldif")],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = subprocess.Popen(
        ["slapd", "-d", "0", "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # readiness: the port accepts (slapd has no ready line)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return proc, ("127.0.0.1", port)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("slapd did not start")


# --- the front end alone: real codec, session and server; a stub core ---------------------------


async def _stub_server(port: int) -> None:
    """The LDAP front end with an authenticator that accepts at once and audits nothing, so
    the row shows what the front end itself costs, apart from the core and the log writer."""
    from typing import Any, cast

    from bridge.config import loads
    from bridge.core.audit import Audit
    from bridge.core.patron import Decision, Outcome, Patron
    from bridge.ldap.server import start
    from bridge.services import Services

    patron = Patron("29000000000000", "bench-record")

    accepted = Decision(Outcome.ACCEPTED, patron, pin_ok=True)

    class Accepting:
        today = staticmethod(dt.date.today)

        def recent(self, barcode: str) -> None:
            return None  # nothing verified lately: every search takes the general path

        def settle(self, barcode: str, pin: object, ctx: object) -> Decision:
            return accepted

        async def authenticate(self, barcode: str, pin: object, ctx: object) -> Decision:
            return accepted

    from bridge import logs

    logs.configure("warning", "json", os.devnull)
    config = loads(f'[store]\nplugin = "sqlite"\n[ldap]\nlisten = ["127.0.0.1:{port}"]\n')
    assert config.ldap is not None
    await start(config.ldap, Services(config, cast(Any, Accepting()), Audit()))
    print("ready", flush=True)
    await asyncio.Event().wait()


@contextlib.contextmanager
def _front_end_only() -> Iterator[tuple[int, tuple[str, int]]]:
    import sys

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.ldap", "stub-server", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"ready":  # readiness: its own ready line
            raise RuntimeError("stub server did not start")
        yield proc.pid, ("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def _bridge(tmp: Path, patrons: list[BenchPatron]) -> Iterator[tuple[int, tuple[str, int]]]:
    from tests.harness import Daemon

    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    daemon = Daemon(tmp, SECTIONS, store=store).start()
    try:
        assert daemon.proc is not None
        yield daemon.proc.pid, daemon.address("ldap")
    finally:
        daemon.stop()


@contextlib.contextmanager
def _reference(tmp: Path, patrons: list[BenchPatron]) -> Iterator[tuple[int, tuple[str, int]]]:
    proc, address = _slapd(tmp, patrons)
    try:
        yield proc.pid, address
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main() -> None:
    patrons = generate()
    every = pdus(patrons)
    by_barcode = dict(zip((p.barcode for p in patrons), every, strict=True))
    notes = [
        "server: the real daemon (uvloop, SQLite store, audit line per bind to a file), loopback",
        f"{len(patrons)} generated patrons, each bound once first (cache.ttl 3600: the window is "
        f"all cache hits); binds and logins spread over them; {CONNECTIONS} connections",
        f"median of {REPEATS} runs per row, the servers taking turns, so background load hits "
        "all alike",
        "front end only: the LDAP codec, session and server with a stub core (no KDF, cache, "
        "throttle or audit line); the difference to patron-bridge is the core and log writer",
    ]
    two_cores = (os.cpu_count() or 1) > 1
    if two_cores:
        os.sched_setaffinity(0, {CLIENT_CORE})
        notes.append(f"servers pinned to core {SERVER_CORE}, load generator to core {CLIENT_CORE}")
    have_slapd = bool(shutil.which("slapd") and shutil.which("slapadd"))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-ldap-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        (root / "bridge").mkdir()
        servers = [
            ("patron-bridge", *stack.enter_context(_bridge(root / "bridge", patrons))),
            ("front end only", *stack.enter_context(_front_end_only())),
        ]
        if have_slapd:
            (root / "slapd").mkdir()
            slapd = stack.enter_context(_reference(root / "slapd", patrons))
            servers.append(("slapd (mdb)", *slapd))
        if two_cores:
            for _, pid, _ in servers:
                pin_to_core(pid, SERVER_CORE)
        for _, _, address in servers:
            run_loop(_warm_up(address, every))
        rows: tuple[tuple[str, int, Worker], ...] = (
            (BINDS_ROW, BINDS, _binds),
            (LOGIN_ROW, LOGINS, _logins),
        )
        for row, total, worker in rows:
            runs: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
            for repeat in range(REPEATS):
                picks = [by_barcode[p.barcode] for p in spread(patrons, total, repeat)]
                for name, pid, address in servers:
                    if worker is _logins and name == "front end only":
                        continue  # the stub has no directory to search
                    runs[name].append(run_loop(_run(address, pid, row, name, picks, worker)))
            results.extend(median(found) for found in runs.values() if found)
    if have_slapd:
        notes.append(
            "slapd: Debian's slapd, back-mdb, index uid eq, {SSHA} userPassword, same users"
        )
        for row, label in ((BINDS_ROW, "LDAP simple bind"), (LOGIN_ROW, "LDAP search-then-bind")):
            ours = next(r for r in results if r.name == row and r.server == "patron-bridge")
            ref = next(r for r in results if r.name == row and r.server == "slapd (mdb)")
            notes.append(verdict(label, ours, ref, 1.0))
    else:
        notes.append("slapd column skipped: slapd is not installed (apt-get install slapd)")
        notes.append("goals (<= 1.0x slapd per bind and per login): not judged, no slapd figure")
    report("LDAP", results, notes)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["stub-server"]:
        from bridge.loop import run

        run(_stub_server(int(sys.argv[2])))
    else:
        main()
