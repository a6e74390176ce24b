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
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import CpuMeter, Result, free_port, median, pin_to_core, report
from bridge.radius import packet as rp

ROOT = Path(__file__).resolve().parent.parent
DEMO_CSV = ROOT / "conf" / "demo-patrons.csv"
SECRET = b"bench-secret-0123456789abcdef"
BARCODE = "21234000000001"
PIN = "5961"  # the demo patrons' PIN (tests/pins.py DEMO_PIN); never printed
REQUESTS = int(os.environ.get("BENCH_RADIUS_REQUESTS", "20000"))
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
def bridge_server(tmp: Path) -> Iterator[tuple[int, tuple[str, int]]]:
    """The real daemon (uvloop, SQLite store, audit to a file); yields (pid, address)."""
    config = tmp / "bridge.toml"
    config.write_text(
        f"""
[store]
plugin = "sqlite"
path = "patrons.db"
demo = true
demo_file = "{DEMO_CSV}"

[security]
pepper_file = "pepper.key"

[throttle]
path = "throttle.db"

[cache]
ttl = 600

[audit]
destination = "audit.log"

[log]
level = "info"

[control]
socket = "bridge.sock"

[radius]
listen = ["127.0.0.1:0"]

[[radius.clients]]
name = "bench"
network = "127.0.0.1/32"
secret = "{SECRET.decode()}"
reply = {{ Session-Timeout = 3600 }}
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "serve"],
        stdout=subprocess.PIPE,
        stderr=(tmp / "daemon.log").open("ab"),
        cwd=tmp,
    )
    assert proc.stdout is not None
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(f"bridge did not start: {(tmp / 'daemon.log').read_text()[-800:]}")
        info = json.loads(line)
        host, _, port = info["listeners"]["radius"][0].rpartition(":")
        yield proc.pid, (host, int(port))
    finally:
        _stop(proc)
        proc.stdout.close()


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
def freeradius_server(tmp: Path, binary: str) -> Iterator[tuple[int, tuple[str, int]]]:
    """Debian's FreeRADIUS in the foreground with a minimal pap + files config."""
    port = free_port(socket.SOCK_DGRAM)
    for sub in ("log", "run", "mods-config/files"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "radiusd.conf").write_text(
        FREERADIUS_CONF.format(tmp=tmp, port=port, secret=SECRET.decode())
    )
    users = (tmp / "mods-config" / "files" / "authorize").open("w")
    with users:
        users.write(f'{BARCODE} Cleartext-Password := "{PIN}"\n')
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


def build_requests(count: int, kind: str = "pap") -> list[tuple[bytes, bytes]]:
    """(packet, authenticator) per request: identifiers cycle, authenticators are fresh.
    `kind` "pap" is an Access-Request, "status" a Status-Server (no authenticator call: the
    front end's own cost)."""
    out = []
    user = BARCODE.encode()
    for i in range(count):
        auth = os.urandom(16)
        if kind == "status":
            out.append((rp.encode_request(rp.STATUS_SERVER, i % 256, auth, [], SECRET), auth))
            continue
        hidden = rp.encrypt_password(PIN.encode(), SECRET, auth)
        attrs = [(rp.USER_NAME, user), (rp.USER_PASSWORD, hidden), (32, b"bench-ap")]
        out.append((rp.encode_request(rp.ACCESS_REQUEST, i % 256, auth, attrs, SECRET), auth))
    return out


def wait_answering(address: tuple[str, int], deadline: float = 30.0) -> None:
    """Readiness for FreeRADIUS: a Status-Server answered (the bridge reports its own)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            probe = rp.encode_request(rp.STATUS_SERVER, 1, os.urandom(16), [], SECRET)
            sock.sendto(probe, address)
            try:
                sock.recvfrom(4096)
                return
            except TimeoutError:
                continue
    raise RuntimeError(f"no answer from {address}")


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


def measure(
    name: str, server: str, pid: int, address: tuple[str, int], kind: str = "pap"
) -> Result:
    requests = build_requests(REQUESTS, kind)
    pin_to_core(pid, SERVER_CORE)
    with CpuMeter(pid) as meter:
        answered, latencies = drive(address, requests)
    return Result(name, server, answered, meter.wall, latencies, meter.seconds)


KINDS = (("pap", "radius PAP (cached)"), ("status", "radius Status-Server"))


def main() -> None:
    cores = os.cpu_count() or 1
    notes = [
        f"PAP Access-Request, cached verification, {WINDOW} in flight, {REQUESTS} requests a "
        f"run (at most {SECONDS:.0f} s); audit on for both",
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
        servers = [("patron-bridge", *stack.enter_context(bridge_server(bridge_dir)))]
        if binary is not None:
            fr_dir = Path(tmp) / "freeradius"
            fr_dir.mkdir()
            servers.append(("freeradius", *stack.enter_context(freeradius_server(fr_dir, binary))))
            wait_answering(servers[-1][2])
        for _, _, address in servers:
            for kind, _ in KINDS:
                drive(address, build_requests(WINDOW * 4, kind))  # the first PIN check runs the KDF
        for kind, title in KINDS:
            runs: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
            for _ in range(REPEATS):
                for name, pid, address in servers:
                    runs[name].append(measure(title, name, pid, address, kind))
            results.extend(median(runs[name]) for name, _, _ in servers)
    notes.append("Status-Server rows: the front end alone (no PIN check, no audit line)")
    if len(results) == 4 and results[1].cpu_per_request_us > 0:
        ratio = results[0].cpu_per_request_us / results[1].cpu_per_request_us
        verdict = "within" if ratio <= 1.5 else "OVER"
        notes.append(
            f"PAP server CPU per request: {ratio:.2f}x FreeRADIUS ({verdict} the 1.5x goal)"
        )
    report("RADIUS", results, notes)


if __name__ == "__main__":
    main()
