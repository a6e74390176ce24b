"""SIP2 benchmark: the two ways vendors use a SIP2 server, against the real daemon, each next to
the floor of the same bytes on a bare uvloop echo server.

1. Self-check pattern: CONNECTIONS persistent connections, each sending 63 (patron information
   with a PIN) and waiting for the 64 before the next (no pipelining, as real clients do). The
   63s are spread over the generated patrons (bench/patrons.py), every PIN verified once first
   and cache.ttl long, so this measures the cached path: framing, checksum, decode, throttle and
   cache lookups, the audit line, the 64 and its checksum, the socket write.
   Goal: server CPU per 63 <= 3x the echo of the same 63 bytes.
2. Discovery-layer pattern (Palace/NYPL): a new TCP connection per patron login: connect, 93,
   63, 35, close. One "request" is one whole login. Goal: <= 1.5x an echo session of the same
   bytes (connect, send each message and read it back, close).

No reference SIP2 server is packaged for Debian (Koha's SIPServer needs a whole Koha), so the
anchor is the echo: what the event loop and the socket system calls alone cost. Both servers are
pinned to core 0 and the load generator to core 1 when there are two cores; the bridge and the
echo take turns, median of REPEATS runs each; loopback only; bounded by counts and SECONDS.

    python -m bench sip2
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.common import CpuMeter, Result, median, pin_to_core, report, verdict
from bench.patrons import BenchPatron, generate, spread, store_section, write_csv
from bridge.loop import run as run_loop
from bridge.sip2.codec import checksum

REQUESTS = int(os.environ.get("BENCH_SIP2_REQUESTS", "16000"))
LOGINS = int(os.environ.get("BENCH_SIP2_LOGINS", "3000"))
SECONDS = float(os.environ.get("BENCH_SIP2_SECONDS", "15"))
CONNECTIONS = 8
SERVER_CORE, CLIENT_CORE = 0, 1

SECTIONS = """
[sip2]
listen = ["127.0.0.1:0"]
max_connections_per_source = 1000

[[sip2.accounts]]
login = "bench"
password = "bench-secret-1"
institution = "MAIN"

[cache]
ttl = 3600
"""


def _with_trailer(body: str, sequence: int) -> bytes:
    data = f"{body}AY{sequence}AZ".encode()
    return data + checksum(data).encode() + b"\r"


LOGIN = _with_trailer("9300CNbench|CObench-secret-1|CPbench|", 0)
STAMP = time.strftime("%Y%m%d    %H%M%S")


@dataclass(frozen=True)
class Frames:
    """One patron's pre-encoded 63 and 35: the same bytes go to the bridge and the echo."""

    patron: bytes
    end: bytes


def frames(patrons: list[BenchPatron]) -> list[Frames]:
    return [
        Frames(
            _with_trailer(f"63001{STAMP}          AOMAIN|AA{p.barcode}|AC|AD{p.pin}|", i % 10),
            _with_trailer(f"35{STAMP}AOMAIN|AA{p.barcode}|", 2),
        )
        for i, p in enumerate(patrons)
    ]


async def _persistent(
    address: tuple[str, int], picks: list[Frames], deadline: float, echo: bool = False
) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(LOGIN)
    if not echo and not (await reader.readuntil(b"\r")).startswith(b"941"):
        raise RuntimeError("bench login refused")
    if echo:
        await reader.readuntil(b"\r")
    latencies: list[float] = []
    for pick in picks:
        started = time.perf_counter()
        writer.write(pick.patron)
        reply = await reader.readuntil(b"\r")
        latencies.append(time.perf_counter() - started)
        if not echo and b"|CQY|" not in reply:
            raise RuntimeError("bench 63 not accepted")
        if started > deadline:
            break
    writer.close()
    return latencies


async def _session(
    address: tuple[str, int], picks: list[Frames], deadline: float, echo: bool = False
) -> list[float]:
    latencies: list[float] = []
    for pick in picks:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(*address)
        writer.write(LOGIN)
        await reader.readuntil(b"\r")
        writer.write(pick.patron)
        if b"|CQY|" not in await reader.readuntil(b"\r") and not echo:
            raise RuntimeError("bench 63 not accepted")
        writer.write(pick.end)
        await reader.readuntil(b"\r")
        writer.close()
        await writer.wait_closed()
        latencies.append(time.perf_counter() - started)
        if started > deadline:
            break
    return latencies


ECHO_SERVER = """
import asyncio, uvloop
class Echo(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(data)
async def main():
    server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
uvloop.run(main())
"""


@contextlib.contextmanager
def _echo_server() -> Iterator[tuple[int, tuple[str, int]]]:
    """A bare uvloop Protocol that writes back what it reads: the floor (no SIP2, no core)."""
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())  # readiness: it prints its port once listening
        yield proc.pid, ("127.0.0.1", port)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _run(
    address: tuple[str, int],
    pid: int,
    name: str,
    server: str,
    picks: list[Frames],
    session: bool,
) -> Result:
    deadline = time.perf_counter() + SECONDS
    worker = _session if session else _persistent
    echo = server != "patron-bridge"
    with CpuMeter(pid) as meter:
        runs = await asyncio.gather(
            *(worker(address, picks[i::CONNECTIONS], deadline, echo) for i in range(CONNECTIONS))
        )
    latencies = [x for run in runs for x in run]
    return Result(name, server, len(latencies), meter.wall, latencies, meter.seconds)


async def _warm_up(address: tuple[str, int], every: list[Frames]) -> None:
    """Every patron's 63 once (each PIN pays the KDF once): the window is all cache hits."""
    far = time.perf_counter() + 3600
    await asyncio.gather(
        *(_persistent(address, every[i::CONNECTIONS], far) for i in range(CONNECTIONS))
    )


REPEATS = 3
CACHED_ROW = f"63 cached, {CONNECTIONS} persistent conns"
SESSION_ROW = "connect/93/63/35/close (per login)"
ECHO = "uvloop echo"


def main() -> None:
    from tests.harness import Daemon

    patrons = generate()
    every = frames(patrons)
    by_barcode = dict(zip((p.barcode for p in patrons), every, strict=True))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-sip2-") as tmp, contextlib.ExitStack() as stack:
        store = store_section(write_csv(patrons, Path(tmp) / "patrons.csv"))
        daemon = Daemon(Path(tmp), SECTIONS, store=store).start()
        stack.callback(daemon.stop)
        assert daemon.proc is not None
        servers = [
            ("patron-bridge", daemon.proc.pid, daemon.address("sip2")),
            (ECHO, *stack.enter_context(_echo_server())),
        ]
        cores = os.cpu_count() or 1
        if cores > 1:
            os.sched_setaffinity(0, {CLIENT_CORE})
            for _, pid, _ in servers:
                pin_to_core(pid, SERVER_CORE)
        run_loop(_warm_up(servers[0][2], every))
        for row, total, session in ((CACHED_ROW, REQUESTS, False), (SESSION_ROW, LOGINS, True)):
            runs: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
            for repeat in range(REPEATS):
                picks = [by_barcode[p.barcode] for p in spread(patrons, total, repeat)]
                for name, pid, address in servers:
                    runs[name].append(run_loop(_run(address, pid, row, name, picks, session)))
            results.extend(median(found) for found in runs.values())
    notes = [
        "server: the real daemon (uvloop, SQLite store, audit lines to a file), loopback",
        f"{len(patrons)} generated patrons, each 63 verified once first (cache.ttl 3600); "
        f"63s and logins spread over them; {CONNECTIONS} connections",
        f"median of {REPEATS} runs per row, the bridge and the echo taking turns",
        "no reference SIP2 server is installable from Debian packages: the anchor is a bare "
        "uvloop echo of the same bytes",
        verdict("SIP2 63 (cached)", results[0], results[1], 3.0),
        verdict("SIP2 session", results[2], results[3], 1.5),
    ]
    report("SIP2", results, notes)


if __name__ == "__main__":
    main()
