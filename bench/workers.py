"""Workers benchmark: cached RADIUS PAP and LDAP binds against one daemon with `[server]
workers = 1` and then 2, unpinned, 1000 patrons (each with its own PIN), audit on, shared state
on a private redis-server (on a free loopback port, never the machine's shared one), whose
command counter gives the Redis round trips per cached request. In the same run, Debian's
FreeRADIUS (pap + files, `auth = yes` logging) and slapd (back-mdb, {SSHA}) answer the same
load for the same patrons, unpinned too; a reference that is not installed is skipped with a
line saying so.

The load comes from `bench/loadgen.c`, compiled here with gcc (`-lcrypto` for the MD5 of
User-Password hiding): RADIUS with sendmmsg/recvmmsg on several connected UDP sockets (the
kernel spreads their source ports over the workers), LDAP with one bind in flight on each of
many connections multiplexed by epoll. It costs a fraction of one core, where the Python client
it replaces took whole cores from the two the workers need. Every row still reports what the
generator took (its CPU as a share of one core) and the server's CPU per request, since on a
shared 2-core machine the client, other people's work and the server compete for the same
cores: read requests/s as what was seen, CPU per request as the steadier figure.

Warm-up: every socket or connection first asks for each patron once, twice over (the first
pass pays the KDF on the worker it lands on, and may be shed by the KDF bound; the second
fills any gap), so the measured phase is the cached path.

    python -m bench workers       (BENCH_WORKERS_SECONDS: measured seconds per row, default 5)
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.common import process_cpu_seconds
from bench.ldap import _slapd
from bench.patrons import generate, write_csv
from bench.radius import SECRET, _stop, freeradius_server, wait_answering

PEOPLE = generate(1000)
SECONDS = float(os.environ.get("BENCH_WORKERS_SECONDS", "5"))
SOCKETS = 8  # RADIUS: connected UDP sockets (source ports), spread over the workers
WINDOW = 32  # RADIUS requests in flight per socket
CONNECTIONS = 32  # LDAP connections, one bind in flight on each
BASE_DN = "dc=library,dc=example"
LOADGEN = Path(__file__).with_name("loadgen.c")
RADIUS_LOAD = "radius PAP (cached)"
LDAP_LOAD = "ldap simple bind (cached)"


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
    rows = write_csv(PEOPLE, config.parent / "patrons.csv")
    subprocess.run(
        [sys.executable, "-m", "bridge", "--config", str(config), "patron", "import", str(rows)],
        check=True,
        capture_output=True,
        cwd=config.parent,
    )


def _start(config: Path) -> tuple[subprocess.Popen[bytes], dict[str, list[str]], list[int]]:
    """The daemon, its listeners, and the pids whose CPU is the server's (the supervisor and
    its workers; the one process when workers = 1)."""
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
            return proc, info["listeners"], [proc.pid, *info.get("workers", [])]


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host, int(port)


# --- load: the compiled generator ----------------------------------------------------------


def compile_loadgen(tmp: Path) -> Path | None:
    """bench/loadgen.c built with gcc into `tmp`; None (and a line saying why) without gcc or
    OpenSSL's headers."""
    gcc = shutil.which("gcc")
    if gcc is None:
        print("  loadgen: gcc not installed (apt-get install gcc libssl-dev): workers rows skipped")
        return None
    binary = tmp / "loadgen"
    built = subprocess.run(
        [gcc, "-O2", "-Wno-deprecated-declarations", "-o", str(binary), str(LOADGEN), "-lcrypto"],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        print(f"  loadgen: does not build (libssl-dev missing?): {built.stderr.strip()[:300]}")
        return None
    return binary


@dataclass(frozen=True, slots=True)
class Load:
    """What one generator run saw: answers, accepts, wall and its own CPU seconds."""

    answered: int
    accepted: int
    seconds: float
    cpu: float


def drive(
    loadgen: Path, protocol: str, address: tuple[str, int], users: Path, *, warm: bool
) -> Load:
    """One run of the generator against `address`: a warm-up pass or SECONDS of load."""
    host, port = address
    if protocol == "radius":
        window = 4 if warm else WINDOW  # a warm-up pass pays the KDF: few in flight
        args = [SECRET.decode(), str(users), str(SOCKETS), str(window)]
    else:
        args = [BASE_DN, str(users), str(CONNECTIONS)]
    argv = [str(loadgen), protocol, host, str(port), *args, str(SECONDS), "1" if warm else "0"]
    done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900)
    answered, accepted, seconds, cpu = done.stdout.split()
    return Load(int(answered), int(accepted), float(seconds), float(cpu))


def _server_cpu(pids: list[int]) -> float:
    return sum(process_cpu_seconds(pid) for pid in pids)


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: a load against one server."""

    load: str
    server: str
    req_s: float
    cpu_us: float  # server CPU per answered request
    client_share: float  # the generator's CPU over the row's wall time (1.0 = one core)
    accepted: float  # share of answers that were accepts (1.0 expected)
    redis_per_request: float | None = None

    @property
    def server_cores(self) -> float:
        """The cores the server kept busy (1.0 = one core all the time): what it was given."""
        return self.req_s * self.cpu_us / 1e6

    def line(self) -> str:
        redis_cell = "-" if self.redis_per_request is None else f"{self.redis_per_request:.4f}"
        return (
            f"{self.load:<26} {self.server:<24} {self.req_s:>9.0f} {self.cpu_us:>10.1f} "
            f"{self.server_cores:>7.2f} {100 * self.client_share:>8.0f}% "
            f"{100 * self.accepted:>8.1f}% {redis_cell:>10}"
        )


def measure(
    loadgen: Path,
    protocol: str,
    address: tuple[str, int],
    users: Path,
    pids: list[int],
    label: tuple[str, str],
    redis_port: int | None = None,
) -> Row:
    """Two warm-up passes, then the measured run with the server's CPU (every pid in `pids`)
    and, for the bridge, the private Redis's command counter read around it."""
    for _ in range(2):
        drive(loadgen, protocol, address, users, warm=True)
    before_cmds = _commands(redis_port) if redis_port else 0
    before = _server_cpu(pids)
    load = drive(loadgen, protocol, address, users, warm=False)
    server = _server_cpu(pids) - before
    trips = None
    if redis_port:  # minus the INFO call that reads the counter
        trips = (_commands(redis_port) - before_cmds - 1) / max(load.answered, 1)
    answered = max(load.answered, 1)
    return Row(
        *label,
        load.answered / load.seconds,
        server / answered * 1e6,
        load.cpu / load.seconds,
        load.accepted / answered,
        trips,
    )


# --- the servers -------------------------------------------------------------------------------


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


def bridge_rows(loadgen: Path, tmp: Path, workers: int, users: Path) -> list[Row]:
    rows = []
    redis_proc, port = _redis(tmp)
    try:
        config = _config(tmp, workers, port)
        _import_patrons(config)
        proc, listeners, pids = _start(config)
        try:
            for protocol, load in (("radius", RADIUS_LOAD), ("ldap", LDAP_LOAD)):
                address = _address(listeners[protocol][0])
                label = (load, f"bridge, workers = {workers}")
                rows.append(measure(loadgen, protocol, address, users, pids, label, port))
        finally:
            _stop(proc)
    finally:
        _stop(redis_proc)
    return rows


def reference_rows(loadgen: Path, tmp: Path, users: Path) -> list[Row]:
    rows = []
    binary = shutil.which("freeradius") or shutil.which("radiusd")
    if binary is None:
        print("  freeradius: not installed (apt-get install freeradius): its row skipped")
    else:
        (tmp / "freeradius").mkdir()
        with freeradius_server(tmp / "freeradius", binary, PEOPLE) as (pid, address):
            wait_answering(address)
            label = (RADIUS_LOAD, "FreeRADIUS (pap, files)")
            rows.append(measure(loadgen, "radius", address, users, [pid], label))
    if not (shutil.which("slapd") and shutil.which("slapadd")):
        print("  slapd: not installed (apt-get install slapd): its row skipped")
    else:
        (tmp / "slapd").mkdir()
        proc, address = _slapd(tmp / "slapd", PEOPLE)
        try:
            label = (LDAP_LOAD, "slapd (mdb, {SSHA})")
            rows.append(measure(loadgen, "ldap", address, users, [proc.pid], label))
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return rows


def main() -> None:
    print(
        "\n## workers: cached requests, 1000 patrons, audit on, Redis state, unpinned; "
        f"{SECONDS:g} s a row; load average {os.getloadavg()[0]:.1f} at the start"
    )
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as name:
        tmp = Path(name)
        loadgen = compile_loadgen(tmp)
        if loadgen is None:
            return
        users = tmp / "users.txt"
        users.write_text("".join(f"{p.barcode} {p.pin}\n" for p in PEOPLE))
        rows: list[Row] = []
        for workers in (1, 2):
            (tmp / f"w{workers}").mkdir()
            rows += bridge_rows(loadgen, tmp / f"w{workers}", workers, users)
        rows += reference_rows(loadgen, tmp, users)
    print(
        f"{'load':<26} {'server':<24} {'req/s':>9} {'CPU us/req':>10} {'cores':>7} "
        f"{'loadgen':>9} {'accepted':>9} {'redis/req':>10}"
    )
    for row in rows:
        print(row.line())
    for load in (RADIUS_LOAD, LDAP_LOAD):
        mine = {r.server: r for r in rows if r.load == load}
        one, two = mine.get("bridge, workers = 1"), mine.get("bridge, workers = 2")
        if one and two:
            print(
                f"  {load}: workers = 2 gave {two.req_s / one.req_s:.2f}x the req/s of one "
                f"(goal >= 1.8x), with {two.server_cores:.2f} cores against "
                f"{one.server_cores:.2f}; CPU per request {two.cpu_us / one.cpu_us:.2f}x, so on "
                f"two free cores (derived, not seen): {2 * one.cpu_us / two.cpu_us:.2f}x"
            )
        for ref in (r for r in mine.values() if not r.server.startswith("bridge")):
            if two:
                print(
                    f"  {load}: bridge workers = 2 at {two.req_s / ref.req_s:.2f}x {ref.server}'s "
                    f"req/s, {two.cpu_us / ref.cpu_us:.2f}x its CPU per request"
                )
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
