"""Shared fixtures: in-process logging to a checked file, real service servers, the secret check.

Servers (PostgreSQL, MariaDB, Redis) are used for real. Without one, its tests skip with the
reason; in CI (`CI=true`) a missing server fails instead, because CI must start it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from bridge import logs
from tests import harness, pins

# Property tests: no per-example deadline (CI machines are shared); `make fuzz` runs them long.
settings.register_profile(
    "default", deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", deadline=None, max_examples=20_000, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
IN_PROCESS_LOG = ARTIFACTS / "in-process.log"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_server(name: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {host}:{port} ({exc.strerror or exc})"
    if in_ci():
        pytest.fail(f"{message}; CI must start it (.ci/run)")
    pytest.skip(message)


def require_tool(path: str) -> str:
    import shutil

    found = shutil.which(path)
    if found:
        return found
    if in_ci():
        pytest.fail(f"{path} is not installed; .ci/run must install it")
    pytest.skip(f"{path} is not installed")


@pytest.fixture(scope="session", autouse=True)
def _in_process_logging() -> Iterator[None]:
    ARTIFACTS.mkdir(exist_ok=True)
    if IN_PROCESS_LOG.exists():
        IN_PROCESS_LOG.unlink()
    logs.configure("debug", "json", IN_PROCESS_LOG)
    harness.LOG_FILES.append(IN_PROCESS_LOG)
    yield
    logs.stop()


_RANDOM_HEX = re.compile(r"[0-9A-Fa-f]{12,}")
# Process ids the daemon logs ("ready" with "pid" and "workers", a worker's death or restart):
# a PID is whatever the kernel hands out, and one equal to a test PIN is not a leak.
_PROCESS_IDS = re.compile(r'(?:"(?:pid|workers)":|\b(?:pid|workers)=)\s*(?:\[[0-9, ]*\]|[0-9]+)')


def _unless_digits(match: re.Match[str]) -> str:
    """A long run of hex with a letter in it is an id, dropped; a run of digits is kept."""
    run = match.group()
    return run if run.isdigit() else " "


def leaked_pins(paths: list[Path]) -> list[str]:
    """`file: PIN` for every test PIN found as a whole number in any log file."""
    found = []
    # Not the whole part of a decimal either: an audit line's latency_ms of 4826.373 under
    # load is not the PIN 4826.
    patterns = {pin: re.compile(rf"(?<![0-9]){pin}(?!\.?[0-9])") for pin in pins.ALL}
    for path in paths:
        if not path.exists():
            continue
        # Random record ids (hex, UUIDs) may hold a PIN's digits by chance: "…6519f3907a" is
        # not the PIN 3907. A short run such as SIP2's "AD3907" is still searched.
        text = _RANDOM_HEX.sub(_unless_digits, path.read_text(errors="replace"))
        text = _PROCESS_IDS.sub(" ", text)
        for pin, pattern in patterns.items():
            if pattern.search(text):
                found.append(f"{path}: {pin}")
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The no-secrets proof: nothing any test run logged contains a PIN the suite used."""
    logs.stop()
    leaks = leaked_pins(list(dict.fromkeys(harness.LOG_FILES)))
    if leaks:
        session.exitstatus = 1
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("PIN FOUND IN LOGS: " + "; ".join(leaks), red=True)
