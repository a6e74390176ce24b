"""Instructions per SIP2 request in-process: the real listener, core, SQLite store and audit
(logs to files, the writer thread's timer parked, one drain at the end inside the measured
part), a stand-in transport, no sockets. Steadier than `bench.instructions`' daemon rows
(whose log writer wakes on a timer): two runs of the same code agree within a few hundred
instructions, so small changes can be compared one at a time.

    python -m bench.sip2_inprocess 63 2000        # cached 63s on one logged-in connection
    python -m bench.sip2_inprocess session 1000   # connect, 93, 63, 35, close

It runs itself under `valgrind --tool=callgrind --toggle-collect=functools_reduce`: only the
measured loop (driven by `functools.reduce`, which nothing else calls meanwhile) is counted,
and the total divided by N is printed. It leaves out what the daemon rows include: uvloop's
accept, reads and writes, and the kernel.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bridge import logs

_SOURCE = ("127.0.0.1", 40000)


class _Transport:
    """Just what `Connection` asks of a transport."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return _SOURCE if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _measure(mode: str, count: int, tmp: Path) -> None:
    from bench import sip2 as bs
    from bench.patrons import generate, spread, store_section, write_csv
    from bridge.app import open_core
    from bridge.config import load
    from bridge.services import Services
    from bridge.sip2.connection import Connection
    from bridge.sip2.server import start
    from tests.harness import base_config

    patrons = generate(50)
    store = store_section(write_csv(patrons, tmp / "patrons.csv"))
    (tmp / "bridge.toml").write_text(base_config(tmp, store=store) + bs.SECTIONS)
    config = load(tmp / "bridge.toml")
    logs.configure("info", "json", str(tmp / "daemon.log"), str(tmp / "audit.log"))
    every = bs.frames(patrons)
    by_barcode = dict(zip((p.barcode for p in patrons), every, strict=True))
    picks = [by_barcode[p.barcode] for p in spread(patrons, count)]
    core = await open_core(config)
    assert config.sip2 is not None
    listener = await start(config.sip2, Services(config, core.authenticator, core.audit))

    def connect() -> tuple[Connection, _Transport]:
        conn, transport = Connection(listener), _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        return conn, transport

    conn, transport = connect()
    conn.data_received(bs.LOGIN)
    for frames in every:  # every PIN verified once (a KDF each), then cached
        conn.data_received(frames.patron)
        if conn.task is not None:
            await asyncio.wait([conn.task])
            await asyncio.sleep(0)
        if b"|CQY|" not in transport.out[-1]:
            raise RuntimeError("bench patron refused in warm-up")
        conn.data_received(frames.end)
    logs.flush()
    gc.collect()
    gc.freeze()  # as the daemon does after start-up

    def one(_: None, frames: Any) -> None:
        if mode == "63":
            conn.data_received(frames.patron)
            return
        session, _transport = connect()
        session.data_received(bs.LOGIN)
        session.data_received(frames.patron)
        session.data_received(frames.end)
        session.connection_lost(None)

    def measured(_: None, __: int) -> None:
        functools.reduce(one, picks, None)
        logs.flush()  # the audit lines' writing, in the count

    functools.reduce(measured, [0], None)
    if mode == "session":  # one more, to see what the measured ones answered
        conn, transport = connect()
        for data in (bs.LOGIN, picks[-1].patron, picks[-1].end):
            conn.data_received(data)
    if conn.task is not None or not any(b"|CQY|" in answer for answer in transport.out[-2:]):
        raise RuntimeError("a measured 63 was not answered from the cache")


def main(argv: list[str]) -> None:
    mode, count = argv[0], int(argv[1])
    if mode not in ("63", "session"):
        raise SystemExit("usage: python -m bench.sip2_inprocess 63|session N")
    if os.environ.get("BENCH_INPROCESS_CHILD"):
        logs.BATCH_WINDOW = logs.IDLE_WINDOW = 3600.0  # the writer drains only when asked
        with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as tmp:
            os.chdir(tmp)
            from bridge.loop import run

            run(_measure(mode, count, Path(tmp)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-cg-") as tmp:
        log = Path(tmp) / "valgrind.log"
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--toggle-collect=functools_reduce",
                f"--callgrind-out-file={tmp}/callgrind.out",
                sys.executable,
                "-m",
                "bench.sip2_inprocess",
                mode,
                str(count),
            ],
            check=True,
            stderr=log.open("wb"),
            env={**os.environ, "BENCH_INPROCESS_CHILD": "1", "PYTHONHASHSEED": "0"},
        )
        found = re.search(r"Collected : (\d+)", log.read_text())
    if found is None:
        raise RuntimeError("callgrind wrote no total")
    print(f"sip2 {mode} in-process: {int(found.group(1)) / count:,.0f} instructions a request")


if __name__ == "__main__":
    main(sys.argv[1:])
