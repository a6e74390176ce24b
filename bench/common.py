"""What every benchmark shares: server CPU from /proc, latency percentiles, core pinning and a
uniform report. Benchmarks measure; tests never assert on wall time."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLK_TCK


def pin_to_core(pid: int, core: int) -> None:
    """Pin a process (all its threads) to one core so servers compare fairly."""
    task_dir = Path(f"/proc/{pid}/task")
    for tid in (int(t) for t in os.listdir(task_dir)):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, {core})


def percentile(samples: Sequence[float], pct: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Result:
    name: str
    server: str
    requests: int
    seconds: float
    latencies: list[float]
    server_cpu: float  # seconds of server CPU during the run

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_request_us(self) -> float:
        return self.server_cpu / self.requests * 1e6 if self.requests else float("nan")

    def row(self) -> str:
        p50 = percentile(self.latencies, 50) * 1e3
        p99 = percentile(self.latencies, 99) * 1e3
        return (
            f"{self.name:<38} {self.server:<14} {self.rate:>10.0f} {p50:>9.3f} {p99:>9.3f} "
            f"{self.cpu_per_request_us:>12.1f}"
        )


def median(runs: Sequence[Result]) -> Result:
    """The run with the median CPU per request: other work on a shared machine only adds."""
    return sorted(runs, key=lambda r: r.cpu_per_request_us)[len(runs) // 2]


HEADER = (
    f"{'benchmark':<38} {'server':<14} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'CPU us/req':>12}"
)


def report(title: str, results: Sequence[Result], notes: Sequence[str] = ()) -> None:
    print(f"\n## {title}")
    print(HEADER)
    print("-" * len(HEADER))
    for result in results:
        print(result.row())
    for note in notes:
        print(f"  {note}")


class CpuMeter:
    """Measure a server's CPU across a block: `with CpuMeter(pid) as m: ...; m.seconds`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seconds = 0.0
        self.wall = 0.0

    def __enter__(self) -> CpuMeter:
        self._cpu = process_cpu_seconds(self.pid)
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = process_cpu_seconds(self.pid) - self._cpu
        self.wall = time.perf_counter() - self._t


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port free right now, for a reference server that cannot listen on port 0."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def verdict(label: str, ours: Result, anchor: Result, goal: float) -> str:
    """One line: the bridge's server CPU per request as a multiple of the anchor's, and whether
    the issue's goal (at most `goal` times the anchor) is met; when not, by how much."""
    if not anchor.cpu_per_request_us or anchor.cpu_per_request_us != anchor.cpu_per_request_us:
        return f"{label}: no anchor figure (goal <= {goal:g}x not judged)"
    ratio = round(ours.cpu_per_request_us / anchor.cpu_per_request_us, 2)
    state = "met" if ratio <= goal else f"NOT met, {ratio / goal - 1:.0%} over"
    return (
        f"{label}: {ratio:.2f}x {anchor.server} ({ours.cpu_per_request_us:.1f} against "
        f"{anchor.cpu_per_request_us:.1f} us server CPU per request); goal <= {goal:g}x: {state}"
    )


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (VmRSS from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    """How many descriptors a process holds (entries of /proc/PID/fd)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (what `ulimit -n hard` does)
    so a load generator can hold thousands of sockets; returns the new soft limit."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
