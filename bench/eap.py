"""802.1X benchmark: full EAP-TTLS/PAP authentications (and resumed ones) per second of server
CPU, Patron Bridge against Debian's FreeRADIUS 3 (eap module: TTLS, inner PAP from its users
file), the same certificates (one P-256 chain from `cert generate`), in the same run.

The supplicant is ours: tests/radius/eap/peer.py (pyOpenSSL in memory, TLS 1.2) over the EAP
codec, WINDOW conversations in flight over UDP, each Access-Request with Message-Authenticator.
Only the servers' CPU is counted (/proc), so the Python supplicant's own cost does not enter the
figure. Each generated patron's PIN is verified once first (the bridge's cache then answers
the inner PAP, as FreeRADIUS compares a cleartext password), so the rows measure EAP and TLS.
Resumed rows reuse the sessions of full authentications (TLS 1.2 session IDs; the bridge checks
the card's standing per resumption, FreeRADIUS its session cache). Audit lines on for both
(the bridge's audit file, FreeRADIUS `log { auth = yes }`).

    python -m bench eap        (BENCH_EAP_AUTHS=1000 per row)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from OpenSSL import SSL

from bench.common import CpuMeter, Result, free_port, median, pin_to_core, report, verdict
from bench.patrons import BenchPatron, freeradius_users, generate, store_section, write_csv
from bridge.tls import generate_chain
from tests import freeradius
from tests.radius.eap.nas import run
from tests.radius.eap.peer import client_context

SECRET = b"bench-eap-secret-0123456789abcdef"
AUTHS = int(os.environ.get("BENCH_EAP_AUTHS", "1000"))
PATRONS = 50
WINDOW = 8
REPEATS = 1
SERVER_CORE, CLIENT_CORE = 0, 1
STATE = 24
OUTER = b"anonymous@library.example"

BRIDGE_SECTIONS = f"""
[cache]
ttl = 3600

[radius]
listen = ["127.0.0.1:0"]

[radius.eap]
certificate = "tls/server.pem"
key = "tls/server-key.pem"
ca = "tls/ca.pem"
max_per_client = 4096

[[radius.clients]]
name = "bench"
network = "127.0.0.1/32"
secret = "{SECRET.decode()}"
"""

FREERADIUS_INNER = """
server patron-bridge-inner {
	authorize {
		files
		pap
	}
	authenticate {
		Auth-Type PAP {
			pap
		}
	}
}
"""


@contextlib.contextmanager
def bridge_server(tmp: Path, patrons: list[BenchPatron]) -> Iterator[tuple[int, tuple[str, int]]]:
    from tests.harness import Daemon

    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    daemon = Daemon(tmp, BRIDGE_SECTIONS, store=store).start()
    try:
        assert daemon.proc is not None
        yield daemon.proc.pid, daemon.address("radius")
    finally:
        daemon.stop()


@contextlib.contextmanager
def freeradius_server(
    tmp: Path, certs: dict[str, Path], patrons: list[BenchPatron], resumption: bool
) -> Iterator[tuple[int, tuple[str, int]]]:
    """FreeRADIUS with the sample eap module; `resumption`: its session cache on (on disk, as
    FreeRADIUS 3.2 requires), for the resumed row only, so the full row pays no disk writes."""
    port = free_port(socket.SOCK_DGRAM)
    conf = freeradius.raddb(
        tmp,
        port=port,
        certificates=certs,
        inner=FREERADIUS_INNER,
        resumption=resumption,
        secret=SECRET.decode(),
    )
    (conf / "mods-config" / "files" / "authorize").write_text(freeradius_users(patrons))
    with freeradius.running(conf) as proc:
        freeradius.wait_answering(("127.0.0.1", port), SECRET)
        yield proc.pid, ("127.0.0.1", port)


def measure(
    title: str,
    name: str,
    pid: int,
    address: tuple[str, int],
    ca: Path,
    patrons: list[BenchPatron],
    resume: bool,
) -> Result:
    ctx = client_context(ca)
    sessions = None
    if resume:  # full authentications first (not measured), whose sessions are resumed
        _, _, sessions, _ = run(address, ca, pairs(patrons), WINDOW * 4, ctx, secret=SECRET)
    pin_to_core(pid, SERVER_CORE)
    with CpuMeter(pid) as meter:
        accepted, latencies, _, resumed = run(
            address, ca, pairs(patrons), AUTHS, ctx, sessions, secret=SECRET, window=WINDOW
        )
    if resume and resumed != accepted:
        raise RuntimeError(f"{name}: {accepted - resumed} of {accepted} did not resume")
    return Result(title, name, accepted, meter.wall, latencies, meter.seconds)


def pairs(patrons: list[BenchPatron]) -> list[tuple[str, str]]:
    return [(who.barcode, who.pin) for who in patrons]


ROWS = ((False, "EAP-TTLS/PAP full handshake"), (True, "EAP-TTLS/PAP resumed"))


# --- rows of bench/instructions.py: `eap-full`, `eap-resumed` -----------------------------------


@dataclass(slots=True)
class Supplicant:
    """One patron's inner PAP pair, and the TLS session its warm-up conversation left to resume."""

    barcode: str
    pin: str
    session: SSL.Session | None = None


def instruction_sections(tmp: Path) -> str:
    """The daemon's EAP sections, its certificate chain written under `tmp` first."""
    tls = tmp / "tls"
    tls.mkdir(parents=True, exist_ok=True)
    generate_chain(
        tls / "ca.pem", tls / "ca-key.pem", tls / "server.pem", tls / "server-key.pem", ["radius"]
    )
    return BRIDGE_SECTIONS


def supplicants(patrons: list[BenchPatron]) -> list[Supplicant]:
    return [Supplicant(p.barcode, p.pin) for p in patrons]


_CLIENT: list[SSL.Context] = []


def _client() -> SSL.Context:
    """One client context for every conversation (a session resumes only from its own context);
    no chain check: the rows count the server's instructions, not the supplicant's."""
    if not _CLIENT:
        ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
        ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
        _CLIENT.append(ctx)
    return _CLIENT[0]


async def _conversations(
    address: tuple[str, int], picks: list[Supplicant], resume: bool
) -> list[float]:
    """The picks' conversations one after another (a thread: `run` is blocking); each keeps the
    session it ended with, so the warm-up leaves one per patron for the resumed row."""
    if not picks:
        return []
    sessions = [p.session for p in picks if p.session is not None] if resume else None
    if resume and sessions is not None and len(sessions) != len(picks):
        raise RuntimeError("eap-resumed: a patron has no session to resume")
    pairs = [(p.barcode, p.pin) for p in picks]
    accepted, latencies, kept, resumed = await asyncio.to_thread(
        run,
        address,
        Path(os.devnull),
        pairs,
        len(picks),
        _client(),
        sessions,
        secret=SECRET,
        window=1,
        patience=120,  # under valgrind a first PIN check (the KDF) takes seconds
    )
    if accepted != len(picks) or (resume and resumed != accepted):
        raise RuntimeError(f"eap: {accepted} accepted, {resumed} resumed of {len(picks)}")
    if not resume:
        for pick, session in zip(picks, kept, strict=True):
            pick.session = session
    return latencies


async def warm_up(address: tuple[str, int], every: list[Supplicant]) -> None:
    """A full authentication per patron: each PIN verified once (the cache then answers the
    inner PAP), each patron left a session to resume."""
    await asyncio.gather(*(_conversations(address, every[i::8], False) for i in range(8)))


async def full(address: tuple[str, int], picks: list[Supplicant], deadline: float) -> list[float]:
    return await _conversations(address, picks, False)


async def resumed(
    address: tuple[str, int], picks: list[Supplicant], deadline: float
) -> list[float]:
    return await _conversations(address, picks, True)


def main() -> None:
    patrons = generate(PATRONS)
    load = os.getloadavg()
    notes = [
        f"{AUTHS} authentications a row, {WINDOW} conversations in flight, TLS 1.2, P-256 "
        f"certificate, {PATRONS} patrons (PINs verified once before: inner PAP from the cache)",
        "rate: authentications per second of wall time; 'per CPU s' below: per second of the "
        "server's own CPU (user+system, /proc), the figure to compare",
        f"machine load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} "
        f"on {os.cpu_count()} cores (shared: wall figures are noisy, CPU figures less so)",
    ]
    if (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {CLIENT_CORE})
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-eap-") as tmp_name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(tmp_name)
        tls = tmp / "bridge" / "tls"
        tls.mkdir(parents=True)
        certs = {"ca": tls / "ca.pem", "cert": tls / "server.pem", "key": tls / "server-key.pem"}
        generate_chain(certs["ca"], tls / "ca-key.pem", certs["cert"], certs["key"], ["radius"])
        bridge = ("patron-bridge", *stack.enter_context(bridge_server(tmp / "bridge", patrons)))
        per_row: dict[bool, list[tuple[str, int, tuple[str, int]]]] = {
            False: [bridge],
            True: [bridge],
        }
        if freeradius.binary() is None:
            notes.append("FreeRADIUS not installed (apt-get install freeradius): column skipped")
        else:
            for resume in (False, True):
                where = tmp / f"freeradius-{int(resume)}"
                fr = stack.enter_context(freeradius_server(where, certs, patrons, resume))
                per_row[resume].append(("freeradius", *fr))
        for _, _, address in [bridge, *per_row[False][1:], *per_row[True][1:]]:
            ctx = client_context(certs["ca"])  # every patron's PIN verified once
            run(address, certs["ca"], pairs(patrons), len(patrons), ctx, secret=SECRET)
        for resume, title in ROWS:
            servers = per_row[resume]
            runs: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
            for _ in range(REPEATS):
                for name, pid, address in servers:
                    result = measure(title, name, pid, address, certs["ca"], patrons, resume)
                    runs[name].append(result)
            results.extend(median(runs[name]) for name, _, _ in servers)
    for result in results:
        per_cpu = result.requests / result.server_cpu if result.server_cpu else float("nan")
        notes.append(f"{result.name} / {result.server}: {per_cpu:.0f} authentications per CPU s")
    if len(results) == 4:
        for ours, anchor in (results[0:2], results[2:4]):
            notes.append(verdict(ours.name, ours, anchor, 1.0))
    notes.append(
        "FreeRADIUS: Debian's eap module with conf/freeradius's sample, inner PAP from its users "
        "file; full row: session cache off; resumed row: a second instance with it on (FreeRADIUS "
        "3.2 caches on disk only: name + persist_dir)"
    )
    report("802.1X EAP-TTLS/PAP", results, notes)


if __name__ == "__main__":
    main()
