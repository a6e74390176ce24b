"""RADIUS PAP benchmark: Patron Bridge against Debian's FreeRADIUS (pap + files), same users.

Both servers are pinned to core 0 and the load generator to core 1 (when there are two cores),
on loopback only. The load is PAP Access-Requests for a demo patron whose PIN the bridge has
already verified, so it measures the cached path (codec, Message-Authenticator, password
decryption, throttle, cache, audit line, reply) rather than the KDF; FreeRADIUS compares a
cleartext password from its users file. Every request carries a fresh Request Authenticator so
neither server answers from its duplicate cache. Audit logging is on for both: the bridge's
audit file, FreeRADIUS's `log { auth = yes }`.

Bounded: REQUESTS per server (or SECONDS, whichever comes first), WINDOW requests in flight.
The FreeRADIUS column is skipped, with a note, when `freeradius` is not installed.

    python -m bench radius
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import CpuMeter, Result, free_port, median, pin_to_core, report, verdict
from bench.patrons import (
    BenchPatron,
    freeradius_users,
    generate,
    spread,
    store_section,
    write_csv,
)
from bridge.radius import packet as rp
from tests import freeradius

SECRET = b"bench-secret-0123456789abcdef"
REQUESTS = int(os.environ.get("BENCH_RADIUS_REQUESTS", "10000"))
REPEATS = 3
SECONDS = float(os.environ.get("BENCH_RADIUS_SECONDS", "15"))
WINDOW = 32
SERVER_CORE, CLIENT_CORE = 0, 1


# --- servers -----------------------------------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def bridge_server(tmp: Path, patrons: list[BenchPatron]) -> Iterator[tuple[int, tuple[str, int]]]:
    """The real daemon (uvloop, SQLite store of the generated patrons, audit to a file, the
    test harness's fast KDF: the cached path never runs it); yields (pid, address)."""
    from tests.harness import Daemon

    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    daemon = Daemon(tmp, RADIUS_SECTIONS, store=store).start()
    try:
        assert daemon.proc is not None
        yield daemon.proc.pid, daemon.address("radius")
    finally:
        daemon.stop()


RADIUS_SECTIONS = f"""
[cache]
ttl = 3600

[radius]
listen = ["127.0.0.1:0"]

[[radius.clients]]
name = "bench"
network = "127.0.0.1/32"
secret = "{SECRET.decode()}"
reply = {{ Session-Timeout = 3600 }}
"""


FREERADIUS_CONF = """
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {tmp}/log
raddbdir = {tmp}
radacctdir = ${{logdir}}/radacct
name = freeradius
confdir = ${{raddbdir}}
modconfdir = ${{confdir}}/mods-config
run_dir = {tmp}/run
db_dir = ${{raddbdir}}
libdir = /usr/lib/freeradius
pidfile = ${{run_dir}}/${{name}}.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 16384
hostname_lookups = no
log {{
    destination = files
    file = ${{logdir}}/radius.log
    auth = yes
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 1
    status_server = yes
}}
thread pool {{
    start_servers = 5
    max_servers = 32
    min_spare_servers = 3
    max_spare_servers = 10
    max_requests_per_server = 0
}}
client bench {{
    ipaddr = 127.0.0.1
    secret = {secret}
}}
modules {{
    pap {{
    }}
    files {{
        moddir = ${{modconfdir}}/files
        filename = ${{moddir}}/authorize
    }}
}}
server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {port}
    }}
    authorize {{
        files
        pap
    }}
    authenticate {{
        Auth-Type PAP {{
            pap
        }}
    }}
    post-auth {{
        update reply {{
            Session-Timeout := 3600
        }}
    }}
}}
"""


@contextlib.contextmanager
def freeradius_server(
    tmp: Path, binary: str, patrons: list[BenchPatron]
) -> Iterator[tuple[int, tuple[str, int]]]:
    """Debian's FreeRADIUS in the foreground with a minimal pap + files config."""
    port = free_port(socket.SOCK_DGRAM)
    for sub in ("log", "run", "mods-config/files"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "radiusd.conf").write_text(
        FREERADIUS_CONF.format(tmp=tmp, port=port, secret=SECRET.decode())
    )
    (tmp / "mods-config" / "files" / "authorize").write_text(freeradius_users(patrons))
    proc = subprocess.Popen(
        [binary, "-f", "-d", str(tmp)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "stderr.log").open("ab"),
    )
    try:
        yield proc.pid, ("127.0.0.1", port)
    finally:
        _stop(proc)


# --- load generator --------------------------------------------------------------------------


def build_requests(
    patrons: list[BenchPatron], count: int, kind: str = "pap", seed: int = 0
) -> list[tuple[bytes, bytes]]:
    """(packet, authenticator) per request, spread over the patrons: identifiers cycle,
    authenticators are fresh. `kind` "pap" is an Access-Request, "status" a Status-Server (no
    authenticator call: the front end's own cost)."""
    out = []
    for i, who in enumerate(spread(patrons, count, seed)):
        auth = os.urandom(16)
        if kind == "status":
            out.append((rp.encode_request(rp.STATUS_SERVER, i % 256, auth, [], SECRET), auth))
            continue
        hidden = rp.encrypt_password(who.pin.encode(), SECRET, auth)
        attrs = [
            (rp.USER_NAME, who.barcode.encode()),
            (rp.USER_PASSWORD, hidden),
            (32, b"bench-ap"),
        ]
        out.append((rp.encode_request(rp.ACCESS_REQUEST, i % 256, auth, attrs, SECRET), auth))
    return out


def wait_answering(address: tuple[str, int], deadline: float = 30.0) -> None:
    """Readiness for FreeRADIUS: a Status-Server answered (the bridge reports its own)."""
    freeradius.wait_answering(address, SECRET, deadline)


def drive(address: tuple[str, int], requests: list[tuple[bytes, bytes]]) -> tuple[int, list[float]]:
    """Keep WINDOW requests in flight; returns (answered, latencies). Identifiers never collide
    because WINDOW < 256 and identifiers cycle over the request list in order."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.connect(address)
    sock.settimeout(2.0)
    sent_at: dict[int, tuple[float, int]] = {}  # identifier -> (time, request index)
    latencies: list[float] = []
    next_index = 0
    answered = 0
    end = time.monotonic() + SECONDS
    perf = time.perf_counter
    try:
        while next_index < min(WINDOW, len(requests)):
            sent_at[next_index % 256] = (perf(), next_index)
            sock.send(requests[next_index][0])
            next_index += 1
        while sent_at:
            try:
                data = sock.recv(4096)
            except TimeoutError:
                break  # lost packets: stop, count what was answered
            now = perf()
            entry = sent_at.pop(data[1], None)
            if entry is None:
                continue
            started, index = entry
            if data[0] != rp.ACCESS_ACCEPT or not rp.reply_ok(data, requests[index][1], SECRET):
                raise RuntimeError(f"unexpected reply code {data[0]}")
            latencies.append(now - started)
            answered += 1
            if next_index < len(requests) and time.monotonic() < end:
                sent_at[next_index % 256] = (perf(), next_index)
                sock.send(requests[next_index][0])
                next_index += 1
    finally:
        sock.close()
    return answered, latencies


def warm_up(address: tuple[str, int], patrons: list[BenchPatron], batch: int = 8) -> None:
    """Every patron's PIN verified once (each pays the KDF), a few at a time with retries: a
    busy KDF pool may shed requests, and a patron left out would put the KDF in the window."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.settimeout(5.0)
        for start in range(0, len(patrons), batch):
            pending = patrons[start : start + batch]
            for _attempt in range(5):
                sent: dict[int, tuple[BenchPatron, bytes]] = {}
                for ident, who in enumerate(pending):
                    auth = os.urandom(16)
                    hidden = rp.encrypt_password(who.pin.encode(), SECRET, auth)
                    attrs = [(rp.USER_NAME, who.barcode.encode()), (rp.USER_PASSWORD, hidden)]
                    ident_byte = (start + ident + _attempt * 64) % 256
                    sent[ident_byte] = (who, auth)
                    sock.send(rp.encode_request(rp.ACCESS_REQUEST, ident_byte, auth, attrs, SECRET))
                with contextlib.suppress(TimeoutError):
                    while sent:
                        data = sock.recv(4096)
                        entry = sent.get(data[1])
                        if entry is not None and rp.reply_ok(data, entry[1], SECRET):
                            if data[0] != rp.ACCESS_ACCEPT:
                                raise RuntimeError("bench patron refused in warm-up")
                            del sent[data[1]]
                pending = [who for who, _ in sent.values()]
                if not pending:
                    break
            else:
                raise RuntimeError("warm-up: patrons left unanswered after 5 tries")


def measure(
    name: str,
    server: str,
    pid: int,
    address: tuple[str, int],
    patrons: list[BenchPatron],
    kind: str = "pap",
    seed: int = 0,
) -> Result:
    requests = build_requests(patrons, REQUESTS, kind, seed)
    pin_to_core(pid, SERVER_CORE)
    with CpuMeter(pid) as meter:
        answered, latencies = drive(address, requests)
    return Result(name, server, answered, meter.wall, latencies, meter.seconds)


KINDS = (("pap", "radius PAP (cached)"), ("status", "radius Status-Server"))


def main() -> None:
    cores = os.cpu_count() or 1
    patrons = generate()
    notes = [
        f"PAP Access-Requests spread over {len(patrons)} generated patrons, each PIN verified once "
        f"first (cache.ttl 3600: the window is all cache hits), {WINDOW} in flight, {REQUESTS} "
        f"requests a run (at most {SECONDS:.0f} s); audit on for both (bridge audit file, "
        "FreeRADIUS log { auth = yes } to a file)",
        f"median of {REPEATS} runs, the servers taking turns, so background load hits both alike",
    ]
    if cores > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {CLIENT_CORE})
        notes.append(f"servers pinned to core {SERVER_CORE}, load generator to core {CLIENT_CORE}")
    else:
        notes.append("one core only: server and load generator share it")
    binary = shutil.which("freeradius") or shutil.which("radiusd")
    if binary is None:
        notes.append("FreeRADIUS not installed (apt-get install freeradius): column skipped")
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-radius-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        bridge_dir = Path(tmp) / "bridge"
        bridge_dir.mkdir()
        servers = [("patron-bridge", *stack.enter_context(bridge_server(bridge_dir, patrons)))]
        if binary is not None:
            fr_dir = Path(tmp) / "freeradius"
            fr_dir.mkdir()
            fr = stack.enter_context(freeradius_server(fr_dir, binary, patrons))
            servers.append(("freeradius", *fr))
            wait_answering(servers[-1][2])
        for _, _, address in servers:
            # Every patron's PIN verified once (the KDF), so the measured window is cache hits.
            warm_up(address, patrons)
            drive(address, build_requests(patrons, WINDOW * 4, "status"))
        for kind, title in KINDS:
            runs: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
            for repeat in range(REPEATS):
                for name, pid, address in servers:
                    runs[name].append(
                        measure(title, name, pid, address, patrons, kind, seed=repeat)
                    )
            results.extend(median(runs[name]) for name, _, _ in servers)
    notes.append("Status-Server rows: the front end alone (no PIN check, no audit line)")
    if len(results) == 4:
        notes.append(verdict("RADIUS PAP (cached)", results[0], results[1], 1.0))
    else:
        notes.append("RADIUS PAP goal (<= 1.0x FreeRADIUS): not judged, no FreeRADIUS figure")
    report("RADIUS", results, notes)


if __name__ == "__main__":
    main()
