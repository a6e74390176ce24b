from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.staff.support import StaffEnv, open_staff_env


@pytest.fixture
def env(tmp_path: Path) -> Iterator[StaffEnv]:
    yield from open_staff_env(tmp_path)
