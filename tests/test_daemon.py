"""The real daemon starts from a config, reports readiness, and stops on SIGTERM."""

from __future__ import annotations

from pathlib import Path

from tests.harness import DEMO, Daemon


def test_daemon_starts_and_stops(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path).start()
    try:
        shown = daemon.cli("patron", "show", DEMO["active"])
        assert shown.returncode == 0, shown.stderr
        assert '"name": "Rivera, Ana"' in shown.stdout
        assert (tmp_path / "bridge.sock").exists()
    finally:
        assert daemon.stop() == 0
    assert (tmp_path / "pepper.key").stat().st_mode & 0o777 == 0o600
