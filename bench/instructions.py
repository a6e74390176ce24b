"""Instructions per request: the daemon under `valgrind --tool=callgrind`, a figure that does not
move with the machine's load (wall-clock and CPU-time rows do, on a shared host).

For each row the real daemon (SQLite store of BENCH_PATRONS generated patrons, audit on, the
harness's fast KDF) runs under callgrind twice: warm-up (every patron verified once), then
FEW or MANY requests on 8 connections, then SIGTERM. Both runs pay the same start, warm-up and
shutdown, so (instructions of the MANY run - of the FEW run) / (MANY - FEW) is what one more
request costs in the daemon's user space, all threads (the audit writer included). System
calls and the kernel's share are not counted: this ranks changes to our code, it does not
replace the CPU-time comparison with slapd or FreeRADIUS.

    python -m bench instructions              # every row (about 10 minutes)
    python -m bench.instructions ldap-login   # one row

Needs valgrind (`apt-get install valgrind`; bench only, no test uses it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import eap as be
from bench import ldap as bl
from bench import radius as br
from bench import sip2 as bs
from bench.patrons import BenchPatron, generate, spread, store_section, write_csv
from bridge.loop import run as run_loop
from bridge.radius import packet as rp

FEW = int(os.environ.get("BENCH_INSTRUCTIONS_FEW", "100"))
MANY = int(os.environ.get("BENCH_INSTRUCTIONS_MANY", "1100"))
PATRONS = 50  # each is verified once under valgrind (a KDF each): keep it small
CONNECTIONS = 8

Worker = Callable[[tuple[str, int], list[Any], float], Awaitable[list[float]]]


def _sip2_session(address: tuple[str, int], picks: list[Any], deadline: float) -> Any:
    return bs._session(address, picks, deadline)


def _sip2_63(address: tuple[str, int], picks: list[Any], deadline: float) -> Any:
    return bs._persistent(address, picks, deadline)


def _same(patrons: list[Any]) -> list[Any]:
    return patrons


async def _radius_warm_up(address: tuple[str, int], every: list[BenchPatron]) -> None:
    """Every patron's PIN verified exactly once: bench/radius.py's warm-up resends after 5 s,
    and under valgrind a resend is one more KDF in one run and not the other."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        for start in range(0, len(every), CONNECTIONS):
            for index, who in enumerate(every[start : start + CONNECTIONS]):
                auth = os.urandom(16)
                hidden = rp.encrypt_password(who.pin.encode(), br.SECRET, auth)
                attrs = [(rp.USER_NAME, who.barcode.encode()), (rp.USER_PASSWORD, hidden)]
                await loop.sock_sendall(
                    sock, rp.encode_request(rp.ACCESS_REQUEST, index, auth, attrs, br.SECRET)
                )
            for _ in every[start : start + CONNECTIONS]:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 4096), 600)
                if reply[0] != rp.ACCESS_ACCEPT:
                    raise RuntimeError("bench patron refused in warm-up")


async def _radius_pap(
    address: tuple[str, int], picks: list[BenchPatron], deadline: float
) -> list[float]:
    """bench/radius.py's load from one socket: cached PAP Access-Requests with fresh Request
    Authenticators (no duplicate-cache answers), WINDOW / CONNECTIONS in flight (32 in all)."""
    loop = asyncio.get_running_loop()
    requests = []
    for index, who in enumerate(picks):
        auth = os.urandom(16)
        hidden = rp.encrypt_password(who.pin.encode(), br.SECRET, auth)
        attrs = [
            (rp.USER_NAME, who.barcode.encode()),
            (rp.USER_PASSWORD, hidden),
            (32, b"bench-ap"),
        ]
        requests.append(rp.encode_request(rp.ACCESS_REQUEST, index % 256, auth, attrs, br.SECRET))
    sent: dict[int, bytes] = {}  # identifier -> request in flight
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.connect(address)
        for request in requests:
            if len(sent) >= br.WINDOW // CONNECTIONS:
                await _radius_answer(loop, sock, sent)
            sent[request[1]] = request
            await loop.sock_sendall(sock, request)
        while sent:
            await _radius_answer(loop, sock, sent)
    return [0.0] * len(requests)


async def _radius_answer(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, sent: dict[int, bytes]
) -> None:
    try:
        reply = await asyncio.wait_for(loop.sock_recv(sock, 4096), 30)
    except TimeoutError:  # lost on a loaded host: send again (the server replays its answer)
        for request in sent.values():
            await loop.sock_sendall(sock, request)
        return
    if sent.pop(reply[1], None) is not None and reply[0] != rp.ACCESS_ACCEPT:
        raise RuntimeError(f"bench RADIUS reply code {reply[0]}")


# row name -> (listener, daemon sections (or what writes the files they name and returns them),
# pre-encoded requests per patron, warm-up, worker)
Sections = str | Callable[[Path], str]
ROWS: dict[str, tuple[str, Sections, Callable[[list[Any]], list[Any]], Any, Worker]] = {
    "ldap-login": ("ldap", bl.SECTIONS, bl.pdus, bl._warm_up, bl._logins),
    "ldap-bind": ("ldap", bl.SECTIONS, bl.pdus, bl._warm_up, bl._binds),
    "sip2-63": ("sip2", bs.SECTIONS, bs.frames, bs._warm_up, _sip2_63),
    "sip2-session": ("sip2", bs.SECTIONS, bs.frames, bs._warm_up, _sip2_session),
    "radius-pap": ("radius", br.RADIUS_SECTIONS, _same, _radius_warm_up, _radius_pap),
    # one EAP-TTLS/PAP authentication per request (the inner PAP answered from the cache)
    "eap-full": ("radius", be.instruction_sections, be.supplicants, be.warm_up, be.full),
    "eap-resumed": ("radius", be.instruction_sections, be.supplicants, be.warm_up, be.resumed),
}


def instructions(row: str, count: int, tmp: Path) -> int:
    """Instructions the daemon executed in a whole run with `count` measured requests."""
    from tests.harness import Daemon

    listener, sections, encode, warm_up, worker = ROWS[row]
    patrons = generate(PATRONS)
    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    if callable(sections):
        sections = sections(tmp)
    daemon = Daemon(tmp, sections, store=store)  # writes the config; started below
    out = tmp / "callgrind.out"
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "bridge",
            "--config",
            str(daemon.config),
            "serve",
        ],
        stdout=subprocess.PIPE,
        stderr=(tmp / "valgrind.log").open("wb"),
        cwd=tmp,
    )
    try:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError((tmp / "valgrind.log").read_text()[-2000:])
            info = json.loads(line)
            if info.get("event") == "ready":
                break
        host, _, port = info["listeners"][listener][0].rpartition(":")
        address = (host, int(port))
        every = encode(patrons)
        run_loop(warm_up(address, every))
        by_barcode = dict(zip((p.barcode for p in patrons), every, strict=True))
        picks = [by_barcode[p.barcode] for p in spread(patrons, count)]

        async def load() -> None:
            far = time.perf_counter() + 3600
            await asyncio.gather(
                *(worker(address, picks[i::CONNECTIONS], far) for i in range(CONNECTIONS))
            )

        run_loop(load())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        if proc.stdout is not None:
            proc.stdout.close()
    found = re.search(r"Collected : (\d+)", (tmp / "valgrind.log").read_text())
    if found is None:
        raise RuntimeError("callgrind wrote no total")
    return int(found.group(1))


def per_request(row: str) -> float:
    totals = []
    for count in (FEW, MANY):
        with tempfile.TemporaryDirectory(prefix=f"bench-instr-{row}-") as tmp:
            totals.append(instructions(row, count, Path(tmp)))
    return (totals[1] - totals[0]) / (MANY - FEW)


def main(argv: list[str] | None = None) -> None:
    print("\n## instructions per request (daemon under callgrind, user space, all threads)")
    if shutil.which("valgrind") is None:
        print("  valgrind is not installed (apt-get install valgrind): not measured")
        return
    for row in argv or list(ROWS):
        print(f"  {row:<14} {per_request(row):>12,.0f} instructions", flush=True)
    print(f"  ({MANY} - {FEW} requests, {CONNECTIONS} connections, {PATRONS} patrons)")


if __name__ == "__main__":
    main(sys.argv[1:])
