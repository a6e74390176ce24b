"""The serving process's interpreter settings, checked in a fresh interpreter (they are
process-wide, so the test process's own must not change)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bridge.runtime.interpreter import SWITCH_INTERVAL
from tests.harness import Daemon
from tests.state.scenario import LDAP

PROBE = """
import gc, sys
before = sys.getswitchinterval()
from bridge.runtime.interpreter import settle_for_serving
settle_for_serving()
print(before, sys.getswitchinterval(), gc.get_freeze_count())
"""


def test_settling_shortens_the_switch_interval_and_freezes_start_up() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    before, after, frozen = done.stdout.split()
    assert float(before) == 0.005  # CPython's default: what a helper thread would wait
    assert float(after) == SWITCH_INTERVAL == 0.001
    assert int(frozen) > 1000  # the modules start-up imported are out of the collector's walk


SITE = """
import atexit, sys
def _report():
    with open("interpreter.txt", "w") as out:
        out.write(repr(sys.getswitchinterval()))
atexit.register(_report)
"""


def test_a_serving_daemon_runs_with_the_settled_interval(tmp_path: Path) -> None:
    """A real `bridge serve`, which reports its switch interval as it exits (a sitecustomize
    on its path registers the report; the daemon itself has no such hook)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITE)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    daemon = Daemon(tmp_path, LDAP, env={"PYTHONPATH": path}).start()
    assert daemon.stop() == 0
    assert float((tmp_path / "interpreter.txt").read_text()) == SWITCH_INTERVAL
