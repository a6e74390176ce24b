"""Run the real daemon for real clients.

`Daemon` writes a config into a temporary directory (SQLite store with the demo patrons, a fast
KDF, listeners on port 0), starts `python -m bridge serve` and waits for its ready line on stdout
(an event, never a sleep). Everything it logs goes to files the session-end secret check reads.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_CSV = ROOT / "conf" / "demo-patrons.csv"
LOG_FILES: list[Path] = []  # every file a daemon or test wrote logs to; checked at session end

DEMO = {
    "active": "21234000000001",
    "expired": "21234000000002",
    "blocked": "21234000000003",
    "minor": "21234000000004",
    "fines": "21234000000005",
}
UNKNOWN = "21234999999999"

FAST_KDF = """
[security]
pepper_file = "pepper.key"
argon2_memory_kib = 8192
argon2_iterations = 1
"""


def base_config(tmp: Path, *, store: str | None = None, throttle: str = "") -> str:
    store = (
        store
        or f"""
[store]
plugin = "sqlite"
path = "patrons.db"
demo = true
demo_file = "{DEMO_CSV}"
"""
    )
    return (
        store
        + FAST_KDF
        + f"""
[throttle]
path = "throttle.db"
{throttle}

[audit]
destination = "audit.log"

[control]
socket = "bridge.sock"
"""
    )


class Daemon:
    def __init__(
        self,
        tmp: Path,
        sections: str = "",
        *,
        store: str | None = None,
        throttle: str = "",
        env: dict[str, str] | None = None,
        nofile: int | None = None,
    ) -> None:
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) for the daemon, like `ulimit -n`
        self.dir = tmp
        self.config = tmp / "bridge.toml"
        self.config.write_text(base_config(tmp, store=store, throttle=throttle) + sections)
        self.stderr_path = tmp / "daemon.log"
        self.audit_path = tmp / "audit.log"
        LOG_FILES.extend([self.stderr_path, self.audit_path])
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.listeners: dict[str, list[str]] = {}
        self.workers: list[int] = []  # `[server] workers`: the worker pids of the ready line

    def start(self, timeout: float = 60) -> Daemon:
        stderr = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "--config", str(self.config), "serve"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=self.dir,
            env=self.env,
            preexec_fn=None if self.nofile is None else _limit_files(self.nofile),
        )
        stderr.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise RuntimeError(f"daemon not ready: {self.stderr_path.read_text()[-2000:]}")
            line = self.proc.stdout.readline()
            if not line:
                code = self.proc.wait()
                raise RuntimeError(f"daemon exited {code}: {self.stderr_path.read_text()[-2000:]}")
            info: dict[str, Any] = json.loads(line)
            if info.get("event") == "ready":
                self.listeners = info["listeners"]
                self.workers = list(info.get("workers", []))
                return self

    def address(self, name: str, index: int = 0) -> tuple[str, int]:
        host, _, port = self.listeners[name][index].rpartition(":")
        return host.strip("[]"), int(port)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config, *args, input=input, env=self.env)

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
            self.proc = None

    def logs(self) -> str:
        parts = [p.read_text() for p in (self.stderr_path, self.audit_path) if p.exists()]
        return "\n".join(parts)

    def audit_events(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _limit_files(limit: int) -> Callable[[], None]:
    """What `ulimit -n LIMIT` does in the shell that starts a service."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def rss_kib(pid: int) -> int:
    """A process's resident set size (Linux /proc), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cli_command(config: Path, *args: str) -> list[str]:
    """`patron-bridge --config CONFIG ARGS...` as this interpreter runs it."""
    return [sys.executable, "-m", "bridge", "--config", str(config), *args]


def run_cli(
    config: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cli_command(config, *args),
        input=input,
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        cwd=config.parent,
        timeout=120,
    )
    log = config.parent / "cli.log"
    with log.open("a") as handle:
        handle.write(result.stdout + result.stderr)
    if log not in LOG_FILES:
        LOG_FILES.append(log)
    return result
