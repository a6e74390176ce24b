"""Workers benchmark: cached RADIUS PAP and LDAP binds against one daemon with `[server]
workers = 1` and then 2, unpinned, 1000 patrons, audit on, shared state on a private
redis-server (on a free loopback port, never the machine's shared one), whose command counter
gives the Redis round trips per cached request.

Each load runs from two client processes (so the client is not one Python core), several
sockets each (so the kernel spreads them over the workers); every socket first sends each of
the 1000 patrons once (the worker it lands on verifies and caches them), then the measured
phase cycles over them. On this shared 2-core machine the client and the workers compete for
the same cores: read the numbers as what was seen, not as capacity.

    python -m bench workers
"""

from __future__ import annotations

import asyncio
import csv
import multiprocessing
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from bench.ldap import _code, _read_pdu
from bench.radius import SECRET, _stop
from bridge.ldap import ber
from bridge.ldap import messages as m
from bridge.radius import packet as rp

PATRONS = 1000
PIN = "5961"  # the demo PIN (tests/pins.py DEMO_PIN); never printed
SECONDS = float(os.environ.get("BENCH_WORKERS_SECONDS", "10"))
CLIENTS = 2
SOCKETS = 4  # per client process
WINDOW = 16  # RADIUS requests in flight per socket
BASE_DN = "dc=library,dc=example"


def barcode(i: int) -> str:
    return f"3000{i:010d}"


def _config(tmp: Path, workers: int, redis_port: int) -> Path:
    config = tmp / "bridge.toml"
    config.write_text(
        f"""
[store]
plugin = "sqlite"
path = "patrons.db"

[security]
pepper_file = "pepper.key"
argon2_memory_kib = 8192
argon2_iterations = 1

[throttle]
source_max_failures = 100000

[state]
backend = "redis"
url = "redis://127.0.0.1:{redis_port}/0"
key_prefix = "bench:"

[server]
workers = {workers}

[cache]
ttl = 600

[audit]
destination = "audit.log"

[control]
socket = "bridge.sock"

[radius]
listen = ["127.0.0.1:0"]
reject_delay = 0
[[radius.clients]]
name = "bench"
network = "127.0.0.0/8"
secret = "{SECRET.decode()}"

[ldap]
listen = ["127.0.0.1:0"]
base_dn = "{BASE_DN}"
"""
    )
    return config


def _import_patrons(config: Path) -> None:
    rows = config.parent / "patrons.csv"
    with rows.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["barcode", "pin", "name"])
        for i in range(PATRONS):
            out.writerow([barcode(i), PIN, f"Bench Patron {i}"])
    subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(config), "patron", "import", str(rows)],
        check=True,
        capture_output=True,
        cwd=config.parent,
    )


def _start(config: Path) -> tuple[subprocess.Popen[bytes], dict[str, list[str]]]:
    import json

    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=(config.parent / "daemon.log").open("ab"),
        cwd=config.parent,
    )
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("bench daemon exited before ready")
        info = json.loads(line)
        if info.get("event") == "ready":
            return proc, info["listeners"]


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


# --- load (in client processes) ----------------------------------------------------------------


def _radius_packet(i: int, ident: int) -> bytes:
    auth = os.urandom(16)
    hidden = rp.encrypt_password(PIN.encode(), SECRET, auth)
    attrs = [(rp.USER_NAME, barcode(i % PATRONS).encode()), (rp.USER_PASSWORD, hidden)]
    return rp.encode_request(rp.ACCESS_REQUEST, ident, auth, attrs, SECRET)


def _radius_client(address: tuple[str, int], warm: bool, seconds: float, out: object) -> None:
    socks = []
    for _ in range(SOCKETS):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(address)
        sock.setblocking(False)
        socks.append(sock)
    count = 0
    end = time.monotonic() + seconds
    todo = {s.fileno(): PATRONS if warm else 10**9 for s in socks}
    nxt = {s.fileno(): 0 for s in socks}
    flying = {s.fileno(): 0 for s in socks}
    by_fd = {s.fileno(): s for s in socks}
    for fd, sock in by_fd.items():
        for _ in range(WINDOW):
            sock.send(_radius_packet(nxt[fd], nxt[fd] % 256))
            nxt[fd] += 1
            flying[fd] += 1
    while any(flying.values()) and (warm or time.monotonic() < end):
        ready, _, _ = select.select(list(by_fd), [], [], 5.0)
        if not ready:
            break  # lost packets: stop here
        for fd in ready:
            sock = by_fd[fd]
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            flying[fd] -= 1
            if data[0] == rp.ACCESS_ACCEPT:
                count += 1
            if nxt[fd] < todo[fd]:
                sock.send(_radius_packet(nxt[fd], nxt[fd] % 256))
                nxt[fd] += 1
                flying[fd] += 1
    out.put(count)  # type: ignore[attr-defined]


def _bind_pdu(msgid: int, i: int) -> bytes:
    name = f"uid={barcode(i % PATRONS)},ou=patrons,{BASE_DN}"
    body = ber.integer(3) + ber.octets(name) + ber.tlv(0x80, PIN.encode())
    return ber.sequence(ber.integer(msgid), ber.tlv(m.BIND_REQUEST, body))


async def _ldap_conns(address: tuple[str, int], warm: bool, seconds: float) -> int:
    end = time.monotonic() + seconds

    async def one() -> int:
        reader, writer = await asyncio.open_connection(*address)
        done = 0
        i = 0
        while (i < PATRONS) if warm else (time.monotonic() < end):
            writer.write(_bind_pdu(i % 1000 + 1, i))
            if _code(await _read_pdu(reader)) == 0:
                done += 1
            i += 1
        writer.close()
        return done

    return sum(await asyncio.gather(*(one() for _ in range(SOCKETS))))


def _ldap_client(address: tuple[str, int], warm: bool, seconds: float, out: object) -> None:
    out.put(asyncio.run(_ldap_conns(address, warm, seconds)))  # type: ignore[attr-defined]


def _load(target: object, address: tuple[str, int], warm: bool) -> int:
    queue: multiprocessing.Queue[int] = multiprocessing.Queue()
    procs = [
        multiprocessing.Process(target=target, args=(address, warm, SECONDS, queue))  # type: ignore[arg-type]
        for _ in range(CLIENTS)
    ]
    for proc in procs:
        proc.start()
    total = sum(queue.get(timeout=600) for _ in procs)
    for proc in procs:
        proc.join()
    return total


# --- the runs ----------------------------------------------------------------------------------


def _redis(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            return proc, port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("bench redis-server did not start")


def _commands(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        return int(client.info("stats")["total_commands_processed"])
    finally:
        client.close()


def run(workers: int) -> list[tuple[str, float, float]]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as name:
        tmp = Path(name)
        redis_proc, port = _redis(tmp)
        try:
            config = _config(tmp, workers, port)
            _import_patrons(config)
            proc, listeners = _start(config)
            try:
                for label, target, key in (
                    ("radius PAP (cached)", _radius_client, "radius"),
                    ("ldap simple bind (cached)", _ldap_client, "ldap"),
                ):
                    address = _address(listeners[key][0])
                    _load(target, address, warm=True)
                    before = _commands(port)
                    started = time.monotonic()
                    answered = _load(target, address, warm=False)
                    wall = time.monotonic() - started
                    trips = (_commands(port) - before - 1) / max(answered, 1)
                    rows.append((label, answered / wall, trips))
            finally:
                _stop(proc)
        finally:
            _stop(redis_proc)
    return rows


def main() -> None:
    print("\n## workers: cached requests, 1000 patrons, audit on, Redis state, unpinned")
    print(f"{'load':<28} {'workers':>7} {'req/s':>10} {'redis cmds/req':>15}")
    for workers in (1, 2):
        for label, rate, trips in run(workers):
            print(f"{label:<28} {workers:>7} {rate:>10.0f} {trips:>15.4f}")


if __name__ == "__main__":
    main()
