"""SIP2 benchmark: the two ways vendors use a SIP2 server, against the real daemon.

1. Self-check pattern: a few persistent connections, each sending 63 (patron information with a
   PIN) and waiting for the 64 before the next (no pipelining, as real clients do). The demo
   patron's PIN is verified once, so this measures the cached path: framing, checksum, decode,
   throttle and cache lookups, the audit line, the 64 and its checksum, the socket write.
   Goal: under 40 µs of server CPU per 63.
2. Discovery-layer pattern (Palace/NYPL): a new TCP connection per patron login: connect, 93,
   63, 35, close. One "request" is one whole login.

The server is pinned to core 0 and the load generator to core 1 when there are two cores;
loopback only; bounded by REQUESTS and SECONDS per scenario. No reference SIP2 server is
packaged for Debian (Koha's SIPServer needs a whole Koha), so the bridge runs alone; the report
says so. To read the numbers on a given machine, a third row measures the floor: a bare uvloop
Protocol that echoes the same 63 bytes, i.e. what the event loop and the socket system calls
alone cost per request/response there.

    python -m bench sip2
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CpuMeter, Result, median, pin_to_core, report
from bridge.loop import run as run_loop
from bridge.sip2.codec import checksum

BARCODE = "21234000000001"
PIN = "5961"  # the demo patrons' PIN (tests/pins.py DEMO_PIN); never printed
REQUESTS = int(os.environ.get("BENCH_SIP2_REQUESTS", "40000"))
LOGINS = int(os.environ.get("BENCH_SIP2_LOGINS", "4000"))
SECONDS = float(os.environ.get("BENCH_SIP2_SECONDS", "15"))
CONNECTIONS = 4
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
ttl = 600
"""


def _with_trailer(body: str, sequence: int) -> bytes:
    data = f"{body}AY{sequence}AZ".encode()
    return data + checksum(data).encode() + b"\r"


LOGIN = _with_trailer("9300CNbench|CObench-secret-1|CPbench|", 0)
PATRON = [
    _with_trailer(
        f"63001{time.strftime('%Y%m%d    %H%M%S')}          AOMAIN|AA{BARCODE}|AC|AD{PIN}|", s
    )
    for s in range(10)
]
END = _with_trailer(f"35{time.strftime('%Y%m%d    %H%M%S')}AOMAIN|AA{BARCODE}|", 2)


async def _persistent(address: tuple[str, int], count: int, deadline: float) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(LOGIN)
    if not (await reader.readuntil(b"\r")).startswith(b"941"):
        raise RuntimeError("bench login refused")
    latencies: list[float] = []
    for i in range(count):
        started = time.perf_counter()
        writer.write(PATRON[i % 10])
        reply = await reader.readuntil(b"\r")
        latencies.append(time.perf_counter() - started)
        if b"|CQY|" not in reply:
            raise RuntimeError("bench 63 not accepted")
        if started > deadline:
            break
    writer.close()
    return latencies


async def _login_cycle(address: tuple[str, int], count: int, deadline: float) -> list[float]:
    latencies: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(*address)
        writer.write(LOGIN)
        await reader.readuntil(b"\r")
        writer.write(PATRON[1])
        if b"|CQY|" not in await reader.readuntil(b"\r"):
            raise RuntimeError("bench 63 not accepted")
        writer.write(END)
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


async def _echo(address: tuple[str, int], count: int, deadline: float) -> list[float]:
    reader, writer = await asyncio.open_connection(*address)
    latencies: list[float] = []
    for i in range(count):
        started = time.perf_counter()
        writer.write(PATRON[i % 10])
        await reader.readuntil(b"\r")
        latencies.append(time.perf_counter() - started)
        if started > deadline:
            break
    writer.close()
    return latencies


def _floor() -> Result | None:
    """The same ping-pong against a bare uvloop echo server (no SIP2, no core)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return None
    proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        if (os.cpu_count() or 1) > 1:
            pin_to_core(proc.pid, SERVER_CORE)

        async def run() -> Result:
            deadline = time.perf_counter() + SECONDS
            with CpuMeter(proc.pid) as meter:
                runs = await asyncio.gather(
                    *(
                        _echo(("127.0.0.1", port), REQUESTS // CONNECTIONS, deadline)
                        for _ in range(CONNECTIONS)
                    )
                )
            latencies = [x for run in runs for x in run]
            return Result(
                "floor: echo the 63 bytes",
                "uvloop echo",
                len(latencies),
                meter.wall,
                latencies,
                meter.seconds,
            )

        return run_loop(run())
    finally:
        proc.kill()
        proc.wait()


async def _run(address: tuple[str, int], pid: int, name: str, per_conn: int, cycle: bool) -> Result:
    deadline = time.perf_counter() + SECONDS
    worker = _login_cycle if cycle else _persistent
    # Warm up: the first 63 pays the KDF once and fills the cache.
    await _persistent(address, 2, deadline)
    with CpuMeter(pid) as meter:
        runs = await asyncio.gather(
            *(worker(address, per_conn, deadline) for _ in range(CONNECTIONS))
        )
    latencies = [x for run in runs for x in run]
    return Result(name, "patron-bridge", len(latencies), meter.wall, latencies, meter.seconds)


REPEATS = 3
CACHED_ROW = f"63 cached, {CONNECTIONS} persistent conns"
GOAL_US = 40.0


def main() -> None:
    from tests.harness import Daemon

    with tempfile.TemporaryDirectory(prefix="bench-sip2-") as tmp:
        daemon = Daemon(Path(tmp), SECTIONS).start()
        try:
            assert daemon.proc is not None
            pid = daemon.proc.pid
            cores = os.cpu_count() or 1
            if cores > 1:
                pin_to_core(pid, SERVER_CORE)
                os.sched_setaffinity(0, {CLIENT_CORE})
            address = daemon.address("sip2")
            cached = median(
                [
                    run_loop(_run(address, pid, CACHED_ROW, REQUESTS // CONNECTIONS, False))
                    for _ in range(REPEATS)
                ]
            )
            results = [
                cached,
                run_loop(
                    _run(
                        address,
                        pid,
                        "connect/93/63/35/close (per login)",
                        LOGINS // CONNECTIONS,
                        True,
                    )
                ),
            ]
        finally:
            daemon.stop()
    floor = _floor()
    if floor is not None:
        results.append(floor)
    verdict = "met" if cached.cpu_per_request_us < GOAL_US else "NOT met"
    report(
        "SIP2",
        results,
        [
            "server: the real daemon (uvloop, SQLite store, audit lines to a file), loopback",
            f"cached 63 row: median of {REPEATS} runs",
            "no reference SIP2 server is installable from Debian packages; bridge only",
            f"goal, < {GOAL_US:.0f} us server CPU per cached 63: {verdict} "
            f"({cached.cpu_per_request_us:.1f} us)",
        ],
    )


if __name__ == "__main__":
    main()
