"""What ships in deploy/: the alert rules parse with promtool, every metric the rules and the
Grafana dashboard name exists in a real scrape, and the logrotate file rotates a live daemon's
audit file without losing a line."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyrad import packet as pp

from tests.conftest import require_tool
from tests.harness import DEMO, UNKNOWN, Daemon
from tests.metrics.scrape import scrape
from tests.metrics.test_daemon_metrics import SECTIONS, ldap_bind, radius_auth
from tests.pins import DEMO_PIN, WRONG_PIN
from tests.radius.udp import Nas
from tests.test_daemon import Sip2

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus-alerts.yml"
DASHBOARD = DEPLOY / "grafana-dashboard.json"
LOGROTATE = DEPLOY / "logrotate.conf"
NAME = re.compile(r"\b(patron_bridge_[a-z0-9_]+)")


def test_alert_rules_parse_with_promtool() -> None:
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
    text = RULES.read_text()
    for alert in ("StoreDown", "LockStorm", "SprayGuardTripped", "KdfQueueSaturated"):
        assert f"alert: PatronBridge{alert}" in text


def test_the_alerts_fire_on_shaped_series() -> None:
    """deploy/prometheus-alerts.test.yml: promtool's own rule unit tests."""
    promtool = require_tool("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", "prometheus-alerts.test.yml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=DEPLOY,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_dashboard_is_importable_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "patron-bridge" and dashboard["id"] is None
    assert dashboard["__inputs"][0]["name"] == "DS_PROMETHEUS"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Sample names from two real daemons: SQLite with traffic on every protocol (and a RADIUS
    drop), and the SIP2 upstream store (its pool and breaker)."""
    names: set[str] = set()
    with Daemon(tmp_path_factory.mktemp("deploy-sqlite"), SECTIONS) as daemon:
        sip = Sip2(daemon)
        try:
            sip.check(DEMO["active"], DEMO_PIN)
            sip.check(UNKNOWN, WRONG_PIN)
        finally:
            sip.close()
        ldap_bind(daemon, DEMO["minor"], DEMO_PIN)
        nas = Nas(daemon.address("radius"), b"wrong-secret-for-the-drop")
        try:
            raw, _ = nas.access(DEMO["active"].encode(), DEMO_PIN.encode())
            nas.sock.sendto(raw, daemon.address("radius"))
        finally:
            nas.close()
        assert radius_auth(daemon, DEMO["active"], DEMO_PIN).code == pp.AccessAccept
        names |= scrape(daemon).names()
    store = f"""
[store]
plugin = "sip2"
host = "127.0.0.1"
port = {_closed_port()}
connect_timeout = 2
"""
    with Daemon(
        tmp_path_factory.mktemp("deploy-sip2"), '[metrics]\nlisten = "127.0.0.1:0"\n', store=store
    ) as daemon:
        names |= scrape(daemon).names()
    yield names


@pytest.mark.parametrize("source", [RULES, DASHBOARD], ids=["alert rules", "dashboard"])
def test_every_metric_named_exists_in_a_real_scrape(source: Path, exposed: set[str]) -> None:
    named = set(NAME.findall(source.read_text()))
    assert len(named) >= 5
    missing = sorted(named - exposed)
    assert not missing, f"{source.name} names metrics no scrape exposes: {missing}"


def test_logrotate_rotates_the_audit_file_of_a_live_daemon(tmp_path: Path) -> None:
    """The shipped logrotate file, with its path moved into the test directory and its
    postrotate signalling this daemon directly (no systemd here), run by the real logrotate."""
    tool = require_tool("logrotate")
    with Daemon(tmp_path, SECTIONS) as daemon:
        assert daemon.proc is not None
        sip = Sip2(daemon)
        try:
            sip.check(DEMO["active"], DEMO_PIN)
            _wait(lambda: '"auth"' in daemon.audit_path.read_text())
            conf = LOGROTATE.read_text()
            conf = conf.replace("/var/log/patron-bridge/audit.log", str(daemon.audit_path))
            conf = conf.replace("create 0600 patron-bridge patron-bridge", "create 0600")
            conf = re.sub(
                r"systemctl kill --signal=SIGUSR1 [^\n]*",
                f"kill -USR1 {daemon.proc.pid}",
                conf,
            )
            (tmp_path / "logrotate.conf").write_text(conf)
            (tmp_path / "logrotate.conf").chmod(0o644)
            result = subprocess.run(
                [tool, "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert result.returncode == 0, result.stderr
            _wait(daemon.audit_path.exists)
            sip.check(DEMO["expired"], DEMO_PIN)
            _wait(lambda: "card_expired" in daemon.audit_path.read_text())
        finally:
            sip.close()
    rotated = tmp_path / "audit.log.1"  # delaycompress: the newest rotation stays plain text
    assert '"outcome":"accepted"' in rotated.read_text()
    assert "card_expired" not in rotated.read_text()
    assert daemon.audit_path.stat().st_mode & 0o777 == 0o600


def _wait(check: object, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not check():  # type: ignore[operator]
        assert time.monotonic() < end, "gave up waiting"
        time.sleep(0.02)
