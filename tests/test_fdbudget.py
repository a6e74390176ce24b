"""The daemon raises its soft open-file limit to the hard one at start and logs the budget."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

from bridge.fdbudget import FdBudget, open_descriptors
from tests.harness import Daemon

RAISE = """
import resource
from bridge.fdbudget import raise_soft_limit
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
print(*raise_soft_limit(), hard)
"""


def test_soft_limit_raised_to_the_hard_limit() -> None:
    out = subprocess.run(
        [sys.executable, "-c", RAISE], capture_output=True, text=True, check=True, timeout=60
    )
    soft, hard, real_hard = (int(x) for x in out.stdout.split())
    assert hard == real_hard
    assert soft == min(hard, 1 << 20) or hard == resource.RLIM_INFINITY


def test_open_descriptors_counts_this_process() -> None:
    before = open_descriptors()
    with Path(__file__).open():
        assert open_descriptors() == before + 1


def test_budget_leaves_the_reserve() -> None:
    budget = FdBudget(limit=1024, reserve=64, baseline=30)
    assert budget.available == 930
    budget.connections = 930
    assert not budget.room(10)  # the count says full even when a low descriptor was free
    assert FdBudget.unlimited().room(100_000)


def test_daemon_logs_its_budget_under_ulimit(tmp_path: Path) -> None:
    sections = '[sip2]\nlisten = ["127.0.0.1:0"]\n'
    with Daemon(tmp_path, sections, nofile=1024) as d:
        assert d.proc is not None
        pid = d.proc.pid
        limits = Path(f"/proc/{pid}/limits").read_text()
    line = next(x for x in limits.splitlines() if x.startswith("Max open files"))
    assert line.split()[3:5] == ["1024", "1024"]
    logged = d.logs()
    assert '"event":"fd_budget"' in logged and '"soft_limit":1024' in logged
    assert '"reserve":64' in logged
