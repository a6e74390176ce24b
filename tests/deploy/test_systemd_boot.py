"""deploy/patron-bridge.service under a real systemd: `deploy/systemd-trial.sh` boots systemd as
PID 1 in a systemd-nspawn container over a Debian bookworm tree, runs `systemctl enable --now`,
`status`, `reload` (a RADIUS secret changed), a crash (SIGKILL: restarted) and `stop`, and
checks the notify messages systemd received (READY=1, RELOADING=1, STOPPING=1), the user, the
one capability, and real LDAP and RADIUS clients on ports 389 and 1812. About 2.5 min on the
first run here (debootstrap), 15 s after (the tree is kept)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import in_ci, require_tool

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "systemd-trial.sh"


@pytest.mark.timeout(900)  # boots a container: minutes on a loaded 2-core host
def test_the_unit_under_systemd() -> None:
    if os.geteuid() != 0:
        if in_ci():
            pytest.fail("the systemd trial needs root")
        pytest.skip("the systemd trial needs root")
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        require_tool(tool)
    result = subprocess.run(
        [str(SCRIPT)], capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    out = result.stdout
    assert "Got notification message from PID" in out and "READY=1, STATUS=serving ldap" in out
    assert "RELOADING=1" in out and "STOPPING=1" in out
    assert "CapEff:\t0000000000000400" in out and "\npatron-bridge\n" in out
    assert "radius on port 1812 with secret radius-trial-secret-2: Access-Accept" in out
    assert '"actor":"SIGHUP","applied":["radius.clients"]' in out
    assert "NRestarts=1\nActiveState=active" in out  # killed, restarted (Restart=on-failure)
    assert out.rstrip().endswith("systemd trial: every check held")
